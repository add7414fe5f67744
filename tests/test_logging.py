"""configure_logging: one JSON pipeline where SQLSpec's, the app's and uvicorn's lines carry the request ID."""

import io
import json
import logging
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.observability import ObservabilityConfig

from sqlspec_ops import SQLSpecOps, configure_logging, get_request_id
from tests.support.asgi import serving
from tests.support.postgres import APP_PASSWORD, PostgresServer
from tests.support.readme import readme_blocks

SECRET = "hunter2-secret-parameter"  # noqa: S105 - a marker grepped for in the log output


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in stream.getvalue().splitlines()]


def _statement_app(pg: PostgresServer, registry: CollectorRegistry) -> FastAPI:
    """A FastAPI app whose route runs one parameterised statement on PostgreSQL and logs twice."""
    spec = SQLSpec()
    db = spec.add_config(
        AsyncpgConfig(
            connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 2},
            bind_key="main",
            observability_config=ObservabilityConfig(print_sql=True),
        )
    )
    app = FastAPI()

    @app.get("/lookup")
    async def lookup() -> dict[str, Any]:
        async with spec.provide_session(db) as session:
            value = await session.select_value("SELECT length(:secret::text)", {"secret": SECRET})
        structlog.get_logger("app.routes").info("looked up", length=value)
        logging.getLogger("app.stdlib").warning("stdlib line")
        return {"length": value}

    return SQLSpecOps(spec, registry=registry).instrument(app)


async def test_sqlspec_statement_record_carries_the_request_id(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """On asyncpg, X-Request-ID abc-123 ends up on the sqlspec.sql line, the app's lines and the response."""
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    async with serving(_statement_app(pg, registry)) as client:
        response = await client.get("/lookup", headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc-123"

    lines = _lines(stream)
    [sql] = [line for line in lines if line["logger"] == "sqlspec.sql" and "length" in line.get("db.statement", "")]
    assert sql["request_id"] == "abc-123"
    assert sql["db.operation"] == "SELECT"
    assert sql["db.system"] == "postgresql"
    assert isinstance(sql["duration_ms"], float)
    assert sql["db.statement.hash"]
    assert "parameters" not in sql
    [app_line] = [line for line in lines if line["logger"] == "app.routes"]
    assert app_line["request_id"] == "abc-123"
    assert app_line["length"] == len(SECRET)
    [stdlib_line] = [line for line in lines if line["logger"] == "app.stdlib"]
    assert stdlib_line["request_id"] == "abc-123"
    assert stdlib_line["level"] == "warning"
    # Parameters and the DSN's password never reach a log line.
    assert SECRET not in stream.getvalue()
    assert APP_PASSWORD not in stream.getvalue()


async def test_sql_parameters_only_when_enabled(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """With sql_parameters=True (and SQLSpec at DEBUG, where it attaches them) the parameters are kept."""
    stream = io.StringIO()
    configure_logging(json=True, level="DEBUG", sql_parameters=True, stream=stream)
    async with serving(_statement_app(pg, registry)) as client:
        await client.get("/lookup", headers={"X-Request-ID": "abc-456"})
    [sql] = [
        line for line in _lines(stream) if line["logger"] == "sqlspec.sql" and "length" in line.get("db.statement", "")
    ]
    assert sql["request_id"] == "abc-456"
    assert sql["parameters"] == [SECRET]


async def test_debug_level_alone_does_not_expose_parameters(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """At DEBUG, where SQLSpec attaches raw parameters to its records, the default pipeline still drops them."""
    stream = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=stream)
    async with serving(_statement_app(pg, registry)) as client:
        await client.get("/lookup", headers={"X-Request-ID": "abc-789"})
    assert any(line.get("request_id") == "abc-789" for line in _lines(stream) if line["logger"] == "sqlspec.sql")
    assert SECRET not in stream.getvalue()


def test_trace_and_span_ids_when_a_span_is_active() -> None:
    """Lines logged inside an active span carry its trace_id/span_id; lines outside carry neither."""
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        structlog.get_logger("traced").info("inside structlog")
        logging.getLogger("traced.stdlib").info("inside stdlib")
    structlog.get_logger("traced").info("outside")
    context = span.get_span_context()
    inside_structlog, inside_stdlib, outside = _lines(stream)
    for line in (inside_structlog, inside_stdlib):
        assert line["trace_id"] == format(context.trace_id, "032x")
        assert line["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside
    assert "span_id" not in outside


async def test_trace_ids_on_sqlspec_lines_inside_a_request_span(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A statement run inside a request's span logs with that span's trace_id next to the request_id."""
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    tracer = TracerProvider().get_tracer("test")
    spec = SQLSpec()
    db = spec.add_config(
        AsyncpgConfig(
            connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 1},
            bind_key="main",
            observability_config=ObservabilityConfig(print_sql=True),
        )
    )
    app = FastAPI()
    trace_ids: list[str] = []

    @app.get("/traced")
    async def traced() -> None:
        with tracer.start_as_current_span("handler") as span:
            trace_ids.append(format(span.get_span_context().trace_id, "032x"))
            async with spec.provide_session(db) as session:
                await session.select_value("SELECT 'traced-statement'")

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        await client.get("/traced", headers={"X-Request-ID": "traced-1"})
    [sql] = [line for line in _lines(stream) if "traced-statement" in line.get("db.statement", "")]
    assert sql["request_id"] == "traced-1"
    assert sql["trace_id"] == trace_ids[0]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_unless_a_terminal() -> None:
    """json=None renders JSON on a pipe or file and human-readable text on a terminal; json=True forces JSON."""
    piped = io.StringIO()
    configure_logging(stream=piped)
    structlog.get_logger("fmt").info("hello", answer=42)
    assert json.loads(piped.getvalue())["answer"] == 42

    terminal = _Terminal()
    configure_logging(stream=terminal)
    structlog.get_logger("fmt").info("hello", answer=42)
    text = terminal.getvalue()
    assert "hello" in text
    assert "answer=42" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)

    forced = _Terminal()
    configure_logging(json=True, stream=forced)
    structlog.get_logger("fmt").info("hello")
    assert json.loads(forced.getvalue())["event"] == "hello"


def test_uvicorn_and_library_loggers_join_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loggers of uvicorn (which come with their own handlers) and SQLSpec end up in the one handler."""
    uvicorn_access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(uvicorn_access, "handlers", [logging.StreamHandler(io.StringIO())])
    monkeypatch.setattr(uvicorn_access, "propagate", False)
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    uvicorn_access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/x", "1.1", 200)
    logging.getLogger("sqlspec.pool").warning("pool.connection.create.error")
    access, pool = _lines(stream)
    assert access["logger"] == "uvicorn.access"
    assert access["event"] == '127.0.0.1:1 - "GET /x HTTP/1.1" 200'
    assert pool["logger"] == "sqlspec.pool"
    assert pool["level"] == "warning"
    assert "request_id" not in access


def test_a_silenced_access_log_stays_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A uvicorn logger the server silenced (``--no-access-log``: no handler, no propagation) is left silent."""
    access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access, "handlers", [])
    monkeypatch.setattr(access, "propagate", False)
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    access.info("GET / 200")
    logging.getLogger("uvicorn.error").info("still here")
    assert [line["event"] for line in _lines(stream)] == ["still here"]


def _fail() -> None:
    msg = "bad thing"
    raise ValueError(msg)


def test_exceptions_are_rendered_in_the_line() -> None:
    """A logged exception is rendered into the JSON line (one line, traceback in ``exception``)."""
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    try:
        _fail()
    except ValueError:
        structlog.get_logger("errors").exception("failed")
        logging.getLogger("errors.stdlib").exception("failed too")
    first, second = _lines(stream)
    assert "ValueError: bad thing" in first["exception"]
    assert "ValueError: bad thing" in second["exception"]


async def test_readme_request_id_example_logs_what_it_shows(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's app, run as written, logs exactly the fields (and values) of the lines the README shows."""
    app_code, _middleware_code = readme_blocks("Request IDs and logs", "python")
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(app_code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    capsys.readouterr()
    async with serving(namespace["app"]) as client:
        response = await client.get("/hello", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json() == {"request_id": "abc-123"}

    logged = {line["logger"]: line for line in map(json.loads, capsys.readouterr().out.splitlines())}
    [shown] = readme_blocks("Request IDs and logs", "text")
    for documented in map(json.loads, shown.splitlines()):
        actual = logged[documented["logger"]]
        assert list(actual) == list(documented), documented["logger"]
        for key, value in documented.items():
            if value != "…":
                assert actual[key] == value, key


async def test_readme_middleware_alone() -> None:
    """The README's bare-middleware snippet echoes its custom header, and (as it warns) not on unhandled 500s."""
    _app_code, middleware_code = readme_blocks("Request IDs and logs", "python")
    namespace: dict[str, Any] = {}
    exec(compile(middleware_code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    plain: FastAPI = namespace["plain"]

    @plain.get("/ok")
    async def ok() -> dict[str, str | None]:
        return {"request_id": get_request_id()}

    @plain.get("/crash")
    async def crash() -> None:
        _fail()

    transport = httpx.ASGITransport(app=plain, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok_response = await client.get("/ok", headers={"X-Correlation-ID": "corr-1"})
        crash_response = await client.get("/crash", headers={"X-Correlation-ID": "corr-2"})
    assert ok_response.headers["x-correlation-id"] == "corr-1"
    assert ok_response.json() == {"request_id": "corr-1"}
    assert crash_response.status_code == 500
    assert "x-correlation-id" not in crash_response.headers
