"""``SQLSpecOps(server_spans=True)``: one SERVER span per request, against real PostgreSQL (asyncpg).

Each app runs its statements through the ``spec.provide_session(config)`` dependency of SQLSpec's FastAPI
guide; spans go to an in-memory exporter of the test's own tracer provider.
"""

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from sqlspec.adapters.asyncpg import AsyncpgDriver
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

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

SECRET_PARAM = "server-span-secret-4d1e"  # noqa: S105 - a distinctive value for leak checks


@pytest.fixture
def instrumented_apps() -> Iterator[list[FastAPI]]:
    """Collect FastAPI apps the test instruments; undo the instrumentation (and its global patch) afterwards."""
    apps: list[FastAPI] = []
    yield apps
    for app in apps:
        FastAPIInstrumentor.uninstrument_app(app)


def server_spans(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    """Return the SERVER spans."""
    return [span for span in spans if span.kind is SpanKind.SERVER]


def message_spans(spans: tuple[ReadableSpan, ...]) -> list[str]:
    """Return the names of the instrumentation's per-message (``http send``/``http receive``) spans."""
    return [span.name for span in spans if span.name.endswith((" http send", " http receive"))]


def user_app(spec: Any, config: Any, table: str, *, lifespan_ran: list[str] | None = None) -> FastAPI:
    """Build a FastAPI app with ``GET /items/{name}`` (an INSERT and a SELECT) and ``GET /boom`` (raises)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if lifespan_ran is not None:
            lifespan_ran.append("startup")
        yield
        if lifespan_ran is not None:
            lifespan_ran.append("shutdown")

    app = FastAPI(lifespan=lifespan)
    db_session = session_dependency(spec, config)

    @app.get("/items/{name}")
    async def item(name: str, session: Annotated[AsyncpgDriver, Depends(db_session)]) -> dict[str, Any]:
        await session.execute(f"INSERT INTO {table} (name, qty) VALUES ($1, 1)", SECRET_PARAM)
        count = await session.select_value(f"SELECT count(*) FROM {table} WHERE name = $1", SECRET_PARAM)
        return {"name": name, "count": count}

    @app.get("/boom")
    async def boom(session: Annotated[AsyncpgDriver, Depends(db_session)]) -> None:
        await session.select_value("SELECT 1")
        msg = "the handler failed"
        raise RuntimeError(msg)

    return app


async def test_one_server_span_per_request_carries_the_request_id_and_parents_the_statements(
    pg: PostgresServer, registry: CollectorRegistry, instrumented_apps: list[FastAPI]
) -> None:
    """Each request gives one SERVER span named by its route, with ``request.id``, parent of its statement spans."""
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    provider, exporter = provider_with_exporter()
    app = user_app(spec, config, table)
    SQLSpecOps(spec, tracer_provider=provider, registry=registry, server_spans=True).instrument(app)
    instrumented_apps.append(app)
    async with serving(app) as client:
        sent = await client.get("/items/a", headers={"X-Request-ID": "server-span-request-1"})
        generated = await client.get("/items/b")
    assert (sent.status_code, generated.status_code) == (200, 200)

    finished = exporter.get_finished_spans()
    servers = server_spans(finished)
    assert [span.name for span in servers] == ["GET /items/{name}", "GET /items/{name}"]
    request_ids = [(span.attributes or {}).get("request.id") for span in servers]
    assert request_ids == ["server-span-request-1", generated.headers["x-request-id"]]
    statements = statement_spans(exporter)
    assert len(statements) == 4
    for server, pair in zip(servers, (statements[:2], statements[2:]), strict=True):
        for span in pair:
            assert span.parent is not None
            assert span.parent.span_id == server.context.span_id
            assert span.context.trace_id == server.context.trace_id
            assert (span.attributes or {}).get("request.id") == (server.attributes or {}).get("request.id")
    assert message_spans(finished) == []
    assert len(finished) == len(servers) + len(statements)  # nothing else: no send/receive, no lifecycle spans
    assert not [s for s in (SECRET_PARAM, APP_PASSWORD) if s in all_span_text(finished)]


async def test_the_message_span_check_finds_the_instrumentation_default(
    pg: PostgresServer, registry: CollectorRegistry, instrumented_apps: list[FastAPI]
) -> None:
    """Negative control: the instrumentation's defaults (called by hand) do make send/receive spans the check sees."""
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    provider, exporter = provider_with_exporter()
    app = user_app(spec, config, table)
    SQLSpecOps(spec, tracer_provider=provider, registry=registry).instrument(app)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    instrumented_apps.append(app)
    async with serving(app) as client:
        assert (await client.get("/items/c")).status_code == 200

    assert message_spans(exporter.get_finished_spans()) != []


async def test_ops_endpoints_make_no_spans_and_the_app_lifespan_still_runs(
    pg: PostgresServer, registry: CollectorRegistry, instrumented_apps: list[FastAPI]
) -> None:
    """``/ops`` endpoints answer without traces, statements are still counted, and the app's own lifespan runs."""
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    provider, exporter = provider_with_exporter()
    lifespan_ran: list[str] = []
    app = user_app(spec, config, table, lifespan_ran=lifespan_ran)
    SQLSpecOps(spec, tracer_provider=provider, registry=registry, server_spans=True).instrument(app)
    instrumented_apps.append(app)
    async with serving(app) as client:
        assert lifespan_ran == ["startup"]
        response = await client.get("/items/d")
        assert response.headers["server-timing"].endswith('desc="2 queries"')
        exporter.clear()
        assert (await client.get("/ops/live")).status_code == 200
        assert (await client.get("/ops/ready")).status_code == 200
        metrics = await client.get("/ops/metrics")
        assert metrics.status_code == 200
    assert lifespan_ran == ["startup", "shutdown"]
    assert "db_client_operation_duration_seconds" in metrics.text
    assert sum(duration_counts(registry).values()) >= 2
    assert server_spans(exporter.get_finished_spans()) == []


async def test_an_unhandled_exception_fails_the_server_span_and_the_response_keeps_its_id(
    pg: PostgresServer, registry: CollectorRegistry, instrumented_apps: list[FastAPI]
) -> None:
    """A handler that raises gives a 500 carrying the request ID and an ERROR server span tagged with that ID."""
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    provider, exporter = provider_with_exporter()
    app = user_app(spec, config, table)
    SQLSpecOps(spec, tracer_provider=provider, registry=registry, server_spans=True).instrument(app)
    instrumented_apps.append(app)
    async with serving(app, raise_app_exceptions=False) as client:
        response = await client.get("/boom", headers={"X-Request-ID": "server-span-boom"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "server-span-boom"

    finished = exporter.get_finished_spans()
    (server,) = server_spans(finished)
    assert server.status.status_code is StatusCode.ERROR
    assert (server.attributes or {}).get("request.id") == "server-span-boom"
    (statement,) = statement_spans(exporter)
    assert statement.parent is not None
    assert statement.parent.span_id == server.context.span_id


async def test_a_starlette_app_gets_its_server_span_from_the_asgi_middleware(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A plain Starlette app gets one SERVER span per request, named by route template, parent of its statements."""
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    provider, exporter = provider_with_exporter()

    async def item(request: Request) -> JSONResponse:
        async with spec.provide_session(config) as session:
            count = await session.select_value(f"SELECT count(*) FROM {table} WHERE name = $1", SECRET_PARAM)
        return JSONResponse({"name": request.path_params["name"], "count": count})

    app = Starlette(routes=[Route("/things/{name}", item)])
    SQLSpecOps(spec, tracer_provider=provider, registry=registry, server_spans=True).instrument(app)
    async with serving(app) as client:
        response = await client.get("/things/x", headers={"X-Request-ID": "starlette-span-1"})
        assert response.status_code == 200
        assert (await client.get("/ops/live")).status_code == 200

    finished = exporter.get_finished_spans()
    (server,) = server_spans(finished)
    assert server.name == "GET /things/{name}"
    assert (server.attributes or {}).get("request.id") == "starlette-span-1"
    (statement,) = statement_spans(exporter)
    assert statement.parent is not None
    assert statement.parent.span_id == server.context.span_id
    assert message_spans(finished) == []


def test_server_spans_refuse_an_app_the_fastapi_instrumentation_has_already(
    pg: PostgresServer, registry: CollectorRegistry, instrumented_apps: list[FastAPI]
) -> None:
    """An app FastAPIInstrumentor instrumented already is refused with a message, and nothing is installed."""
    spec, config = asyncpg_spec(pg)
    provider, _ = provider_with_exporter()
    app = FastAPI()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    instrumented_apps.append(app)
    ops = SQLSpecOps(spec, tracer_provider=provider, registry=registry, server_spans=True)
    with pytest.raises(RuntimeError, match="already instrumented by opentelemetry-instrumentation-fastapi"):
        ops.instrument(app)
    assert getattr(app.state, "sqlspec_ops", None) is None
    assert config.connection_instance is None  # no pool proxy installed


def test_importing_the_package_loads_no_opentelemetry_sdk_or_instrumentation() -> None:
    """Importing sqlspec_ops and building ``SQLSpecOps(server_spans=True)`` loads no OTel SDK or instrumentation."""
    code = (
        "import sys, sqlspec_ops\n"
        "from sqlspec import SQLSpec\n"
        "sqlspec_ops.SQLSpecOps(SQLSpec(), server_spans=True)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.instrumentation'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
