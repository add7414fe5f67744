"""Pool diagnostics against real drivers: acquire waits, hold times, pending acquires, sizes, acquire timeouts.

Every session path of SQLSpec is exercised through a real FastAPI app: ``spec.provide_session(config)``,
``config.provide_session()``, ``config.provide_connection()`` and the FastAPI plugin's dependencies (with the
plugin installed before and after ``SQLSpecOps.instrument``). Pools have ``max_size=2`` and ten requests each
hold a connection for 100 ms, so eight of them wait. Speeds are never asserted: the histograms must hold exactly
the waits and holds the pool proxy measured, and those must fit the durations the test measured around the calls.
"""

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Self

import asyncpg
import pytest
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.adapters.psycopg import PsycopgAsyncConfig
from sqlspec.extensions.fastapi import SQLSpecPlugin

from sqlspec_ops import PoolAcquireTimeout, SQLSpecOps
from sqlspec_ops._adapters.proxy import InstrumentedPool
from tests.support.asgi import serving
from tests.support.postgres import PostgresServer
from tests.support.promql import Buckets, bucket_counts, cumulative, subtract
from tests.support.waiting import eventually

POOL = "main"
LABELS = {"db_client_connection_pool_name": POOL}
HOLD = 0.1
SESSIONS = 10
CLOCK = 1e-6  # asyncio may run a timer up to its clock resolution early
WAIT = "db_client_connection_wait_time_seconds"
USE = "db_client_connection_use_time_seconds"

# (adapter, session path): every path on asyncpg; the paths that differ in code on psycopg and aiosqlite.
PATHS = [
    ("asyncpg", "spec.provide_session"),
    ("asyncpg", "config.provide_session"),
    ("asyncpg", "config.provide_connection"),
    ("asyncpg", "plugin-then-ops"),
    ("asyncpg", "ops-then-plugin"),
    ("psycopg", "spec.provide_session"),
    ("psycopg", "config.provide_connection"),
    ("psycopg", "plugin-then-ops"),
    ("aiosqlite", "spec.provide_session"),
    ("aiosqlite", "config.provide_connection"),
]


def make_config(adapter: str, pg: PostgresServer, tmp_path: Path, app_name: str, **extra: Any) -> Any:
    """Build a two-connection config; PostgreSQL backends carry ``app_name`` so the test can count them."""
    if adapter == "asyncpg":
        cc: dict[str, Any] = {"dsn": pg.dsn, "min_size": 2, "max_size": 2}
        cc["server_settings"] = {"application_name": app_name}
        return AsyncpgConfig(connection_config={**cc, **extra}, bind_key=POOL)
    if adapter == "psycopg":
        conninfo = f"{pg.conninfo()} application_name={app_name}"
        return PsycopgAsyncConfig(
            connection_config={"conninfo": conninfo, "min_size": 2, "max_size": 2, **extra}, bind_key=POOL
        )
    database = tmp_path / "pool.sqlite"
    # Created in WAL mode up front: otherwise the pool's connections race to switch the new file's journal
    # mode when they open together, and one of them can see "database is locked".
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
    return AiosqliteConfig(
        connection_config={"database": str(database), "pool_size": 2, "min_size": 2, **extra}, bind_key=POOL
    )


async def select_one(adapter: str, connection: Any) -> None:
    """Run ``SELECT 1`` on a raw driver connection."""
    if adapter == "asyncpg":
        await connection.fetchval("SELECT 1")
    else:
        cursor = await connection.execute("SELECT 1")
        await cursor.fetchone()


def driver_size(adapter: str, pool: Any) -> tuple[int, int]:
    """Return ``(open, idle)`` connections as the driver's own pool reports them."""
    if adapter == "asyncpg":
        return pool.get_size(), pool.get_idle_size()
    if adapter == "psycopg":
        stats = pool.get_stats()
        return stats.get("pool_size", 0), stats.get("pool_available", 0)
    return pool.size(), pool.size() - pool.checked_out()


def build_app(spec: SQLSpec, config: Any, ops: SQLSpecOps, adapter: str, path: str) -> FastAPI:
    """Build an app whose ``/hold`` route holds a connection for HOLD seconds through ``path``."""
    app = FastAPI()
    if path in {"spec.provide_session", "config.provide_session"}:

        async def session() -> AsyncIterator[Any]:
            provider = spec.provide_session(config) if path == "spec.provide_session" else config.provide_session()
            async with provider as db:
                yield db

        @app.get("/hold")
        async def hold_session(db: Annotated[Any, Depends(session)]) -> dict[str, int]:
            await db.select_value("SELECT 1")
            await asyncio.sleep(HOLD)
            return {"pid": os.getpid()}

    elif path == "config.provide_connection":

        @app.get("/hold")
        async def hold_connection() -> dict[str, int]:
            async with config.provide_connection() as connection:
                await select_one(adapter, connection)
                await asyncio.sleep(HOLD)
            return {"pid": os.getpid()}

    else:
        if path == "plugin-then-ops":
            plugin = SQLSpecPlugin(spec, app)
            ops.instrument(app)
        else:
            ops.instrument(app)
            plugin = SQLSpecPlugin(spec, app)

        @app.get("/hold")
        async def hold_plugin(db: Annotated[Any, Depends(plugin.provide_session())]) -> dict[str, int]:
            await db.select_value("SELECT 1")
            await asyncio.sleep(HOLD)
            return {"pid": os.getpid()}

        return app
    ops.instrument(app)
    return app


async def backends(superuser: asyncpg.Connection, app_name: str) -> int:
    """Count the server's client backends opened under ``app_name``."""
    count = await superuser.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND backend_type = 'client backend'",
        app_name,
    )
    return int(count)


async def wait_for_size(adapter: str, pool: InstrumentedPool, size: int) -> None:
    """Wait (bounded) until the driver pool has opened ``size`` connections (psycopg opens in the background)."""
    await eventually(
        lambda: driver_size(adapter, pool.inner)[0] == size, timeout=10, what=f"the pool to open {size} connections"
    )


def gauge(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Read one gauge (0 when the series does not exist)."""
    return registry.get_sample_value(name, {**LABELS, **labels}) or 0.0


class GaugeWatcher:
    """Samples the pool gauges every 2 ms, next to the driver's own size, while a burst runs."""

    def __init__(self, registry: CollectorRegistry, adapter: str, pool: InstrumentedPool) -> None:
        self.registry, self.adapter, self.pool = registry, adapter, pool
        self.peak_pending = 0.0
        self.samples: list[tuple[float, float, int]] = []  # (used, idle) gauges and the driver's size
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak_pending = max(self.peak_pending, gauge(self.registry, "db_client_connection_pending_requests"))
            used = gauge(self.registry, "db_client_connection_count", db_client_connection_state="used")
            idle = gauge(self.registry, "db_client_connection_count", db_client_connection_state="idle")
            if self.pool.inner is not None:
                self.samples.append((used, idle, driver_size(self.adapter, self.pool.inner)[0]))
            await asyncio.sleep(0.002)

    async def __aenter__(self) -> Self:
        """Start sampling."""
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._task is not None:
            await self._task


def reading(registry: CollectorRegistry, name: str) -> tuple[Buckets, float]:
    """Read one histogram of the pool: its cumulative buckets and its sum."""
    return bucket_counts(registry, name, LABELS), registry.get_sample_value(f"{name}_sum", LABELS) or 0.0


def assert_recorded_as_measured(
    registry: CollectorRegistry,
    pool: InstrumentedPool,
    before: dict[str, tuple[Buckets, float]],
    durations: list[float],
) -> None:
    """Check that the wait and use histograms gained exactly the proxy's raw samples, which fit the requests."""
    raw = {WAIT: list(pool.recent_waits)[-SESSIONS:], USE: list(pool.recent_holds)[-SESSIONS:]}
    for name, samples in raw.items():
        buckets, total = reading(registry, name)
        gained = subtract(buckets, before[name][0])
        assert gained[float("inf")] == SESSIONS, (name, gained)
        assert gained == cumulative(samples, gained), (name, gained, samples)
        assert total - before[name][1] == pytest.approx(sum(samples), abs=1e-9), name
    # Each route held its connection through a HOLD sleep, and a request's wait and hold both happened within
    # its own duration. (Paired by rank: when every wait + HOLD fits its own request, the k-th shortest wait
    # + HOLD fits the k-th shortest request.)
    waits, holds = sorted(raw[WAIT]), raw[USE]
    assert min(holds) >= HOLD - CLOCK, holds
    ranked = sorted(durations)
    assert all(wait + HOLD <= took + CLOCK for wait, took in zip(waits, ranked, strict=True)), (waits, ranked)
    assert sum(waits) + sum(holds) <= sum(ranked) + CLOCK


@pytest.mark.parametrize(("adapter", "path"), PATHS, ids=[f"{a}-{p}" for a, p in PATHS])
async def test_contention_is_measured_on_every_session_path(
    adapter: str,
    path: str,
    *,
    pg: PostgresServer,
    superuser: asyncpg.Connection,
    registry: CollectorRegistry,
    tmp_path: Path,
) -> None:
    """Ten 100 ms holders on a 2-connection pool: every wait and hold recorded as measured, 8 pending, sizes agree."""
    app_name = f"contention-{adapter}-{path}"
    spec = SQLSpec()
    config = spec.add_config(make_config(adapter, pg, tmp_path, app_name))
    ops = SQLSpecOps(spec, registry=registry)
    app = build_app(spec, config, ops, adapter, path)
    async with serving(app) as client:
        pool = config.connection_instance
        assert isinstance(pool, InstrumentedPool)
        if path.startswith(("plugin", "ops-then")):
            assert app.state.db_pool is pool, "the plugin must use the instrumented pool"
        await wait_for_size(adapter, pool, 2)
        before = {name: reading(registry, name) for name in (WAIT, USE)}

        async def timed_hold() -> tuple[int, float]:
            started = time.perf_counter()
            response = await client.get("/hold")
            return response.status_code, time.perf_counter() - started

        async with GaugeWatcher(registry, adapter, pool) as watcher:
            burst = asyncio.gather(*(timed_hold() for _ in range(SESSIONS)))
            await eventually(lambda: pool.pending > 0, timeout=10, what="callers to wait for a connection")
            backends_during = await backends(superuser, app_name) if adapter != "aiosqlite" else 2
            results = await burst
        assert [status for status, _ in results] == [200] * SESSIONS

        assert_recorded_as_measured(registry, pool, before, [took for _, took in results])

        assert watcher.peak_pending >= 6, f"pending peaked at {watcher.peak_pending}"
        assert gauge(registry, "db_client_connection_pending_requests") == 0
        assert max(used for used, _, _ in watcher.samples) == 2
        # used counts connections handed out, idle those ready: one being reset on its way back is neither
        assert all(used + idle <= size for used, idle, size in watcher.samples), watcher.samples
        assert any(used + idle == size for used, idle, size in watcher.samples), watcher.samples
        assert backends_during == 2

        size, idle = driver_size(adapter, pool.inner)
        used_gauge = gauge(registry, "db_client_connection_count", db_client_connection_state="used")
        idle_gauge = gauge(registry, "db_client_connection_count", db_client_connection_state="idle")
        assert (used_gauge, idle_gauge) == (size - idle, idle) == (0, 2)
        if adapter != "aiosqlite":
            assert await backends(superuser, app_name) == size
        assert gauge(registry, "db_client_connection_max") == 2
        assert gauge(registry, "db_client_connection_idle_min") == 2


async def hold_every_connection(spec: SQLSpec, config: Any, count: int, release: asyncio.Event) -> list[Any]:
    """Start ``count`` sessions that each hold a connection until ``release`` is set; return once all hold."""
    holding = asyncio.Semaphore(0)
    failures: list[BaseException] = []

    async def hold() -> None:
        try:
            async with spec.provide_session(config) as db:
                await db.select_value("SELECT 1")
                holding.release()
                await release.wait()
        except BaseException as exc:
            failures.append(exc)
            holding.release()
            raise

    holders = [asyncio.create_task(hold()) for _ in range(count)]
    for _ in holders:
        await holding.acquire()
    assert not failures, failures  # a holder that failed released the semaphore too: fail, do not hang
    return holders


@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg", "aiosqlite"])
async def test_acquire_timeout_fails_fast_names_the_pool_and_counts_each_timeout(
    adapter: str, pg: PostgresServer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    """With acquire_timeout=0.2 and an exhausted pool, each waiter fails instead of waiting and is counted once."""
    spec = SQLSpec()
    config = spec.add_config(make_config(adapter, pg, tmp_path, f"timeout-{adapter}"))
    ops = SQLSpecOps(spec, registry=registry, acquire_timeout=0.2)
    ops.install()
    await ops.startup()
    try:
        pool = config.connection_instance
        assert isinstance(pool, InstrumentedPool)
        await wait_for_size(adapter, pool, 2)
        release = asyncio.Event()
        holders = await hold_every_connection(spec, config, 2, release)
        before = registry.get_sample_value("db_client_connection_timeouts_total", LABELS) or 0.0

        async def attempt() -> tuple[float, BaseException | None]:
            started = time.perf_counter()
            try:
                async with spec.provide_session(config) as db:
                    await db.select_value("SELECT 1")
            except BaseException as exc:
                return time.perf_counter() - started, exc
            return time.perf_counter() - started, None

        results = await asyncio.gather(*(attempt() for _ in range(3)))
        for elapsed, error in results:
            assert isinstance(error, PoolAcquireTimeout), repr(error)
            assert isinstance(error, TimeoutError)
            # generous: the holders never let go meanwhile, so only acquire_timeout ends the wait
            assert elapsed < 10, f"timed out after {elapsed:.3f}s"
            assert "pool 'main'" in str(error)
            assert "acquire_timeout" in str(error)
        after = registry.get_sample_value("db_client_connection_timeouts_total", LABELS)
        assert after == before + 3
        assert gauge(registry, "db_client_connection_pending_requests") == 0
        assert ops.pools_report()["pools"][0]["timeouts"] == 3

        release.set()
        await asyncio.gather(*holders)
        async with spec.provide_session(config) as db:  # the pool is intact after the timeouts
            assert await db.select_value("SELECT 1") == 1
        assert driver_size(adapter, pool.inner) == (2, 2)
        assert registry.get_sample_value("db_client_connection_timeouts_total", LABELS) == before + 3
    finally:
        await ops.shutdown()


async def test_http_caller_of_an_exhausted_pool_gets_an_error_not_a_hang(
    pg: PostgresServer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    """Through the FastAPI plugin, a request that cannot get a connection fails with 500 after acquire_timeout."""
    spec = SQLSpec()
    config = spec.add_config(make_config("asyncpg", pg, tmp_path, "timeout-http"))
    ops = SQLSpecOps(spec, registry=registry, acquire_timeout=0.2)
    app = FastAPI()
    plugin = SQLSpecPlugin(spec, app)
    ops.instrument(app)
    release = asyncio.Event()

    @app.get("/block")
    async def block(db: Annotated[Any, Depends(plugin.provide_session())]) -> dict[str, bool]:
        await db.select_value("SELECT 1")
        await release.wait()
        return {"ok": True}

    @app.get("/quick")
    async def quick(db: Annotated[Any, Depends(plugin.provide_session())]) -> dict[str, int]:
        return {"one": await db.select_value("SELECT 1")}

    async with serving(app) as client:
        blockers = [asyncio.create_task(client.get("/block")) for _ in range(2)]
        pool = config.connection_instance
        assert isinstance(pool, InstrumentedPool)
        await eventually(
            lambda: driver_size("asyncpg", pool.inner)[1] == 0, timeout=5, what="both blockers to hold a connection"
        )
        # generous: the blockers never let go meanwhile, so only acquire_timeout can end /quick
        async with asyncio.timeout(10):
            with pytest.raises(PoolAcquireTimeout, match="pool 'main'"):
                await client.get("/quick")  # ASGITransport re-raises the app's unhandled exception
        release.set()
        assert [(await b).status_code for b in blockers] == [200, 200]
        assert (await client.get("/quick")).json() == {"one": 1}


async def test_pool_closed_by_sqlspec_stops_counting_connections(
    pg: PostgresServer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    """``config.close_pool()`` closes the driver pool through the proxy and the gauges drop to zero."""
    spec = SQLSpec()
    config = spec.add_config(make_config("asyncpg", pg, tmp_path, "close-pool"))
    ops = SQLSpecOps(spec, registry=registry)
    ops.install()
    await ops.startup()
    pool = config.connection_instance
    assert isinstance(pool, InstrumentedPool)
    driver_pool = pool.inner
    assert gauge(registry, "db_client_connection_count", db_client_connection_state="idle") == 2
    await spec.close_all_pools()
    assert driver_pool.is_closing()
    assert not pool.is_open
    assert gauge(registry, "db_client_connection_count", db_client_connection_state="idle") == 0
    assert gauge(registry, "db_client_connection_count", db_client_connection_state="used") == 0
    await ops.shutdown()


def test_instrumenting_a_config_that_already_has_a_pool_wraps_it(registry: CollectorRegistry) -> None:
    """A driver pool passed as ``connection_instance`` is adopted by the proxy, not replaced."""

    class FakeDriverPool:  # stands in for an app-supplied pool object; only identity matters here
        def get_size(self) -> int:
            return 3

        def get_idle_size(self) -> int:
            return 1

    driver_pool = FakeDriverPool()
    spec = SQLSpec()
    config = spec.add_config(AsyncpgConfig(connection_instance=driver_pool, bind_key=POOL))  # type: ignore[arg-type]
    ops = SQLSpecOps(spec, registry=registry)
    ops.install()
    pool = config.connection_instance
    assert isinstance(pool, InstrumentedPool)
    assert pool.inner is driver_pool
    assert pool.get_size() == 3  # delegated
    # nothing was handed out through the proxy; idle is what the driver pool holds ready
    assert gauge(registry, "db_client_connection_count", db_client_connection_state="used") == 0
    assert gauge(registry, "db_client_connection_count", db_client_connection_state="idle") == 1
    ops.install()  # idempotent
    assert config.connection_instance is pool


async def test_psycopg_native_stats_agree_with_the_proxy(
    pg: PostgresServer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    """psycopg_pool's own request count and wait total match what the proxy recorded (two views, one truth)."""
    spec = SQLSpec()
    config = spec.add_config(make_config("psycopg", pg, tmp_path, "psycopg-stats"))
    ops = SQLSpecOps(spec, registry=registry)
    ops.install()
    await ops.startup()
    try:
        pool = config.connection_instance
        assert isinstance(pool, InstrumentedPool)
        await wait_for_size("psycopg", pool, 2)
        before = pool.inner.get_stats()
        wait_sum_before = registry.get_sample_value(f"{WAIT}_sum", LABELS) or 0.0

        async def hold() -> None:
            async with spec.provide_session(config) as db:
                await db.select_value("SELECT 1")
                await asyncio.sleep(HOLD)

        await asyncio.gather(*(hold() for _ in range(6)))
        after = pool.inner.get_stats()
        assert after.get("requests_num", 0) - before.get("requests_num", 0) == 6
        native_wait = (after.get("requests_wait_ms", 0) - before.get("requests_wait_ms", 0)) / 1000
        ours = (registry.get_sample_value(f"{WAIT}_sum", LABELS) or 0.0) - wait_sum_before
        assert native_wait == pytest.approx(ours, abs=0.05)
        assert native_wait >= 0.9 * (HOLD + 2 * HOLD)  # waits 0, 0, 100, 100, 200, 200 ms
    finally:
        await ops.shutdown()


async def test_metrics_count_acquires_through_httpx_client(
    pg: PostgresServer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    """Each request through ``spec.provide_session`` is exactly one acquire and one release in the histograms."""
    spec = SQLSpec()
    config = spec.add_config(make_config("asyncpg", pg, tmp_path, "acquire-count"))
    ops = SQLSpecOps(spec, registry=registry)
    app = build_app(spec, config, ops, "asyncpg", "spec.provide_session")
    async with serving(app) as client:
        before = registry.get_sample_value(f"{WAIT}_count", LABELS) or 0.0
        for _ in range(5):
            assert (await client.get("/hold")).status_code == 200
        assert (await client.get("/ops/metrics")).status_code == 200
        assert (await client.get("/ops/pools")).status_code == 200
        assert (await client.get("/ops/live")).status_code == 200
        assert registry.get_sample_value(f"{WAIT}_count", LABELS) == before + 5
        assert registry.get_sample_value(f"{USE}_count", LABELS) == before + 5


async def test_proxy_returns_after_sqlspec_closes_the_pool(
    pg: PostgresServer, registry: CollectorRegistry, tmp_path: Path
) -> None:
    """After ``close_all_pools()`` the next readiness ping puts the proxy back, adopting any pool opened meanwhile."""
    spec = SQLSpec()
    config = spec.add_config(make_config("asyncpg", pg, tmp_path, "reattach"))
    ops = SQLSpecOps(spec, registry=registry, health_cache_ttl=0.0)
    ops.install()
    await ops.startup()
    try:
        proxy = config.connection_instance
        assert isinstance(proxy, InstrumentedPool)
        await spec.close_all_pools()
        assert config.connection_instance is None
        async with spec.provide_session(config) as db:  # SQLSpec opens a driver pool of its own
            assert await db.select_value("SELECT 1") == 1
        driver_pool = config.connection_instance
        assert driver_pool is not None
        assert not isinstance(driver_pool, InstrumentedPool)

        assert (await ops.health.check()).status == "pass"
        assert config.connection_instance is proxy
        assert proxy.inner is driver_pool  # adopted, not a second pool
        before = proxy.acquires
        async with spec.provide_session(config) as db:
            await db.select_value("SELECT 1")
        assert proxy.acquires == before + 1

        await spec.close_all_pools()
        assert (await ops.health.check()).status == "pass"  # the ping reopens through the proxy
        assert config.connection_instance is proxy
        assert proxy.is_open
    finally:
        await ops.shutdown()
