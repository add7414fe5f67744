"""Sessions injected by SQLSpec's own FastAPI plugin get statement spans and metrics too (real PostgreSQL).

SQLSpec 0.69's ``SQLSpecPlugin`` builds its sessions without the config's observability runtime, so without
sqlspec-ops their statements reach no hook at all.
"""

from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig, AsyncpgDriver
from sqlspec.exceptions import SQLSpecError
from sqlspec.extensions.fastapi import SQLSpecPlugin

from sqlspec_ops import SQLSpecOps
from tests.support.asgi import serving
from tests.support.postgres import PostgresServer
from tests.support.statements import (
    all_span_text,
    create_table,
    duration_counts,
    label_sum,
    provider_with_exporter,
    statement_spans,
)


@pytest.mark.parametrize("plugin_first", [True, False], ids=["plugin-then-ops", "ops-then-plugin"])
async def test_plain_plugin_app_gets_spans_and_metrics(
    pg: PostgresServer, registry: CollectorRegistry, plugin_first: bool
) -> None:
    """A plain ``SQLSpecPlugin`` app's statements become spans under the server span and are all counted."""
    table = await create_table(pg)
    spec = SQLSpec()
    spec.add_config(AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 2}))
    provider, exporter = provider_with_exporter()
    app = FastAPI(telemetry={"tracer_provider": provider, "operation_spans": False})
    plugin = SQLSpecPlugin(spec)
    ops = SQLSpecOps(spec, tracer_provider=provider, registry=registry)
    if plugin_first:
        plugin.init_app(app)
        ops.instrument(app)
    else:
        ops.instrument(app)
        plugin.init_app(app)

    @app.post("/notes")
    async def add_note(db: Annotated[AsyncpgDriver, Depends(plugin.provide_session())]) -> dict[str, object]:
        await db.execute(f"INSERT INTO {table} (name) VALUES ($1)", "plugin-param-1d4c")
        count = await db.select_value(f"SELECT count(*) FROM {table}")
        try:
            await db.select_value("SELECT 1 / 0")
        except SQLSpecError as exc:
            return {"count": count, "failed": type(exc).__name__}
        return {"count": count, "failed": None}

    async with serving(app) as client:
        response = await client.post("/notes")
        assert response.json() == {"count": 1, "failed": "DataError"}

    finished = exporter.get_finished_spans()
    (server,) = [span for span in finished if span.kind is SpanKind.SERVER]
    spans = statement_spans(exporter)
    assert [span.name for span in spans] == [f"INSERT {table}", f"SELECT {table}", "SELECT"]
    assert [span.parent.span_id if span.parent else None for span in spans] == [server.context.span_id] * 3
    assert (spans[2].attributes or {}).get("db.response.status_code") == "22012"
    assert "plugin-param-1d4c" not in all_span_text(finished)
    counts = duration_counts(registry)
    assert sum(counts.values()) == 3
    assert label_sum(counts, error_type="22012") == 1


async def test_plugin_sessions_of_a_second_database_are_attributed_to_its_pool(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """With two configs, a session asked for by its key is observed with that config's hooks (its pool label)."""
    spec = SQLSpec()
    spec.add_config(AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 1}, bind_key="primary"))
    spec.add_config(
        AsyncpgConfig(
            connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 1},
            bind_key="reports",
            extension_config={
                "fastapi": {"session_key": "reports_db", "connection_key": "reports_conn", "pool_key": "reports_pool"}
            },
        )
    )
    app = FastAPI()
    plugin = SQLSpecPlugin(spec, app)

    @app.get("/report")
    async def report(
        primary: Annotated[AsyncpgDriver, Depends(plugin.provide_session())],
        reports: Annotated[AsyncpgDriver, Depends(plugin.provide_session("reports_db"))],
    ) -> int:
        await primary.select_value("SELECT 1")
        return int(await reports.select_value("SELECT 2")) + int(await reports.select_value("SELECT 3"))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/report")).json() == 5

    counts = duration_counts(registry)
    assert label_sum(counts, db_client_connection_pool_name="primary") == 1
    assert label_sum(counts, db_client_connection_pool_name="reports") == 2
