"""Statement spans against real PostgreSQL (asyncpg): stable conventions, parenting, privacy, providers, sampling.

Every request runs the same three statements through the ``spec.provide_session(config)`` dependency of
SQLSpec's FastAPI guide: an INSERT, a SELECT and a SELECT that divides by zero. Parameter and literal values
are distinctive strings and numbers, so a leak anywhere in a span shows up in a plain substring search.
"""

from collections.abc import Iterator
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry, generate_latest
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig, AsyncpgDriver
from sqlspec.exceptions import SQLSpecError

from sqlspec_ops import SQLSpecOps
from tests.support.asgi import serving
from tests.support.postgres import APP_PASSWORD, PostgresServer
from tests.support.statements import (
    all_span_text,
    asyncpg_spec,
    create_table,
    duration_counts,
    provider_with_exporter,
    session_dependency,
    statement_spans,
)

INSERT_PARAM = "param-secret-insert-5e1f"
SELECT_PARAM = "param-secret-select-a7c2"
SELECT_LITERAL = "literal-secret-9b2c"
FAIL_PARAM = 271828
FAIL_LITERAL = 31337
SECRETS = (INSERT_PARAM, SELECT_PARAM, SELECT_LITERAL, str(FAIL_PARAM), str(FAIL_LITERAL), APP_PASSWORD)
REQUEST_ID = "spans-test-request-1"


def add_order_route(app: FastAPI, spec: SQLSpec, config: AsyncpgConfig, table: str) -> None:
    """Add ``POST /orders/{kind}``: an INSERT, a SELECT and a failing SELECT on one session."""
    db_session = session_dependency(spec, config)

    @app.post("/orders/{kind}")
    async def run(kind: str, session: Annotated[AsyncpgDriver, Depends(db_session)]) -> dict[str, object]:
        await session.execute(f"INSERT INTO {table} (name, qty) VALUES ($1, 7)", INSERT_PARAM)
        count = await session.select_value(
            f"SELECT count(*) FROM {table} WHERE name = $1 OR name = '{SELECT_LITERAL}'", SELECT_PARAM
        )
        try:
            await session.select_value(f"SELECT {FAIL_LITERAL} / (0 * $1::int)", FAIL_PARAM)
        except SQLSpecError as exc:
            return {"kind": kind, "count": count, "failed": type(exc).__name__}
        return {"kind": kind, "count": count, "failed": None}


def check_statement_spans(spans: list[ReadableSpan], table: str, pg: PostgresServer) -> None:
    """Assert the three statement spans carry the stable conventions (and nothing else of note)."""
    assert [span.name for span in spans] == [f"INSERT {table}", f"SELECT {table}", "SELECT"]
    insert, select, failed = spans
    common = {
        "db.system.name": "postgresql",
        "db.namespace": "appdb",
        "server.address": "127.0.0.1",
        "server.port": pg.port,
        "request.id": REQUEST_ID,
    }
    assert dict(insert.attributes or {}) == {
        **common,
        "db.operation.name": "INSERT",
        "db.collection.name": table,
        "db.query.summary": f"INSERT {table}",
        "db.query.text": f"INSERT INTO {table} (name, qty) VALUES ($1, ?)",
    }
    assert dict(select.attributes or {}) == {
        **common,
        "db.operation.name": "SELECT",
        "db.collection.name": table,
        "db.query.summary": f"SELECT {table}",
        "db.query.text": f"SELECT count(*) FROM {table} WHERE name = $1 OR name = ?",
    }
    assert dict(failed.attributes or {}) == {
        **common,
        "db.operation.name": "SELECT",
        "db.query.summary": "SELECT",
        "db.query.text": "SELECT ? / (? * $1::int)",
        "error.type": "22012",
        "db.response.status_code": "22012",
    }
    assert [span.status.status_code for span in spans] == [StatusCode.UNSET, StatusCode.UNSET, StatusCode.ERROR]
    assert all(span.kind is SpanKind.CLIENT for span in spans)


@pytest.mark.parametrize("instrumentor_first", [False, True], ids=["instrumentor-after-ops", "instrumentor-first"])
async def test_statement_spans_are_children_of_the_instrumentor_server_span(
    pg: PostgresServer, registry: CollectorRegistry, instrumentor_first: bool
) -> None:
    """An INSERT, a SELECT and a failing SELECT give three stable-convention CLIENT spans under the server span."""
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    provider, exporter = provider_with_exporter()
    app = FastAPI()
    add_order_route(app, spec, config, table)
    ops = SQLSpecOps(spec, tracer_provider=provider, registry=registry)
    if instrumentor_first:
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
        ops.instrument(app)
    else:
        ops.instrument(app)
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        async with serving(app) as client:
            response = await client.post("/orders/retail", headers={"X-Request-ID": REQUEST_ID})
            assert response.json() == {"kind": "retail", "count": 0, "failed": "DataError"}
    finally:
        FastAPIInstrumentor.uninstrument_app(app)

    finished = exporter.get_finished_spans()
    servers = [span for span in finished if span.kind is SpanKind.SERVER]
    assert [span.name for span in servers] == ["POST /orders/{kind}"]
    server = servers[0]
    spans = statement_spans(exporter)
    assert [span for span in finished if span.kind is SpanKind.CLIENT] == spans
    check_statement_spans(spans, table, pg)
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id
        assert span.context.trace_id == server.context.trace_id
    assert not [span.name for span in finished if span.name.startswith("sqlspec")]  # no lifecycle spans
    if not instrumentor_first:  # our middleware runs inside the server span and tags it
        assert (server.attributes or {}).get("request.id") == REQUEST_ID
    leaks = all_span_text(finished) + generate_latest(registry).decode()
    assert not [secret for secret in SECRETS if secret in leaks]


@pytest.mark.parametrize("operation_spans", [False, True], ids=["server-span-only", "with-operation-spans"])
async def test_statement_spans_are_children_of_fastapi_native_server_span(
    pg: PostgresServer, registry: CollectorRegistry, operation_spans: bool
) -> None:
    """With FastAPI's own telemetry the statement spans hang under its server span (via its endpoint span if any)."""
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    provider, exporter = provider_with_exporter()
    app = FastAPI(telemetry={"tracer_provider": provider, "operation_spans": operation_spans})
    add_order_route(app, spec, config, table)
    SQLSpecOps(spec, tracer_provider=provider, registry=registry).instrument(app)
    async with serving(app) as client:
        response = await client.post("/orders/web", headers={"X-Request-ID": REQUEST_ID})
        assert response.status_code == 200

    finished = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in finished}
    (server,) = [span for span in finished if span.kind is SpanKind.SERVER]
    assert server.name == "POST /orders/{kind}"
    assert (server.attributes or {}).get("request.id") == REQUEST_ID
    spans = statement_spans(exporter)
    check_statement_spans(spans, table, pg)
    for span in spans:
        assert span.parent is not None
        parent = by_id[span.parent.span_id]
        if operation_spans:
            assert parent.name == "fastapi.endpoint"
            assert parent.parent is not None
            assert parent.parent.span_id == server.context.span_id
        else:
            assert parent is server
    assert not [secret for secret in SECRETS if secret in all_span_text(finished)]


@pytest.fixture
def global_provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """Install an SDK provider as OpenTelemetry's global one for one test, then put the previous state back."""
    provider, exporter = provider_with_exporter()
    once = trace._TRACER_PROVIDER_SET_ONCE
    saved = (trace._TRACER_PROVIDER, once._done)
    once._done = False
    trace.set_tracer_provider(provider)
    try:
        yield provider, exporter
    finally:
        trace._TRACER_PROVIDER, once._done = saved


async def test_spans_go_to_the_global_provider_without_the_option(
    pg: PostgresServer, registry: CollectorRegistry, global_provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Without ``tracer_provider`` the statement spans go to the global provider."""
    _, exporter = global_provider
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    app = FastAPI()
    add_order_route(app, spec, config, table)
    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        response = await client.post("/orders/global", headers={"X-Request-ID": REQUEST_ID})
        assert response.status_code == 200

    check_statement_spans(statement_spans(exporter), table, pg)


async def test_the_option_wins_over_the_global_provider(
    pg: PostgresServer, registry: CollectorRegistry, global_provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """With ``tracer_provider`` set, statement spans go there and not to the global provider."""
    _, global_exporter = global_provider
    provider, exporter = provider_with_exporter()
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    app = FastAPI()
    add_order_route(app, spec, config, table)
    SQLSpecOps(spec, tracer_provider=provider, registry=registry).instrument(app)
    async with serving(app) as client:
        await client.post("/orders/option", headers={"X-Request-ID": REQUEST_ID})

    assert len(statement_spans(exporter)) == 3
    assert statement_spans(global_exporter) == []


async def test_a_provider_sampling_nothing_records_no_statement_spans(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A ``TraceIdRatioBased(0)`` provider records no statement span while the metric still counts every statement."""
    provider, exporter = provider_with_exporter(TraceIdRatioBased(0))
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    app = FastAPI()
    add_order_route(app, spec, config, table)
    SQLSpecOps(spec, tracer_provider=provider, registry=registry).instrument(app)
    async with serving(app) as client:
        for _ in range(3):
            assert (await client.post("/orders/unsampled")).status_code == 200

    assert exporter.get_finished_spans() == ()
    assert sum(duration_counts(registry).values()) == 9


@pytest.mark.parametrize("sampled", [True, False])
async def test_statement_spans_follow_the_incoming_sampling_decision(
    pg: PostgresServer, registry: CollectorRegistry, sampled: bool
) -> None:
    """With the default parent-based sampler, an incoming ``traceparent`` decides, and its trace ID is kept."""
    provider, exporter = provider_with_exporter()
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    app = FastAPI(telemetry={"tracer_provider": provider, "operation_spans": False})
    add_order_route(app, spec, config, table)
    SQLSpecOps(spec, tracer_provider=provider, registry=registry).instrument(app)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    flags = "01" if sampled else "00"
    async with serving(app) as client:
        response = await client.post(
            "/orders/propagated", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-{flags}"}
        )
        assert response.status_code == 200

    spans = statement_spans(exporter)
    if sampled:
        assert len(spans) == 3
        assert {f"{span.context.trace_id:032x}" for span in spans} == {trace_id}
    else:
        assert spans == []
    assert sum(duration_counts(registry).values()) == 3
