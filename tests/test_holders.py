"""Who holds the connections: holders in ``/ops/pools``, leak detection, held-but-idle time, cancelled statements.

Every test serves a real FastAPI app over real PostgreSQL (asyncpg and psycopg; aiosqlite where an embedded
database proves the same thing). Durations are only compared with what the test itself slept or measured.
"""

import asyncio
import logging
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.adapters.psycopg import PsycopgAsyncConfig
from sqlspec.extensions.fastapi import SQLSpecPlugin

from sqlspec_ops import SQLSpecOps
from tests.support.asgi import serving
from tests.support.postgres import PostgresServer
from tests.support.statements import DURATION, assert_one_cancelled_span, provider_with_exporter
from tests.support.waiting import eventually

POOL = "main"
LEAKS = "sqlspec_ops_connection_leaks_total"
HELD_IDLE = "sqlspec_ops_connection_held_idle_seconds"


def make_spec(adapter: str, pg: PostgresServer, tmp_path: Any = None) -> tuple[SQLSpec, Any]:
    """Return a SQLSpec with one two-connection pool of ``adapter`` named ``main``."""
    spec = SQLSpec()
    if adapter == "asyncpg":
        config: Any = AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 2}, bind_key=POOL)
    elif adapter == "psycopg":
        config = PsycopgAsyncConfig(
            connection_config={"conninfo": pg.conninfo(), "min_size": 1, "max_size": 2}, bind_key=POOL
        )
    else:
        config = AiosqliteConfig(
            connection_config={"database": str(tmp_path / "h.sqlite"), "pool_size": 2}, bind_key=POOL
        )
    return spec, spec.add_config(config)


def pool_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    """Return the records of ``sqlspec_ops.pools`` at exactly ``level``."""
    return [r for r in caplog.records if r.name == "sqlspec_ops.pools" and r.levelno == level]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """Return one sample's value (None when absent)."""
    return registry.get_sample_value(name, {"db_client_connection_pool_name": POOL, **labels})


async def holders_of(client: Any) -> list[dict[str, Any]]:
    """Return the ``holders`` of pool ``main`` from ``/ops/pools``."""
    body = (await client.get("/ops/pools")).json()
    (entry,) = [p for p in body["pools"] if p["name"] == POOL]
    holders: list[dict[str, Any]] = entry["holders"]
    return holders


async def test_leak_is_reported_once_with_the_request_route_and_stack(
    pg: PostgresServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection held 3 s without a statement under leak_threshold=1 gives one WARNING, one count, one INFO."""
    caplog.set_level(logging.INFO, logger="sqlspec_ops.pools")
    spec, config = make_spec("asyncpg", pg)
    app = FastAPI()

    @app.get("/reports/{report_id}")
    async def slow_report(report_id: int) -> dict[str, int]:
        async with spec.provide_session(config):
            await asyncio.sleep(3)  # an external call that keeps the connection, no statement
        return {"id": report_id}

    SQLSpecOps(spec, registry=registry, leak_threshold=1).instrument(app)
    async with serving(app) as client:
        assert sample(registry, LEAKS) == 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        request = asyncio.create_task(client.get("/reports/7", headers={"X-Request-ID": "leak-req-1"}))
        await eventually(lambda: pool_logs(caplog, logging.WARNING), timeout=2.5, what="a leak warning")
        detected = loop.time() - started
        (holder,) = await holders_of(client)
        assert holder["request_id"] == "leak-req-1"
        assert holder["route"] == "/reports/{report_id}"
        assert holder["state"] == "idle"
        assert holder["held_ms"] >= 1000
        assert holder["statements"] == 0
        assert holder["current_statement"] is None
        assert "test_leak_is_reported_once_with_the_request_route_and_stack" in holder["acquired_at"]
        response = await request
        assert response.status_code == 200
        await eventually(lambda: pool_logs(caplog, logging.INFO), timeout=2, what="the returned-connection line")
        await asyncio.sleep(1.2)  # two more sweeps: nothing further is reported for that connection
        assert await holders_of(client) == []

    (warning,) = pool_logs(caplog, logging.WARNING)
    fields = warning.extra_fields  # type: ignore[attr-defined]
    assert fields["pool"] == POOL
    assert fields["request_id"] == "leak-req-1"
    assert fields["route"] == "/reports/{report_id}"
    assert fields["held_s"] >= 1
    assert fields["state"] == "idle"
    assert isinstance(fields["event_loop_lag_ms"], float)  # the sampler runs: the loop's lag goes with the warning
    assert any("test_leak_is_reported_once_with_the_request_route_and_stack" in line for line in fields["stack"])
    assert not any("/sqlspec_ops/" in line or "/sqlspec/" in line for line in fields["stack"])
    assert detected < 3  # reported while the connection was still out, not when it came back
    assert sample(registry, LEAKS) == 1
    (returned,) = pool_logs(caplog, logging.INFO)
    assert returned.extra_fields["request_id"] == "leak-req-1"  # type: ignore[attr-defined]
    assert returned.extra_fields["held_s"] >= 3  # type: ignore[attr-defined]


async def test_no_leak_reported_without_threshold_or_below_it(
    pg: PostgresServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Negative control: holds shorter than leak_threshold, and any hold with leak detection off, are not reported."""
    caplog.set_level(logging.INFO, logger="sqlspec_ops.pools")
    spec, config = make_spec("asyncpg", pg)
    app = FastAPI()

    @app.get("/short")
    async def short() -> None:
        async with spec.provide_session(config) as session:
            await session.select_value("SELECT 1")
            await asyncio.sleep(0.3)

    SQLSpecOps(spec, registry=registry, leak_threshold=2).instrument(app)
    async with serving(app) as client:
        for _ in range(3):
            assert (await client.get("/short")).status_code == 200
        await asyncio.sleep(1.1)
    assert pool_logs(caplog, logging.WARNING) == []
    assert pool_logs(caplog, logging.INFO) == []
    assert sample(registry, LEAKS) == 0


@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_holder_in_open_transaction_reads_idle_in_transaction(
    adapter: str, pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A request that begins a transaction, updates and sleeps is listed as "idle in transaction", then executing."""
    spec, config = make_spec(adapter, pg)
    app = FastAPI()
    go_on = asyncio.Event()

    @app.post("/tx")
    async def tx() -> None:
        async with spec.provide_session(config) as session:
            await session.begin()
            await session.execute("SELECT 1 WHERE 1 = 1")
            await go_on.wait()
            await session.execute("SELECT pg_sleep(0.8)")
            await session.rollback()

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        request = asyncio.create_task(client.post("/tx"))

        async def in_transaction() -> bool:
            holders = await holders_of(client)
            return bool(holders) and holders[0]["state"] == "idle in transaction"

        await eventually(in_transaction, timeout=5, what="an idle-in-transaction holder")
        (holder,) = await holders_of(client)
        assert holder["route"] == "/tx"
        assert holder["statements"] >= 1
        assert holder["acquired_at"] is None  # no stack without leak detection
        go_on.set()

        async def executing() -> bool:
            holders = await holders_of(client)
            return bool(holders) and holders[0]["state"] == "executing"

        await eventually(executing, timeout=5, what="an executing holder")
        (holder,) = await holders_of(client)
        assert holder["current_statement"] == "SELECT"
        assert "pg_sleep" not in str(holder)  # the summary, never the statement's text or its literal
        assert (await request).status_code == 200
        assert await holders_of(client) == []


async def test_background_holder_outside_a_request(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """A connection borrowed by a named background task is listed under that task's name, no request ID."""
    spec, config = make_spec("asyncpg", pg)
    app = FastAPI()
    SQLSpecOps(spec, registry=registry).instrument(app)
    release = asyncio.Event()

    async def refresher() -> None:
        async with spec.provide_session(config):
            await release.wait()

    async with serving(app) as client:
        task = asyncio.get_running_loop().create_task(refresher(), name="cache-refresher")
        await eventually(lambda: holders_of(client), timeout=5, what="a holder")
        (holder,) = await holders_of(client)
        assert holder["route"] == "cache-refresher"
        assert holder["request_id"] is None
        release.set()
        await task


async def test_held_idle_time_separates_sleeping_from_querying_routes(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """The held-idle histogram sums the sleep of a sleeping route and stays near zero for a querying route."""
    spec, config = make_spec("asyncpg", pg)
    app = FastAPI()

    @app.get("/sleepy/{n}")
    async def sleepy(n: int) -> int:
        async with spec.provide_session(config) as session:
            await session.select_value("SELECT 1")
            await asyncio.sleep(1.5)
        return n

    @app.get("/busy")
    async def busy() -> None:
        async with spec.provide_session(config) as session:
            for _ in range(5):
                await session.select_value("SELECT pg_sleep(0.1)")

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/sleepy/1")).status_code == 200
        assert (await client.get("/sleepy/2")).status_code == 200
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await client.get("/busy")).status_code == 200
        busy_wall = loop.time() - started

    sleepy_sum = sample(registry, f"{HELD_IDLE}_sum", http_route="/sleepy/{n}")
    busy_sum = sample(registry, f"{HELD_IDLE}_sum", http_route="/busy")
    assert sample(registry, f"{HELD_IDLE}_count", http_route="/sleepy/{n}") == 2
    assert sleepy_sum is not None
    assert sleepy_sum >= 3
    assert busy_sum is not None
    assert busy_sum < 0.5 * 0.5  # the five 100 ms statements fill the hold: idle is a small share of it
    assert busy_wall >= 0.5


# aiosqlite is left out: SQLSpec 0.69's aiosqlite driver turns a cancellation during a statement into an
# AssertionError (its cursor handling swallows the CancelledError), which its on_error hook then sees.
@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_statement_cancelled_by_timeout_is_counted_and_its_span_fails(
    adapter: str, pg: PostgresServer, registry: CollectorRegistry, tmp_path: Any
) -> None:
    """A statement cut off by asyncio.timeout reaches no SQLSpec hook, yet it is counted and its span ends failed."""
    provider, exporter = provider_with_exporter()
    spec, config = make_spec(adapter, pg, tmp_path)
    app = FastAPI()
    slow = "SELECT pg_sleep(2)"

    @app.get("/cut")
    async def cut() -> str:
        try:
            async with asyncio.timeout(0.3), spec.provide_session(config) as session:
                await session.select_value(slow)
        except TimeoutError:
            return "timed out"
        return "finished"

    SQLSpecOps(spec, registry=registry, tracer_provider=provider).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/cut")).json() == "timed out"
        assert await holders_of(client) == []
    counted = sample(
        registry,
        f"{DURATION}_count",
        db_operation_name="SELECT",
        error_type="CancelledError",
        db_system_name="postgresql",
    )
    assert counted == 1
    assert_one_cancelled_span(exporter)


async def test_asyncpg_connection_create_time_through_the_connect_hook(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """Each connection asyncpg opens is timed through create_pool(connect=...); the config's own hook still runs."""
    import asyncpg  # noqa: PLC0415 - the driver under test

    calls: list[float] = []

    async def own_connect(*args: Any, **kwargs: Any) -> Any:
        calls.append(1.0)
        return await asyncpg.connect(*args, **kwargs)

    spec = SQLSpec()
    config = spec.add_config(
        AsyncpgConfig(
            connection_config={"dsn": pg.dsn, "min_size": 3, "max_size": 3, "connect": own_connect}, bind_key=POOL
        )
    )
    app = FastAPI()
    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app):
        assert config.connection_instance is not None
    assert len(calls) == 3
    assert sample(registry, "db_client_connection_create_time_seconds_count") == 3
    assert (sample(registry, "db_client_connection_create_time_seconds_sum") or 0) > 0


async def test_psycopg_connection_create_time_through_the_connection_class(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """Each connection psycopg_pool opens is timed through its connection_class; the config's own class is kept."""
    import psycopg  # noqa: PLC0415 - the driver under test

    made: list[str] = []

    class OwnConnection(psycopg.AsyncConnection[Any]):
        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any) -> Any:
            made.append(cls.__name__)
            return await super().connect(*args, **kwargs)

    spec = SQLSpec()
    config = spec.add_config(
        PsycopgAsyncConfig(
            connection_config={"conninfo": pg.dsn, "min_size": 3, "connection_class": OwnConnection}, bind_key=POOL
        )
    )
    app = FastAPI()
    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app):
        # psycopg_pool opens min_size connections in the background once the pool is open
        await eventually(
            lambda: sample(registry, "db_client_connection_create_time_seconds_count") == 3,
            timeout=10,
            what="three timed connects",
        )
        async with config.provide_session() as session:
            assert isinstance(session.connection, OwnConnection)
    assert len(made) == 3
    assert (sample(registry, "db_client_connection_create_time_seconds_sum") or 0) > 0


async def test_leak_threshold_is_validated_and_a_short_one_warns(
    pg: PostgresServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """leak_threshold must be positive; below one second the app starts with a warning about false positives."""
    spec, _ = make_spec("asyncpg", pg)
    for bad in (0, -1, "1"):
        with pytest.raises(ValueError, match="leak_threshold"):
            SQLSpecOps(spec, registry=registry, leak_threshold=bad)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="sqlspec_ops")
    app = FastAPI()
    SQLSpecOps(spec, registry=registry, leak_threshold=0.5).instrument(app)
    async with serving(app):
        pass
    assert any("below 1 s" in r.getMessage() for r in caplog.records if r.name == "sqlspec_ops")


@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_fastapi_plugin_session_counts_statements_into_its_holder(
    adapter: str, pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """Statements run through SQLSpec's FastAPI plugin dependency are counted into that request's holder."""
    spec, _config = make_spec(adapter, pg)
    app = FastAPI()
    plugin = SQLSpecPlugin(spec, app)
    seen: list[dict[str, Any]] = []

    @app.get("/plugin/{n}")
    async def plugin_route(n: int, db: Annotated[Any, Depends(plugin.provide_session())]) -> int:
        for _ in range(n):
            await db.select_value("SELECT 1")
        seen.extend(app.state.sqlspec_ops.pools()[0].holders())
        return n

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/plugin/3", headers={"X-Request-ID": "plugin-req"})).json() == 3
    (holder,) = seen
    assert holder["route"] == "/plugin/{n}"
    assert holder["request_id"] == "plugin-req"
    assert holder["statements"] == 3
    assert holder["db_time_ms"] > 0


async def test_two_pools_in_one_task_keep_their_own_holders(
    pg: PostgresServer, registry: CollectorRegistry, tmp_path: Any
) -> None:
    """One task holding an asyncpg and an aiosqlite connection: each statement is counted on its own pool's holder."""
    spec, pg_config = make_spec("asyncpg", pg)
    lite = spec.add_config(
        AiosqliteConfig(connection_config={"database": str(tmp_path / "two.sqlite"), "pool_size": 1}, bind_key="lite")
    )
    app = FastAPI()
    seen: dict[str, list[dict[str, Any]]] = {}

    @app.get("/both")
    async def both() -> None:
        async with spec.provide_session(pg_config) as main, spec.provide_session(lite) as side:
            await main.select_value("SELECT 1")
            await side.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            await side.begin()
            await side.execute("INSERT INTO t VALUES (1)")
            await side.execute("INSERT INTO t VALUES (2)")
            for pool in app.state.sqlspec_ops.pools():
                seen[pool.name] = pool.holders()
            await side.rollback()

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/both")).status_code == 200
    ((main_holder,), (lite_holder,)) = seen[POOL], seen["lite"]
    assert main_holder["statements"] == 1
    assert main_holder["state"] == "idle"
    assert lite_holder["statements"] >= 3  # the CREATE, two INSERTs (and the BEGIN, if SQLSpec sends it as one)
    assert lite_holder["state"] == "idle in transaction"  # sqlite3's in_transaction
