"""Statement telemetry on psycopg's own extension point (``cursor_factory``), SQLSpec left on its idle path.

On psycopg sqlspec-ops registers no SQLSpec lifecycle hook (SQLSpec would then run its instrumented execution
path for every statement); an ``AsyncCursor`` subclass passed as the connections' ``cursor_factory`` times each
statement while the pool proxy has the connection out. These tests run against a real PostgreSQL and check that
the numbers are exactly those of the statements the app ran: not psycopg_pool's check or reset, not the
``configure`` callback, not sqlspec-ops' own pings, and including cancelled statements.
"""

import asyncio
import io
import json
import logging
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from psycopg_pool import AsyncConnectionPool
from sqlspec import SQLSpec
from sqlspec.adapters.psycopg import PsycopgAsyncConfig
from sqlspec.core import SQL
from sqlspec.exceptions import SQLSpecError
from sqlspec.observability import ObservabilityConfig

from sqlspec_ops import SQLSpecOps, configure_logging
from sqlspec_ops._adapters._operations import operation_of
from sqlspec_ops._adapters.psycopg import TimedCursor
from tests.support.asgi import serving
from tests.support.postgres import APP_PASSWORD, PostgresServer
from tests.support.statements import (
    all_span_text,
    assert_one_cancelled_span,
    create_table,
    duration_counts,
    label_sum,
    provider_with_exporter,
    statement_spans,
    uses_sqlspec_hooks,
)
from tests.support.waiting import eventually

SECRET = "s3cret-parameter-value-9f2c"  # noqa: S105 - a marker grepped for in everything emitted
POOL = "main"


def _spec(pg: PostgresServer, **connection_config: Any) -> tuple[SQLSpec, PsycopgAsyncConfig]:
    spec = SQLSpec()
    config = spec.add_config(
        PsycopgAsyncConfig(
            connection_config={"conninfo": pg.conninfo(), "min_size": 1, "max_size": 2, **connection_config},
            bind_key=POOL,
        )
    )
    return spec, config


async def _holders(client: Any) -> list[dict[str, Any]]:
    body = (await client.get("/ops/pools")).json()
    (entry,) = [p for p in body["pools"] if p["name"] == POOL]
    holders: list[dict[str, Any]] = entry["holders"]
    return holders


async def test_psycopg_path_counts_thousand_statements_with_hundred_failures(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """With no SQLSpec hook registered (SQLSpec idle), 1,000 statements of which 100 fail are counted exactly."""
    table = await create_table(pg)
    spec, config = _spec(pg, autocommit=True)  # a failure does not abort the statements after it
    app = FastAPI()

    @app.post("/batch")
    async def batch() -> int:
        failed = 0
        async with spec.provide_session(config) as session:
            for index in range(100):
                try:
                    if index % 10 == 9:
                        await session.select_value("SELECT 1 / (0 * %s::int)", index)
                    elif index % 2:
                        await session.execute(f"INSERT INTO {table} (name, qty) VALUES (%s, %s)", "n", index)
                    else:
                        await session.select_value(f"SELECT count(*) FROM {table}")
                except SQLSpecError:
                    failed += 1
        return failed

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert not uses_sqlspec_hooks(config)
        assert config.get_observability_runtime().is_idle
        assert issubclass(config.connection_config["cursor_factory"], TimedCursor)
        for _ in range(10):
            assert (await client.post("/batch")).json() == 10
    counts = duration_counts(registry)
    assert sum(counts.values()) == 1000
    assert label_sum(counts, error_type="22012") == 100
    assert label_sum(counts, error_type="") == 900
    assert label_sum(counts, db_operation_name="INSERT") == 400


async def test_check_configure_reset_and_pings_are_not_counted(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """Only the app's statements count: not psycopg_pool's check and reset, the configure callback or health pings."""
    ran: list[str] = []

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SET application_name = 'timing-test-configure'")
        ran.append("configure")

    async def reset(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("RESET search_path")
        ran.append("reset")

    async def check(conn: psycopg.AsyncConnection[Any]) -> None:
        await AsyncConnectionPool.check_connection(conn)
        await conn.execute("SELECT 'checked'")
        ran.append("check")

    spec, config = _spec(pg, configure=configure, reset=reset, check=check, autocommit=True)
    app = FastAPI()

    @app.get("/one")
    async def one() -> int:
        async with spec.provide_session(config) as session:
            return int(await session.select_value("SELECT 1"))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        for _ in range(5):  # each request borrows: the pool checks the connection, then resets it on return
            assert (await client.get("/one")).json() == 1
        assert (await client.get("/ops/health")).status_code == 200  # a ping through the proxy's connection
    assert {"configure", "check", "reset"} <= set(ran)
    counts = duration_counts(registry)
    assert sum(counts.values()) == 5
    assert label_sum(counts, db_operation_name="SELECT") == 5


async def test_cancelled_statement_is_counted_and_its_span_fails(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A statement cut off by asyncio.timeout is counted with error_type CancelledError and its span ends failed."""
    provider, exporter = provider_with_exporter()
    spec, config = _spec(pg)
    app = FastAPI()

    @app.get("/cut")
    async def cut() -> str:
        async with spec.provide_session(config) as session:
            try:
                async with asyncio.timeout(0.3):
                    await session.select_value("SELECT pg_sleep(2)")
            except TimeoutError:
                return "timed out"
        return "finished"

    SQLSpecOps(spec, registry=registry, tracer_provider=provider).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/cut")).json() == "timed out"
        assert not uses_sqlspec_hooks(config)
    counts = duration_counts(registry)
    assert label_sum(counts, error_type="CancelledError", db_operation_name="SELECT") == 1
    assert sum(counts.values()) == 1
    assert_one_cancelled_span(exporter)


async def test_server_timing_counts_the_three_statements_of_a_request(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A request running 3 statements (the last right before the response) answers Server-Timing "3 queries"."""
    spec, config = _spec(pg)
    app = FastAPI()

    @app.get("/three")
    async def three() -> int:
        async with spec.provide_session(config) as session:
            await session.select_value("SELECT 1")
            await session.execute("SELECT 2")
            return int(await session.select_value("SELECT %s::int", 3))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        response = await client.get("/three")
    assert response.json() == 3
    assert response.headers["server-timing"].endswith('desc="3 queries"')


async def test_copy_and_executemany_count_once_each(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """COPY FROM STDIN, COPY TO STDOUT and an executemany of 2 rows count once each, named as SQLSpec names them."""
    table = await create_table(pg)
    spec, config = _spec(pg)
    app = FastAPI()

    @app.get("/bulk")
    async def bulk() -> str:
        async with spec.provide_session(config) as session:
            await session.execute(f"COPY {table} (name, qty) FROM STDIN", "a\t1\nb\t2\n")
            await session.execute_many(f"INSERT INTO {table} (name, qty) VALUES (%s, %s)", [("c", 3), ("d", 4)])
            result = await session.execute(f"COPY (SELECT name FROM {table} ORDER BY id) TO STDOUT")
            return str(result.data)

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        text = (await client.get("/bulk")).json()
    assert all(name in text for name in "abcd")
    counts = duration_counts(registry)
    assert label_sum(counts, db_operation_name="COPY_FROM", error_type="") == 1
    assert label_sum(counts, db_operation_name="COPY_TO", error_type="") == 1
    assert label_sum(counts, db_operation_name="INSERT", error_type="") == 1
    assert sum(counts.values()) == 3


@pytest.mark.parametrize("where", ["top level", "kwargs"])
async def test_users_cursor_factory_is_subclassed_not_replaced(
    where: str, pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A user's own cursor_factory (top level or in kwargs) keeps working (its override runs) and is still timed."""
    calls: list[str] = []

    class AuditedCursor(psycopg.AsyncClientCursor[Any]):
        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            calls.append(str(query))
            return await super().execute(query, params, **kwargs)

    option: dict[str, Any] = (
        {"cursor_factory": AuditedCursor}
        if where == "top level"
        else {"cursor_factory": psycopg.AsyncRawCursor, "kwargs": {"cursor_factory": AuditedCursor}}
    )
    spec, config = _spec(pg, **option)
    app = FastAPI()

    @app.get("/one")
    async def one() -> int:
        async with spec.provide_session(config) as session:
            return int(await session.select_value("SELECT 41 + %s", 1))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/one")).json() == 42
    cc = config.connection_config
    used = cc["cursor_factory"] if where == "top level" else cc["kwargs"]["cursor_factory"]
    assert issubclass(used, AuditedCursor)
    assert issubclass(used, TimedCursor)
    assert any("41" in call for call in calls)
    assert sum(duration_counts(registry).values()) == 1
    assert not uses_sqlspec_hooks(config)


async def test_non_cursor_factory_keeps_sqlspec_hooks(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """Negative control: a cursor_factory that is no AsyncCursor class is left alone and SQLSpec's hooks count."""

    def factory(conn: Any, *, row_factory: Any = None) -> psycopg.AsyncCursor[Any]:
        return psycopg.AsyncCursor(conn, row_factory=row_factory or conn.row_factory)

    spec, config = _spec(pg, cursor_factory=factory)
    app = FastAPI()

    @app.get("/one")
    async def one() -> int:
        async with spec.provide_session(config) as session:
            return int(await session.select_value("SELECT 1"))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/one")).json() == 1
    assert config.connection_config["cursor_factory"] is factory
    assert uses_sqlspec_hooks(config)
    assert sum(duration_counts(registry).values()) == 1


async def test_user_asked_sqlspec_features_keep_sqlspec_hooks(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """Negative control: with print_sql on, SQLSpec's path runs anyway, so its hooks are used (counted once)."""
    spec = SQLSpec()
    config = spec.add_config(
        PsycopgAsyncConfig(
            connection_config={"conninfo": pg.conninfo(), "min_size": 1, "max_size": 1},
            observability_config=ObservabilityConfig(print_sql=True),
        )
    )
    app = FastAPI()

    @app.get("/one")
    async def one() -> int:
        async with spec.provide_session(config) as session:
            return int(await session.select_value("SELECT 1"))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/one")).json() == 1
    assert uses_sqlspec_hooks(config)
    assert "cursor_factory" not in config.connection_config
    assert sum(duration_counts(registry).values()) == 1  # not twice: the driver path stays off


async def test_no_parameter_or_password_in_labels_spans_or_logs(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """Raw parameters and the conninfo's password reach no metric label, span attribute or log line on this path."""
    stream = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=stream)
    provider, exporter = provider_with_exporter()
    spec, config = _spec(pg)
    app = FastAPI()

    @app.get("/secret")
    async def secret() -> None:
        async with spec.provide_session(config) as session:
            await session.select_value("SELECT length(%s::text)", SECRET)
            try:
                await session.select_value("SELECT 1 / (0 * length(%s::text))", SECRET)
            except SQLSpecError:
                logging.getLogger("app").warning("statement failed")

    SQLSpecOps(spec, registry=registry, tracer_provider=provider, slow_query_threshold=1e-9).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/secret")).status_code == 200
        pools = (await client.get("/ops/pools")).text
    assert not uses_sqlspec_hooks(config)
    spans = statement_spans(exporter)
    assert len(spans) == 2
    texts = [generate_latest(registry).decode(), all_span_text(spans), stream.getvalue(), pools]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any("slow statement" in str(line.get("event", "")) for line in lines)  # the slow log did run
    for text in texts:
        assert SECRET not in text
        assert APP_PASSWORD not in text
    assert 'error_type="22012"' in texts[0]


async def test_holder_shows_the_running_statement_then_its_count(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """While pg_sleep runs /ops/pools lists the holder as executing with its summary; after it, its statement count."""
    spec, config = _spec(pg)
    app = FastAPI()
    go_on = asyncio.Event()

    @app.get("/hold")
    async def hold() -> None:
        async with spec.provide_session(config) as session:
            await session.select_value("SELECT 1")
            await session.select_value("SELECT pg_sleep(0.8)")
            await go_on.wait()

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        request = asyncio.create_task(client.get("/hold", headers={"X-Request-ID": "hold-req-1"}))

        async def executing() -> bool:
            holders = await _holders(client)
            return bool(holders) and holders[0]["state"] == "executing"

        await eventually(executing, timeout=5, what="an executing holder")
        (holder,) = await _holders(client)
        assert holder["request_id"] == "hold-req-1"
        assert holder["current_statement"] == "SELECT"
        assert holder["statements"] == 1  # the first one finished, the second is running
        assert "pg_sleep" not in str(holder)  # the summary, never the statement's text

        async def done() -> bool:
            holders = await _holders(client)
            # "idle in transaction": psycopg's connections open a transaction with the first statement
            return bool(holders) and holders[0]["state"] != "executing" and holders[0]["statements"] == 2

        await eventually(done, timeout=5, what="a holder done with its two statements")
        (holder,) = await _holders(client)
        assert holder["current_statement"] is None
        assert holder["db_time_ms"] >= 800  # at least the sleep the statement itself ran
        go_on.set()
        assert (await request).status_code == 200
        assert await _holders(client) == []
    assert not uses_sqlspec_hooks(config)
    assert sum(duration_counts(registry).values()) == 2


async def test_pipeline_statements_and_untimed_queries_pass_through(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """Statements queued in pipeline mode and sql.Composed queries run untimed, as SQLSpec's hooks never see them."""
    spec, config = _spec(pg)
    app = FastAPI()

    @app.get("/raw")
    async def raw() -> list[Any]:
        async with config.provide_connection() as conn:
            async with conn.pipeline():
                first = await conn.execute("SELECT 1")
                second = await conn.execute("SELECT 2")
            composed = await conn.execute(psycopg.sql.SQL("SELECT {}").format(psycopg.sql.Literal(3)))
            text = await conn.execute("SELECT 4")  # plain text on the raw connection is timed
            rows: list[Any] = [await cursor.fetchone() for cursor in (first, second, composed, text)]
        return [row[0] for row in rows if row is not None]

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/raw")).json() == [1, 2, 3, 4]
    assert sum(duration_counts(registry).values()) == 1


def test_copy_operation_names_match_sqlspecs() -> None:
    """COPY is named by its direction exactly as SQLSpec's own compiler names it (COPY_FROM, COPY_TO)."""
    expected = {
        "COPY t (a, b) FROM STDIN": "COPY_FROM",
        "COPY (SELECT 1) TO STDOUT": "COPY_TO",
        "copy t to stdout with (format csv)": "COPY_TO",
    }
    for text, name in expected.items():
        statement = SQL(text)
        statement.compile()
        assert statement.operation_type == name
        assert operation_of(text) == name
