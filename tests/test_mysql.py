"""MySQL and MariaDB through asyncmy, against a real MariaDB: pools, readiness, spans, error numbers, budget.

Every test builds its app inside itself. Tests that count connections give their pool a database of its own
(``scratch_database``), so the server's process list (its ``DB`` column) tells their connections apart from
those of other tests on the shared server.
"""

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Annotated, Any, Self

import pytest
from fastapi import Depends, FastAPI, HTTPException
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncmy import AsyncmyConfig
from sqlspec.exceptions import UniqueViolationError
from sqlspec.extensions.fastapi import SQLSpecPlugin

from examples.app import create_app
from sqlspec_ops import PoolAcquireTimeout, SQLSpecOps, check_pool_budget
from sqlspec_ops._adapters.asyncmy import AsyncmyAdapter, mysql_error_number
from sqlspec_ops._adapters.base import error_details
from sqlspec_ops._adapters.proxy import InstrumentedPool
from sqlspec_ops._adapters.registry import adapter_for, describe_config
from tests.support.asgi import serving
from tests.support.mariadb import APP_PASSWORD, APP_USER, ROOT_PASSWORD, MariaDBServer
from tests.support.paths import ROOT
from tests.support.promql import Buckets, bucket_counts, subtract
from tests.support.statements import all_span_text, provider_with_exporter
from tests.support.waiting import eventually
from tests.test_cli import _run as run_cli
from tests.test_example_app import _crud
from tests.test_secrets import captured_text, scrape_everything

POOL = "main"
LABELS = {"db_client_connection_pool_name": POOL}
HOLD = 0.1
SESSIONS = 10
HEALTH_TIMEOUT = 1.0
SLACK = 0.5
WAIT = "db_client_connection_wait_time_seconds"
DURATION = "db_client_operation_duration_seconds"
UP = "sqlspec_ops_database_up"


_CLIENT_CONNECTIONS = (
    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND NOT IN ('Daemon', 'Binlog Dump')"
)


@pytest.fixture(scope="module")
def mariadb20() -> Iterator[MariaDBServer]:
    """A MariaDB server with max_connections=20 (the budget tests)."""
    server = MariaDBServer(max_connections=20)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def scratch_database(server: MariaDBServer) -> str:
    """Create a database only one test uses and let the application account use it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    server.sql(f"CREATE DATABASE {name}; GRANT ALL PRIVILEGES ON {name}.* TO '{APP_USER}'@'{server.host}'")
    return name


def asyncmy_config(server: MariaDBServer, database: str, **sizes: Any) -> AsyncmyConfig:
    """An asyncmy config for the application account, named ``main``, the password in the connection settings."""
    return AsyncmyConfig(connection_config=server.connection_config(database=database, **sizes), bind_key=POOL)


async def connections_in(server: MariaDBServer, database: str) -> dict[str, int]:
    """Count the server's connections whose default database is ``database``, by ``COMMAND``."""
    root = await server.root()
    try:
        async with root.cursor() as cursor:
            await cursor.execute(
                "SELECT COMMAND, COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s GROUP BY COMMAND",
                (database,),
            )
            return {str(command): int(count) for command, count in await cursor.fetchall()}
    finally:
        root.close()


def gauge(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Read one gauge of the ``main`` pool (0 when the series does not exist)."""
    return registry.get_sample_value(name, {**LABELS, **labels}) or 0.0


def buckets_of(samples: list[float], bounds: list[float]) -> Buckets:
    """Bucket raw samples the way a Prometheus histogram does (cumulative, ``le``)."""
    return {bound: float(sum(1 for s in samples if s <= bound)) for bound in bounds}


class Probe:
    """What the test itself sees around every session: when acquiring began and ended, when holding ended."""

    def __init__(self) -> None:
        self.began = self.acquired = self.releasing = self.released = 0
        self.waits: list[float] = []

    @asynccontextmanager
    async def session(self, spec: SQLSpec, config: AsyncmyConfig) -> AsyncIterator[Any]:
        """Open a session of ``config`` through SQLSpec, counting each step."""
        self.began += 1
        started = perf_counter()
        context = spec.provide_session(config)
        db = await context.__aenter__()
        self.waits.append(perf_counter() - started)
        self.acquired += 1
        try:
            yield db
        finally:
            self.releasing += 1
            await context.__aexit__(None, None, None)
            self.released += 1


class Sampler:
    """Samples the pool gauges every 2 ms next to asyncmy's own counts and the probe's, while a burst runs."""

    def __init__(self, registry: CollectorRegistry, raw_pool: Any, probe: Probe) -> None:
        self.registry, self.raw_pool, self.probe = registry, raw_pool, probe
        self.samples: list[tuple[float, float, float, int, int, tuple[int, int, int, int]]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        probe, registry = self.probe, self.registry
        while not self._stop.is_set():
            self.samples.append(
                (
                    gauge(registry, "db_client_connection_count", db_client_connection_state="used"),
                    gauge(registry, "db_client_connection_count", db_client_connection_state="idle"),
                    gauge(registry, "db_client_connection_pending_requests"),
                    self.raw_pool.size,
                    self.raw_pool.freesize,
                    (probe.began, probe.acquired, probe.releasing, probe.released),
                )
            )
            await asyncio.sleep(0.002)

    def check(self) -> None:
        """Assert that every sample agrees with asyncmy's counts and with what the sessions were doing."""
        for used, idle, pending, size, free, (began, acquired, releasing, released) in self.samples:
            assert (used, idle) == (size - free, free)  # the gauges are asyncmy's own counts
            # Whoever holds a connection has started acquiring and not finished releasing it, and whoever has
            # acquired and not started releasing holds one; waiters are among those who started and not acquired.
            assert acquired - releasing <= used <= began - released
            assert pending <= began - acquired
        assert max(sample[0] for sample in self.samples) == 2
        assert max(sample[2] for sample in self.samples) >= 6

    async def __aenter__(self) -> Self:
        """Start sampling."""
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._task is not None:
            await self._task


async def test_contention_gauges_equal_asyncmy_pool_counts_and_waits_are_recorded_as_measured(
    mariadb: MariaDBServer, registry: CollectorRegistry
) -> None:
    """Ten 100 ms holds on maxsize 2: gauges match asyncmy's size/freesize, the histogram holds the waits."""
    database = scratch_database(mariadb)
    spec = SQLSpec()
    config = spec.add_config(asyncmy_config(mariadb, database, minsize=2, maxsize=2))
    probe = Probe()
    app = FastAPI()

    async def session() -> AsyncIterator[Any]:
        async with probe.session(spec, config) as db:
            yield db

    @app.get("/hold")
    async def hold(db: Annotated[Any, Depends(session)]) -> dict[str, int]:
        await db.select_value("SELECT 1")
        await asyncio.sleep(HOLD)
        return {"ok": 1}

    SQLSpecOps(spec, registry=registry).instrument(app)

    async with serving(app) as client:
        pool = config.connection_instance
        assert isinstance(pool, InstrumentedPool)
        raw_pool = pool.inner
        assert (raw_pool.size, raw_pool.freesize, raw_pool.minsize, raw_pool.maxsize) == (2, 2, 2, 2)
        before = bucket_counts(registry, WAIT, LABELS)
        sum_before = registry.get_sample_value(f"{WAIT}_sum", LABELS) or 0.0
        async with Sampler(registry, raw_pool, probe) as sampler:
            burst = asyncio.gather(*(client.get("/hold") for _ in range(SESSIONS)))
            await asyncio.sleep(HOLD * 1.5)
            during = await connections_in(mariadb, database)
            responses = await burst
        assert [r.status_code for r in responses] == [200] * SESSIONS
        sampler.check()
        assert sum(during.values()) == 2  # the server sees the pool's two connections, no more

        waits = subtract(bucket_counts(registry, WAIT, LABELS), before)
        assert waits[math.inf] == SESSIONS
        recorded = list(pool.recent_waits)[-SESSIONS:]
        bounds = sorted(b for b in waits if not math.isinf(b))
        assert {b: waits[b] for b in bounds} == buckets_of(recorded, bounds)
        histogram_sum = (registry.get_sample_value(f"{WAIT}_sum", LABELS) or 0.0) - sum_before
        assert histogram_sum == pytest.approx(sum(recorded), abs=1e-9)
        # What the test measured around each session is the proxy's wait plus SQLSpec's bookkeeping (no I/O).
        assert histogram_sum / SESSIONS == pytest.approx(sum(probe.waits) / SESSIONS, abs=0.005)
        # Two connections, 100 ms holds: the k-th pair of waiters cannot get one before k holds have ended.
        ordered = sorted(probe.waits)
        for index, waited in enumerate(ordered):
            assert waited >= (index // 2) * HOLD - 0.03, ordered
        assert sum(ordered) / SESSIONS >= 2 * HOLD - 0.03

        size, free = raw_pool.size, raw_pool.freesize
        assert (gauge(registry, "db_client_connection_count", db_client_connection_state="used"), size, free) == (
            0,
            2,
            2,
        )
        assert gauge(registry, "db_client_connection_pending_requests") == 0
        assert gauge(registry, "db_client_connection_max") == 2
        assert gauge(registry, "db_client_connection_idle_min") == 2
    assert await connections_in(mariadb, database) == {}  # shutdown closed asyncmy's pool


@pytest.mark.parametrize("path", ["config.provide_connection", "config.provide_session", "plugin"])
async def test_every_session_path_borrows_through_the_proxy(
    path: str, mariadb: MariaDBServer, registry: CollectorRegistry
) -> None:
    """Four concurrent holds on maxsize 2 through each of SQLSpec's borrowing paths are all measured."""
    database = scratch_database(mariadb)
    spec = SQLSpec()
    config = spec.add_config(asyncmy_config(mariadb, database, minsize=1, maxsize=2))
    app = FastAPI()
    if path == "plugin":
        plugin = SQLSpecPlugin(spec, app)

        @app.get("/hold")
        async def hold_plugin(db: Annotated[Any, Depends(plugin.provide_session())]) -> dict[str, int]:
            await db.select_value("SELECT 1")
            await asyncio.sleep(HOLD)
            return {"ok": 1}

    elif path == "config.provide_session":

        @app.get("/hold")
        async def hold_session() -> dict[str, int]:
            async with config.provide_session() as db:
                await db.select_value("SELECT 1")
                await asyncio.sleep(HOLD)
            return {"ok": 1}

    else:

        @app.get("/hold")
        async def hold_connection() -> dict[str, int]:
            async with config.provide_connection() as connection:
                await AsyncmyAdapter().ping(connection)
                await asyncio.sleep(HOLD)
            return {"ok": 1}

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        pool = config.connection_instance
        assert isinstance(pool, InstrumentedPool)
        if path == "plugin":
            assert app.state.db_pool is pool, "the plugin must use the instrumented pool"
        acquires = pool.acquires
        responses = await asyncio.gather(*(client.get("/hold") for _ in range(4)))
        assert [r.status_code for r in responses] == [200] * 4
        assert pool.acquires - acquires == 4
        assert max(pool.recent_waits) >= HOLD - 0.03  # two of the four had to wait for a hold to end
        assert (pool.inner.size, pool.inner.freesize) == (2, 2)
        assert gauge(registry, "db_client_connection_count", db_client_connection_state="idle") == 2
        assert gauge(registry, "db_client_connection_count", db_client_connection_state="used") == 0
    assert await connections_in(mariadb, database) == {}


async def test_acquire_timeout_fails_fast_and_counts(mariadb: MariaDBServer, registry: CollectorRegistry) -> None:
    """With acquire_timeout=0.2 the proxy fails a waiter and counts it (asyncmy has no acquire timeout)."""
    database = scratch_database(mariadb)
    spec = SQLSpec()
    config = spec.add_config(asyncmy_config(mariadb, database, minsize=1, maxsize=1))
    ops = SQLSpecOps(spec, registry=registry, acquire_timeout=0.2)
    ops.install()
    await ops.startup()
    try:
        release = asyncio.Event()
        held = asyncio.Event()

        async def holder() -> None:
            async with spec.provide_session(config) as db:
                await db.select_value("SELECT 1")
                held.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await held.wait()
        started = time.perf_counter()
        with pytest.raises(PoolAcquireTimeout, match="pool 'main'"):
            async with spec.provide_session(config) as db:
                await db.select_value("SELECT 1")
        assert time.perf_counter() - started >= 0.2
        assert registry.get_sample_value("db_client_connection_timeouts_total", LABELS) == 1
        release.set()
        await task
        async with spec.provide_session(config) as db:  # the pool is intact after the timeout
            assert await db.select_value("SELECT 1") == 1
        pool = config.connection_instance
        assert isinstance(pool, InstrumentedPool)
        assert (pool.inner.size, pool.inner.freesize) == (1, 1)
    finally:
        await ops.shutdown()


@pytest.mark.slow
async def test_stopped_server_fails_readiness_in_time_and_recovers_without_restarting_the_app(
    registry: CollectorRegistry,
) -> None:
    """Stop MariaDB: /ops/ready 503 within health_timeout + 0.5 s, /ops/live instant; restart it: 200 again."""
    with MariaDBServer() as server:
        spec = SQLSpec()
        spec.add_config(asyncmy_config(server, "appdb", minsize=1, maxsize=2))
        ops = SQLSpecOps(spec, registry=registry, health_timeout=HEALTH_TIMEOUT, health_cache_ttl=0.5)
        app = FastAPI()
        ops.instrument(app)
        async with serving(app) as client:
            response = await client.get("/ops/ready")
            assert response.status_code == 200, response.text
            assert response.json()["checks"]["main:connections"][0]["adapter"] == "asyncmy"
            assert registry.get_sample_value(UP, LABELS) == 1

            server.stop()
            stopped = time.monotonic()
            while True:
                began = time.monotonic()
                response = await client.get("/ops/ready")
                took = time.monotonic() - began
                assert took < HEALTH_TIMEOUT + SLACK, f"/ops/ready took {took:.2f}s with the server down"
                if response.status_code == 503:
                    break
                assert time.monotonic() - stopped < ops.health.cache_ttl + HEALTH_TIMEOUT + SLACK
                await asyncio.sleep(0.05)
            (check,) = response.json()["checks"]["main:connections"]
            assert check["status"] == "fail"
            assert check["output"] == "OperationalError"  # the class, never the driver's message
            assert registry.get_sample_value(UP, LABELS) == 0
            began = time.monotonic()
            assert (await client.get("/ops/live")).status_code == 200
            assert time.monotonic() - began < 0.05
            assert (await client.get("/ops/metrics")).status_code == 200

            server.start()
            restarted = time.monotonic()
            while True:
                response = await client.get("/ops/ready")
                if response.status_code == 200:
                    break
                assert time.monotonic() - restarted < 20, f"asyncmy never recovered: {response.text}"
                await asyncio.sleep(0.2)
            assert response.json()["status"] == "pass"
            assert registry.get_sample_value(UP, LABELS) == 1


async def test_duplicate_key_gives_a_span_and_a_metric_with_the_mysql_error_number(
    mariadb: MariaDBServer, registry: CollectorRegistry
) -> None:
    """A duplicate-key INSERT: a CLIENT span and a metric sample with error_type 1062; MySQL's attributes."""
    database = scratch_database(mariadb)
    provider, exporter = provider_with_exporter()
    spec = SQLSpec()
    config = spec.add_config(asyncmy_config(mariadb, database, minsize=1, maxsize=2))
    app = FastAPI()

    @app.post("/items/{item_id}")
    async def add_item(item_id: int) -> dict[str, int]:
        async with spec.provide_session(config) as db:
            try:
                await db.execute("INSERT INTO items (id, note) VALUES (:id, :note)", {"id": item_id, "note": "n0te"})
                await db.commit()  # asyncmy does not autocommit; SQLSpec rolls back what is left open
            except UniqueViolationError:
                raise HTTPException(status_code=409, detail="taken") from None
        return {"id": item_id}

    SQLSpecOps(spec, registry=registry, tracer_provider=provider).instrument(app)
    async with serving(app) as client:
        async with spec.provide_session(config) as db:
            await db.execute("CREATE TABLE items (id INT PRIMARY KEY, note VARCHAR(20))")
        exporter.clear()
        assert (await client.post("/items/7")).status_code == 200
        assert (await client.post("/items/7")).status_code == 409

    labels = {**LABELS, "db_system_name": "mysql", "db_operation_name": "INSERT"}
    assert registry.get_sample_value(f"{DURATION}_count", {**labels, "error_type": "1062"}) == 1
    assert registry.get_sample_value(f"{DURATION}_count", {**labels, "error_type": ""}) == 1
    inserts = [s for s in exporter.get_finished_spans() if s.name == "INSERT items"]
    assert len(inserts) == 2
    ok, failed = sorted(inserts, key=lambda s: s.start_time or 0)
    for span in (ok, failed):
        attributes = dict(span.attributes or {})
        assert span.kind == SpanKind.CLIENT
        assert attributes["db.system.name"] == "mysql"
        assert attributes["db.namespace"] == database
        assert attributes["db.collection.name"] == "items"
        assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", mariadb.port)
        assert "7" not in str(attributes["db.query.text"])
    assert ok.status.status_code != StatusCode.ERROR
    failed_attributes = dict(failed.attributes or {})
    assert failed.status.status_code == StatusCode.ERROR
    assert failed_attributes["error.type"] == "1062"
    assert failed_attributes["db.response.status_code"] == "1062"
    text = all_span_text(exporter.get_finished_spans())
    assert "Duplicate entry" not in text  # the driver's message quotes the row's key
    assert "n0te" not in text
    assert APP_PASSWORD not in text


async def test_error_numbers_are_read_from_mysql_errors_only(mariadb: MariaDBServer) -> None:
    """The error number comes from asyncmy's error under SQLSpec's wrapper; other errors fall back to the class."""
    database = scratch_database(mariadb)
    spec = SQLSpec()
    config = spec.add_config(asyncmy_config(mariadb, database, minsize=0, maxsize=1))
    adapter = AsyncmyAdapter()
    try:
        async with spec.provide_session(config) as db:
            with pytest.raises(Exception) as missing:  # noqa: PT011 - which class SQLSpec maps 1146 to is its choice
                await db.select_value("SELECT x FROM no_such_table")
    finally:
        await config.close_pool()
    assert missing.value.__cause__ is not None
    assert adapter.error_code(missing.value.__cause__) == "1146"  # the driver error under SQLSpec's wrapper
    assert error_details(adapter, missing.value) == ("1146", "1146")
    assert mysql_error_number(missing.value.__cause__) == "1146"
    # Negative controls: errno-shaped errors of other libraries and plain errors have no MySQL number.
    refused = ConnectionRefusedError(111, "Connection refused")
    assert adapter.error_code(refused) is None
    assert error_details(adapter, refused) == ("ConnectionRefusedError", None)
    assert adapter.error_code(RuntimeError("Cannot acquire connection after closing pool")) is None


async def test_limits_count_the_admin_connection_on_top_of_max_connections(mariadb20: MariaDBServer) -> None:
    """With max_connections=10 (MariaDB's least) the app gets 10 connections, not 11; root still gets in, once."""
    import asyncmy  # noqa: PLC0415 - the driver under test, only here used directly

    adapter = AsyncmyAdapter()
    mariadb20.set_max_connections(10)
    # Earlier tests' connections close asynchronously on the server: count from an empty server (the client
    # asking is the one connection left), or one of them would hold a slot the test means to fill.
    await eventually(
        lambda: int(mariadb20.sql(_CLIENT_CONNECTIONS).strip()) <= 1,
        timeout=15,
        what="earlier tests' connections to close on the server",
    )
    opened: list[Any] = []
    try:
        opened.extend([await asyncmy.connect(**mariadb20.connection_config()) for _ in range(10)])
        limits = await adapter.read_mysql_limits(opened[0])
        assert (limits.max_connections, limits.account_limit, limits.admin) == (10, None, False)
        assert limits.account == f"{APP_USER}@{mariadb20.host}"
        with pytest.raises(asyncmy.errors.OperationalError) as refused:
            opened.append(await asyncmy.connect(**mariadb20.connection_config()))
        assert mysql_error_number(refused.value) == "1040"  # ER_CON_COUNT_ERROR: too many connections
        # The one extra connection for SUPER. The refused attempt above holds the server's spare thread until the
        # server has torn it down (slower on a loaded machine), so root may have to ask again for a moment.
        admitted: list[Any] = []

        async def root_gets_in() -> bool:
            admitted.append(await mariadb20.root())
            return True

        await eventually(
            root_gets_in, timeout=10, interval=0.1, ignore=(asyncmy.errors.OperationalError,), what="root's extra slot"
        )
        (root,) = admitted
        opened.append(root)
        root_limits = await adapter.read_mysql_limits(root)
        assert root_limits.admin is True
        assert "has that privilege" in root_limits.explain()
        with pytest.raises(asyncmy.errors.OperationalError):  # and only one
            opened.append(await mariadb20.root())
    finally:
        for connection in opened:
            connection.close()
        await asyncio.sleep(0.2)  # the server notices the closed connections
        mariadb20.set_max_connections(20)


async def test_oversubscribed_startup_warns_with_the_numbers_and_the_max_size_that_fits(
    mariadb20: MariaDBServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """max_connections 20, three workers x maxsize 10: one warning with 30 > 20 and max_size 6, gauges, verdict."""
    server = f"{mariadb20.host}:{mariadb20.port}"
    spec = SQLSpec()
    spec.add_config(AsyncmyConfig(connection_config={"dsn": mariadb20.url, "maxsize": 10}, bind_key="primary"))
    app = FastAPI()
    SQLSpecOps(spec, registry=registry, workers=3).instrument(app)
    caplog.set_level(logging.INFO)
    async with serving(app) as client:
        (record,) = [r for r in caplog.records if r.name == "sqlspec_ops.budget" and r.levelno == logging.WARNING]
        message = record.getMessage()
        assert f"connection budget exceeded on {server}: demand 30 = 1 replica x 3 workers (option)" in message
        assert "max_size 10 (pool primary)" in message
        assert "> budget 20 (max_connections 20; MySQL's one extra connection" in message
        assert "set max_size to at most 6 per pool" in message
        fields = record.extra_fields  # type: ignore[attr-defined]
        assert (fields["demand"], fields["budget"], fields["suggested_max_size"]) == (30, 20, 6)
        assert registry.get_sample_value("sqlspec_ops_connection_demand", {"server": server}) == 30
        assert registry.get_sample_value("sqlspec_ops_connection_budget", {"server": server}) == 20
        body = (await client.get("/ops/pools")).json()
        (pool,) = body["pools"]
        assert (pool["adapter"], pool["db_system"], pool["target"]) == ("asyncmy", "mysql", f"{server}/appdb")
        assert (pool["max_size"], pool["min_size"]) == (10, 1)
        assert pool["sizes_from"] == {"min_size": "driver default", "max_size": "config"}
        assert pool["budget"]["verdict"] == "oversubscribed"
        assert pool["budget"]["max_size_that_fits"] == 6
        assert APP_PASSWORD not in str(body) + captured_text(caplog)


async def test_account_max_user_connections_is_the_tighter_limit(mariadb20: MariaDBServer) -> None:
    """An account WITH MAX_USER_CONNECTIONS 8 is budgeted at 8 although the server allows 20."""
    user = f"capped_{uuid.uuid4().hex[:8]}"
    mariadb20.sql(
        f"CREATE USER '{user}'@'{mariadb20.host}' IDENTIFIED BY '{APP_PASSWORD}' WITH MAX_USER_CONNECTIONS 8; "
        f"GRANT ALL PRIVILEGES ON appdb.* TO '{user}'@'{mariadb20.host}'"
    )
    config = AsyncmyConfig(
        connection_config={**mariadb20.connection_config(user=user), "maxsize": 5}, bind_key="capped"
    )
    report = await asyncio.to_thread(check_pool_budget, [config], workers=2)
    (server,) = report.servers
    assert server.budget == 8
    assert (server.demand, server.verdict, server.fits_max_size) == (10, "oversubscribed", 4)
    (role,) = [c for c in server.constraints if c.kind == "role"]
    assert (role.name, role.limit) == (f"{user}@{mariadb20.host}", 8)
    assert f"the connection limit of role '{user}@{mariadb20.host}'" in report.render()
    fitting = await asyncio.to_thread(check_pool_budget, [config], workers=1)
    assert fitting.servers[0].verdict == "within budget"  # negative control: 5 fits into 8


def test_cli_check_reads_mysql_limits(mariadb20: MariaDBServer) -> None:
    """`sqlspec-ops check` on the example app with a mysql:// URL: exit 1 at 3 workers, 0 at one, no password."""
    over = run_cli("check", "examples.app:app", "--workers", "3", DATABASE_URL=mariadb20.url)
    assert over.returncode == 1, over.stderr
    assert f"{mariadb20.host}:{mariadb20.port}: OVERSUBSCRIBED" in over.stdout
    assert "pool primary (asyncmy" in over.stdout
    assert "demand 60 = 1 replica x 3 workers (option) x max_size 20 (pools primary 10 + analytics 10)" in over.stdout
    assert "budget:   20 = max_connections 20; MySQL's one extra connection" in over.stdout
    assert "max_size that fits per pool: 3" in over.stdout
    within = run_cli("check", "examples.app:app", "--workers", "1", DATABASE_URL=mariadb20.url, POOL_MAX_SIZE="5")
    assert within.returncode == 0, within.stderr
    assert "WITHIN BUDGET" in within.stdout
    for result in (over, within):
        assert APP_PASSWORD not in result.stdout + result.stderr


async def test_server_view_counts_this_app_other_clients_and_transactions(mariadb: MariaDBServer) -> None:
    """An idle pool connection, another client holding a row lock in an open transaction, one waiting on it."""
    database = scratch_database(mariadb)
    spec = SQLSpec()
    config = spec.add_config(asyncmy_config(mariadb, database, minsize=3, maxsize=3))
    adapter = adapter_for(config)
    assert isinstance(adapter, AsyncmyAdapter)
    root = await mariadb.root()
    waiting = asyncio.Event()

    async def wait_for_the_lock() -> None:
        async with config.provide_connection() as blocked, blocked.cursor() as cursor:
            await cursor.execute("SET SESSION innodb_lock_wait_timeout = 10")
            await cursor.execute("BEGIN")
            waiting.set()
            await cursor.execute("SELECT id FROM locked WHERE id = 1 FOR UPDATE")
            await cursor.fetchall()
            await blocked.rollback()

    try:
        async with config.provide_connection() as connection:
            async with connection.cursor() as cursor:
                await cursor.execute("CREATE TABLE locked (id INT PRIMARY KEY)")
                await cursor.execute("INSERT INTO locked VALUES (1)")
            await connection.commit()
            quiet = await adapter.server_view(connection)
        async with root.cursor() as cursor:
            await cursor.execute("BEGIN")
            await cursor.execute(f"SELECT id FROM {database}.locked WHERE id = 1 FOR UPDATE")
            await cursor.fetchall()
        blocked = asyncio.create_task(wait_for_the_lock())
        await waiting.wait()
        await asyncio.sleep(0.5)  # the waiter's statement reaches the lock; root's transaction ages
        async with config.provide_connection() as connection:
            busy = await adapter.server_view(connection)
            named = await adapter.server_view(connection, APP_USER)
        await root.rollback()  # the waiter gets its lock
        await asyncio.wait_for(blocked, 10)
    finally:
        root.close()
        await config.close_pool()
    # Negative control: before the other client's transaction nothing is locked or open.
    assert (quiet["waiting_on_lock"], quiet["idle_in_transaction"], quiet["oldest_transaction_s"]) == (0, 0, None)
    assert quiet["this_app"].get("idle", 0) >= 2  # the pool's other two connections
    assert busy["this_app"]["active"] >= 2  # this query and the one waiting on the lock
    assert busy["this_app"].get("idle", 0) >= 1  # the pool's third connection
    assert busy["other_clients"] >= 1  # root, idle in its transaction
    assert busy["idle_in_transaction"] >= 1
    assert busy["waiting_on_lock"] >= 1
    assert busy["oldest_transaction_s"] >= 0.5
    assert named["this_app"] == busy["this_app"]


async def test_server_view_names_the_missing_privilege(mariadb: MariaDBServer) -> None:
    """An account without PROCESS sees only itself: the view says so instead of counting no other clients."""
    user = f"noproc_{uuid.uuid4().hex[:8]}"
    mariadb.sql(f"CREATE USER '{user}'@'{mariadb.host}' IDENTIFIED BY '{APP_PASSWORD}'")
    import asyncmy  # noqa: PLC0415 - the driver under test

    adapter = AsyncmyAdapter()
    limited = await asyncmy.connect(**mariadb.connection_config(user=user, database=None))
    granted = await asyncmy.connect(**mariadb.connection_config())
    try:
        assert "PROCESS privilege" in (await adapter.server_view(limited))["error"]
        assert "error" not in await adapter.server_view(granted)  # negative control: the app's account has it
    finally:
        limited.close()
        granted.close()


def test_problems_flag_other_adapters_size_keys() -> None:
    """max_size/min_size on an AsyncmyConfig is named as a problem; minsize/maxsize is not."""
    adapter = AsyncmyAdapter()
    wrong = AsyncmyConfig(connection_config={"host": "db", "min_size": 1, "max_size": 5})
    right = AsyncmyConfig(connection_config={"host": "db", "minsize": 1, "maxsize": 5})
    (problem,) = adapter.problems(wrong)
    assert "'min_size' or 'max_size'" in problem
    assert "maxsize" in problem
    assert adapter.problems(right) == []
    assert adapter.sizes(right).max_size == 5
    assert adapter.sizes(wrong).max_size == 10  # asyncmy's default applies: the wrong key is not read


async def test_the_flagged_size_key_really_breaks_the_pool(mariadb: MariaDBServer) -> None:
    """What problems() warns about happens: SQLSpec hands max_size to asyncmy.connect(), which rejects it."""
    config = AsyncmyConfig(connection_config={**mariadb.connection_config(), "max_size": 2})
    with pytest.raises(TypeError, match="max_size"):
        async with config.provide_connection():
            pass
    await config.close_pool()


TARGETS = [
    ({"dsn": f"mysql://app:{APP_PASSWORD}@db.internal:3307/shop"}, "db.internal:3307/shop"),
    ({"url": f"mysql://app:{APP_PASSWORD}@db.internal/shop"}, "db.internal:3306/shop"),
    ({"host": "db.internal", "user": "app", "password": APP_PASSWORD, "db": "shop"}, "db.internal:3306/shop"),
    ({"user": "app", "password": APP_PASSWORD, "database": "shop"}, "localhost:3306/shop"),
    ({"dsn": f"mysql://app:{APP_PASSWORD}@[::1]:3307/shop"}, "[::1]:3307/shop"),
]


@pytest.mark.parametrize(("connection_config", "label"), TARGETS)
def test_targets_hold_host_port_and_database_only(connection_config: dict[str, Any], label: str) -> None:
    """Targets are host:port/database with MySQL's defaults, never the user or the password."""
    config = AsyncmyConfig(connection_config=connection_config)
    target = describe_config(config)
    assert (target.adapter, target.db_system, target.label) == ("asyncmy", "mysql", label)
    assert APP_PASSWORD not in repr(target)
    assert "app" not in repr(target).replace("adapter", "")


@pytest.mark.parametrize("scenario", ["healthy-then-down", "down-at-startup", "wrong-password"])
async def test_password_never_leaks(
    scenario: str, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Grep every /ops answer, every log record, every metric label and every span for the password."""
    caplog.set_level(logging.DEBUG)
    provider, exporter = provider_with_exporter()
    with MariaDBServer() as server:
        password = f"wr0ng-{APP_PASSWORD}" if scenario == "wrong-password" else APP_PASSWORD
        spec = SQLSpec()
        config = spec.add_config(
            AsyncmyConfig(
                connection_config={"dsn": server.url.replace(APP_PASSWORD, password), "maxsize": 2}, bind_key=POOL
            )
        )
        app = FastAPI()

        @app.get("/fail")
        async def fail() -> dict[str, str]:
            async with spec.provide_session(config) as db:
                try:  # a failing statement quoting the password: its error, span and logs are grepped
                    await db.select_value(f"SELECT '{APP_PASSWORD}' FROM no_such_table")
                except Exception as exc:
                    return {"failed": type(exc).__name__}
            return {"failed": ""}

        SQLSpecOps(
            spec, registry=registry, health_timeout=0.5, startup_timeout=1.0, tracer_provider=provider
        ).instrument(app)
        if scenario == "down-at-startup":
            server.stop()
        texts: list[str] = []
        async with serving(app) as client:
            texts += await scrape_everything(client)
            ready = await client.get("/ops/ready")
            texts.append(ready.text)
            if scenario == "healthy-then-down":
                assert ready.status_code == 200, ready.text
                assert (await client.get("/fail")).json()["failed"]
                server.stop()
                texts += await scrape_everything(client)
            else:
                assert ready.status_code == 503
        texts.append(captured_text(caplog))
        texts.append(all_span_text(exporter.get_finished_spans()))
    assert caplog.records, "the scenario logged nothing: the capture is not working"
    if scenario == "healthy-then-down":
        assert exporter.get_finished_spans(), "no span was recorded: the span check would prove nothing"
    leaks = [text for text in texts if APP_PASSWORD in text or ROOT_PASSWORD in text]
    assert not leaks, leaks[0][:2000]


@pytest.fixture
def mysql_example_env(mariadb: MariaDBServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the example at its own database on the shared MariaDB, with small pools."""
    database = scratch_database(mariadb)
    monkeypatch.setenv("DATABASE_URL", mariadb.url.rsplit("/", 1)[0] + f"/{database}")
    monkeypatch.delenv("ANALYTICS_DATABASE_URL", raising=False)
    monkeypatch.setenv("POOL_MIN_SIZE", "1")
    monkeypatch.setenv("POOL_MAX_SIZE", "3")
    monkeypatch.setenv("LOG_FORMAT", "off")
    return database


async def test_example_app_runs_on_mysql(mysql_example_env: str, mariadb: MariaDBServer) -> None:
    """With a mysql:// DATABASE_URL the example's CRUD, dashboard and demo routes work, and shut down cleanly."""
    app = create_app()
    async with serving(app) as client:
        assert "MySQL at 127.0.0.1" in app.state.database
        await _crud(client)
        dashboard = await client.get("/dashboard")
        assert dashboard.status_code == 200, dashboard.text
        assert dashboard.json()["users"] >= 1
        slow = await client.get("/demo/slow", params={"seconds": 0.05})
        assert slow.status_code == 200, slow.text
        ready = await client.get("/ops/ready")
        assert ready.status_code == 200, ready.text
        pools = (await client.get("/ops/pools")).json()["pools"]
        assert {p["adapter"] for p in pools} == {"asyncmy"}
        metrics = (await client.get("/ops/metrics")).text
        assert 'db_system_name="mysql"' in metrics
        assert 'error_type="1062"' in metrics  # the refused duplicate e-mail
        assert APP_PASSWORD not in metrics + str(pools)
    assert await connections_in(mariadb, mysql_example_env) == {}  # the app's close_all_pools() closed both pools


def test_the_adapter_is_registered_and_imports_no_driver() -> None:
    """AsyncmyConfig is recognised by class path; the package imports no asyncmy module."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import sys, sqlspec_ops._adapters.registry, sqlspec_ops._ops, sqlspec_ops._budget;"
        "print(sorted(m for m in sys.modules if m.startswith('asyncmy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
    assert isinstance(adapter_for(AsyncmyConfig(connection_config={"host": "db"})), AsyncmyAdapter)
