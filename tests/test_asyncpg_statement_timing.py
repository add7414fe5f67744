"""Statement telemetry on asyncpg's own extension point (``connection_class``), SQLSpec left on its idle path.

On asyncpg sqlspec-ops registers no SQLSpec lifecycle hook (SQLSpec would then run its instrumented execution
path for every statement); a ``Connection`` subclass passed through asyncpg's ``connection_class`` pool argument
times each statement while the pool proxy has the connection out. These tests run against a real PostgreSQL and
check that the numbers are exactly those of the statements the app ran: not the pool's reset query, not the
``init`` callbacks, not asyncpg's type introspection, and including cancelled statements.
"""

import asyncio
import io
import json
import logging
from typing import Any

import asyncpg
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.exceptions import SQLSpecError
from sqlspec.observability import ObservabilityConfig

from sqlspec_ops import SQLSpecOps, configure_logging
from sqlspec_ops._adapters._operations import operation_of
from sqlspec_ops._adapters.asyncpg import TimedConnection
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

SECRET = "s3cret-parameter-value-9f2c"  # noqa: S105 - a marker grepped for in everything emitted


def _spec(pg: PostgresServer, **connection_config: Any) -> tuple[SQLSpec, AsyncpgConfig]:
    spec = SQLSpec()
    config = spec.add_config(
        AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 2, **connection_config})
    )
    return spec, config


async def test_asyncpg_path_counts_thousand_statements_with_hundred_failures(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """With no SQLSpec hook registered (SQLSpec idle), 1,000 statements of which 100 fail are counted exactly."""
    table = await create_table(pg)
    spec, config = _spec(pg)
    app = FastAPI()

    @app.post("/batch")
    async def batch() -> int:
        failed = 0
        async with spec.provide_session(config) as session:
            for index in range(100):
                try:
                    if index % 10 == 9:
                        await session.select_value("SELECT 1 / (0 * $1::int)", index)
                    elif index % 2:
                        await session.execute(f"INSERT INTO {table} (name, qty) VALUES ($1, $2)", "n", index)
                    else:
                        await session.select_value(f"SELECT count(*) FROM {table}")
                except SQLSpecError:
                    failed += 1
        return failed

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert not uses_sqlspec_hooks(config)
        assert config.get_observability_runtime().is_idle
        for _ in range(10):
            assert (await client.post("/batch")).json() == 10
    counts = duration_counts(registry)
    assert sum(counts.values()) == 1000
    assert label_sum(counts, error_type="22012") == 100
    assert label_sum(counts, error_type="") == 900
    assert label_sum(counts, db_operation_name="INSERT") == 400


async def test_reset_init_and_introspection_queries_are_not_counted(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """Only the app's statements count: not the user's init, asyncpg's type introspection or its reset on release."""
    connection = await asyncpg.connect(pg.dsn)
    try:
        await connection.execute("DROP TYPE IF EXISTS mood_t; CREATE TYPE mood_t AS ENUM ('ok', 'sad')")
    finally:
        await connection.close()
    init_ran: list[bool] = []

    async def init(conn: Any) -> None:
        await conn.execute("SET application_name = 'timing-test-init'")
        init_ran.append(True)

    spec, config = _spec(pg, init=init)
    app = FastAPI()

    @app.get("/mood")
    async def mood() -> str:
        async with spec.provide_session(config) as session:
            return str(await session.select_value("SELECT 'ok'::mood_t::text"))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        for _ in range(5):  # each request releases the connection: the pool resets it each time
            assert (await client.get("/mood")).json() == "ok"
    assert init_ran
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
            return int(await session.select_value("SELECT $1::int", 3))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        response = await client.get("/three")
    assert response.json() == 3
    assert response.headers["server-timing"].endswith('desc="3 queries"')


async def test_users_connection_class_is_subclassed_not_replaced(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A user's own connection_class keeps working (its override runs) and its statements are still timed."""
    calls: list[str] = []

    class AuditedConnection(asyncpg.Connection):
        async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
            calls.append(query)
            return await super().fetch(query, *args, **kwargs)

    spec, config = _spec(pg, connection_class=AuditedConnection)
    app = FastAPI()

    @app.get("/one")
    async def one() -> int:
        async with spec.provide_session(config) as session:
            return int(await session.select_value("SELECT 41 + 1"))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/one")).json() == 42
    assert issubclass(config.connection_config["connection_class"], AuditedConnection)
    assert issubclass(config.connection_config["connection_class"], TimedConnection)
    assert any("41" in call for call in calls)
    assert sum(duration_counts(registry).values()) == 1


async def test_user_asked_sqlspec_features_keep_sqlspec_hooks(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """Negative control: with print_sql on, SQLSpec's path runs anyway, so its hooks are used (counted once)."""
    spec = SQLSpec()
    config = spec.add_config(
        AsyncpgConfig(
            connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 1},
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
    assert "connection_class" not in config.connection_config
    assert sum(duration_counts(registry).values()) == 1  # not twice: the driver path stays off


async def test_no_parameter_or_password_in_labels_spans_or_logs(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """Raw parameters and the DSN's password reach no metric label, span attribute or log line on this path."""
    stream = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=stream)
    provider, exporter = provider_with_exporter()
    spec, config = _spec(pg)
    app = FastAPI()

    @app.get("/secret")
    async def secret() -> None:
        async with spec.provide_session(config) as session:
            await session.select_value("SELECT length($1::text)", SECRET)
            try:
                await session.select_value("SELECT 1 / (0 * length($1::text))", SECRET)
            except SQLSpecError:
                logging.getLogger("app").warning("statement failed")

    SQLSpecOps(spec, registry=registry, tracer_provider=provider, slow_query_threshold=1e-9).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/secret")).status_code == 200
        pools = (await client.get("/ops/pools")).text
    spans = statement_spans(exporter)
    assert len(spans) == 2
    texts = [generate_latest(registry).decode(), all_span_text(spans), stream.getvalue(), pools]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any("slow statement" in str(line.get("event", "")) for line in lines)  # the slow log did run
    for text in texts:
        assert SECRET not in text
        assert APP_PASSWORD not in text
    assert 'error_type="22012"' in texts[0]


def test_operation_names_match_sqlspecs() -> None:
    """The operation name comes from the statement's shape as SQLSpec names it; transaction control is skipped."""
    assert operation_of("select 1") == "SELECT"
    assert operation_of("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x") == "INSERT"
    assert operation_of("(SELECT 1) UNION (SELECT 2)") == "SELECT"
    assert operation_of("-- note\nUPDATE t SET a = 1") == "UPDATE"
    assert operation_of("/* c */ DELETE FROM t") == "DELETE"
    assert operation_of("CREATE TABLE t (a int)") == "DDL"
    assert operation_of("TRUNCATE t") == "DDL"
    assert operation_of("SET search_path TO public") == "COMMAND"
    for control in (
        "BEGIN",
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT s",
        "RELEASE SAVEPOINT s",
    ):
        assert operation_of(control) is None


async def test_statements_on_a_raw_connection_are_counted_while_borrowed(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """config.provide_connection() hands out asyncpg's own connection: the timing class counts what runs on it."""
    spec, config = _spec(pg)
    app = FastAPI()

    @app.get("/raw")
    async def raw() -> int:
        async with config.provide_connection() as connection:
            await connection.execute("SELECT 1")
            return int(await connection.fetchval("SELECT 2"))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        response = await client.get("/raw")
    assert response.json() == 2
    assert response.headers["server-timing"].endswith('desc="2 queries"')
    assert sum(duration_counts(registry).values()) == 2
