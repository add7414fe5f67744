"""Request IDs: validation, echo on every response kind, WebSocket and background tasks, no leaks."""

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import BackgroundTasks, FastAPI, HTTPException, WebSocket
from fastapi.responses import Response
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.utils.correlation import CorrelationContext
from starlette.types import Message, Receive, Scope, Send

from sqlspec_ops import RequestIdMiddleware, SQLSpecOps, configure_logging, get_request_id
from tests.support.asgi import http_request, response_headers, websocket_session
from tests.support.paths import ROOT
from tests.support.processes import clean_env

VALID = re.compile(rb"[\x21-\x7e]{1,128}")
GENERATED = re.compile(rb"[0-9a-f]{32}")
visible_ascii = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=128)


def _instrumented_app(seen: list[str | None] | None = None) -> FastAPI:
    """An app instrumented by SQLSpecOps (no database) whose routes cover the response kinds."""
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> dict[str, str | None]:
        if seen is not None:
            seen.append(get_request_id())
        return {"request_id": get_request_id()}

    @app.get("/sets-its-own")
    async def sets_its_own() -> Response:
        return Response("x", headers={"X-Request-ID": "from-the-app"})

    @app.get("/forbidden")
    async def forbidden() -> None:
        raise HTTPException(status_code=403, detail="no")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/crash")
    async def crash() -> None:
        msg = "boom"
        raise RuntimeError(msg)

    return SQLSpecOps(SQLSpec(), registry=CollectorRegistry()).instrument(app)


async def _plain_ok(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app that sends no headers at all (allowed by the ASGI spec)."""
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": (get_request_id() or "").encode()})


def _ids(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [value for name, value in headers if name.lower() == b"x-request-id"]


def _check_echo(sent_value: bytes | None, messages: list[Message]) -> bytes:
    [echoed] = _ids(response_headers(messages))
    assert VALID.fullmatch(echoed), echoed
    assert not {0x0D, 0x0A, 0x00} & set(echoed)
    if sent_value is not None and VALID.fullmatch(sent_value):
        assert echoed == sent_value
    else:
        assert GENERATED.fullmatch(echoed), echoed
    return echoed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(st.none(), st.binary(max_size=300), visible_ascii.map(str.encode)))
@example(value=b"abc-123\r\nSet-Cookie: x=1")
@example(value=b"abc\x00def")
@example(value=b"caf\xc3\xa9")
@example(value=b"has space")
@example(value=b"")
@example(value=b"x" * 128)
@example(value=b"x" * 129)
@example(value=b"\tabc")
def test_any_header_bytes_give_a_safe_echo_and_valid_ids_are_kept(value: bytes | None) -> None:
    """Whatever bytes arrive, the echoed ID is 1..128 visible ASCII, and a valid client ID comes back as sent."""
    headers = [] if value is None else [(b"x-request-id", value)]

    messages = asyncio.run(http_request(RequestIdMiddleware(_plain_ok), "/", headers))
    echoed = _check_echo(value, messages)
    assert messages[-1]["body"] == echoed  # the app saw the same ID it was echoed with

    seen: list[str | None] = []
    messages = asyncio.run(http_request(_instrumented_app(seen), "/ok", headers))
    echoed = _check_echo(value, messages)
    assert seen == [echoed.decode()]
    assert get_request_id() is None


@settings(max_examples=100, deadline=None)
@given(first=st.binary(max_size=40), second=visible_ascii.map(str.encode))
def test_only_the_first_header_counts(first: bytes, second: bytes) -> None:
    """With two X-Request-ID headers the first decides: kept if valid, else replaced (never the second)."""
    headers = [(b"x-request-id", first), (b"X-Request-ID".lower(), second)]
    messages = asyncio.run(http_request(RequestIdMiddleware(_plain_ok), "/", headers))
    [echoed] = _ids(response_headers(messages))
    if VALID.fullmatch(first):
        assert echoed == first
    else:
        assert GENERATED.fullmatch(echoed)


def test_permissive_validator_cannot_reflect_unsafe_bytes() -> None:
    """Even a validator that accepts everything cannot get CR/LF/NUL or non-ASCII into the response."""
    app = RequestIdMiddleware(_plain_ok, validator=lambda _value: True)
    for bad in (b"a\r\nb", b"a\x00", "é".encode(), b"with space", b""):
        messages = asyncio.run(http_request(app, "/", [(b"x-request-id", bad)]))
        assert GENERATED.fullmatch(_ids(response_headers(messages))[0])


def test_custom_header_name_and_generator() -> None:
    """The header name and the ID generator are configurable."""
    app = RequestIdMiddleware(_plain_ok, "X-Correlation-ID", generator=lambda: "gen-1")
    messages = asyncio.run(http_request(app, "/", [(b"x-request-id", b"ignored")]))
    headers = response_headers(messages)
    assert (b"x-correlation-id", b"gen-1") in headers
    assert not _ids(headers)
    with pytest.raises(ValueError, match="valid HTTP header name"):
        RequestIdMiddleware(_plain_ok, "Bad Header")


@pytest.mark.parametrize(
    ("path", "status"),
    [("/ok", 200), ("/sets-its-own", 200), ("/forbidden", 403), ("/nowhere", 404), ("/items/abc", 422)],
)
async def test_every_response_carries_the_id_once(path: str, status: int) -> None:
    """2xx, 4xx and validation errors all echo the client's ID exactly once, replacing one the app set."""
    app = _instrumented_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(path, headers={"X-Request-ID": "abc-123"})
    assert response.status_code == status
    assert response.headers.get_list("x-request-id") == ["abc-123"]


async def test_unhandled_exception_500_carries_the_id_and_its_log_line_too() -> None:
    """An unhandled exception gives a 500 with the ID, and the server's report of it carries the ID."""
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    app = _instrumented_app()
    failure: Exception | None = None
    try:
        await http_request(app, "/crash", [(b"x-request-id", b"crash-1")])
    except RuntimeError as exc:
        failure = exc
        # What uvicorn does once the app has raised (the request's context is gone by then).
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    assert failure is not None

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/crash", headers={"X-Request-ID": "crash-2"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "crash-2"

    lines = [json.loads(raw) for raw in stream.getvalue().splitlines()]
    [line] = [line for line in lines if line["logger"] == "uvicorn.error"]
    assert line["request_id"] == "crash-1"
    assert "RuntimeError: boom" in line["exception"]
    assert get_request_id() is None


async def test_no_leak_into_the_next_request() -> None:
    """After a request, no context (ours, SQLSpec's, structlog's) keeps its ID; the next one gets its own."""
    seen: list[str | None] = []
    app = _instrumented_app(seen)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.get("/ok", headers={"X-Request-ID": "first-1"})
        second = await client.get("/ok")
        third = await client.get("/ok")
    assert seen[0] == "first-1"
    assert first.headers["x-request-id"] == "first-1"
    assert seen[1] == second.headers["x-request-id"] != "first-1"
    assert seen[2] == third.headers["x-request-id"] != seen[1]
    assert get_request_id() is None
    assert CorrelationContext.get() is None
    assert "request_id" not in structlog.contextvars.get_contextvars()


async def test_concurrent_requests_do_not_see_each_others_ids() -> None:
    """Interleaved requests on one app each see only their own ID, across awaits."""
    app = FastAPI()

    @app.get("/slow/{n}")
    async def slow(n: int) -> dict[str, list[str | None]]:
        ids = []
        for _ in range(5):
            ids.append(get_request_id())
            await asyncio.sleep(0.001 * (n % 3))
        return {"ids": ids}

    SQLSpecOps(SQLSpec(), registry=CollectorRegistry()).instrument(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        responses = await asyncio.gather(
            *(client.get(f"/slow/{n}", headers={"X-Request-ID": f"req-{n}"}) for n in range(50))
        )
    for n, response in enumerate(responses):
        assert response.json()["ids"] == [f"req-{n}"] * 5


async def test_background_task_runs_with_the_request_id() -> None:
    """A FastAPI background task sees the ID of the request that scheduled it, in its logs too."""
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    done = asyncio.Event()
    seen: list[str | None] = []

    async def task() -> None:
        seen.append(get_request_id())
        structlog.get_logger("bg").info("background work")
        done.set()

    app = FastAPI()

    @app.post("/work")
    async def work(background: BackgroundTasks) -> dict[str, bool]:
        background.add_task(task)
        return {"queued": True}

    SQLSpecOps(SQLSpec(), registry=CollectorRegistry()).instrument(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/work", headers={"X-Request-ID": "bg-1"})
    await asyncio.wait_for(done.wait(), 5)
    assert response.headers["x-request-id"] == "bg-1"
    assert seen == ["bg-1"]
    [line] = [json.loads(raw) for raw in stream.getvalue().splitlines() if '"bg"' in raw]
    assert line["request_id"] == "bg-1"


def _websocket_app(on_connect: Callable[[WebSocket], Awaitable[None]]) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def socket(websocket: WebSocket) -> None:
        await on_connect(websocket)

    return SQLSpecOps(SQLSpec(), registry=CollectorRegistry()).instrument(app)


async def test_websocket_gets_an_id_on_the_handshake_and_inside() -> None:
    """A WebSocket connection gets the client's ID (or a new one) on its accept and in its handler."""

    async def echo_id(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await websocket.send_text(get_request_id() or "")
        await websocket.close()

    app = _websocket_app(echo_id)
    sent = await websocket_session(app, "/ws", ["hi"], [(b"x-request-id", b"ws-1")])
    assert _ids(response_headers(sent)) == [b"ws-1"]
    assert [m["text"] for m in sent if m["type"] == "websocket.send"] == ["ws-1"]

    sent = await websocket_session(app, "/ws", ["hi"], [(b"x-request-id", b"bad\r\nid")])
    [generated] = _ids(response_headers(sent))
    assert GENERATED.fullmatch(generated)
    assert [m["text"] for m in sent if m["type"] == "websocket.send"] == [generated.decode()]
    assert get_request_id() is None


async def test_websocket_denial_response_carries_the_id() -> None:
    """A WebSocket refused with an HTTP response (denial extension) carries the ID too."""

    async def deny(websocket: WebSocket) -> None:
        await websocket.send_denial_response(Response("go away", status_code=403))

    app = _websocket_app(deny)
    sent: list[Message] = []
    scope: dict[str, object] = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "scheme": "ws",
        "headers": [(b"x-request-id", b"deny-1")],
        "extensions": {"websocket.http.response": {}},
        "server": ("t", 80),
        "client": ("127.0.0.1", 1),
    }
    inbox = [{"type": "websocket.connect"}]

    async def receive() -> Message:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    [start] = [m for m in sent if m["type"] == "websocket.http.response.start"]
    assert start["status"] == 403
    assert _ids(start["headers"]) == [b"deny-1"]


_STRUCTLOG_LATE = """
import asyncio
import sys

import httpx
from fastapi import FastAPI
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig

from sqlspec_ops import SQLSpecOps

seen = []
app = FastAPI()


@app.get("/")
async def root() -> dict:
    contextvars = sys.modules.get("structlog.contextvars")
    seen.append(None if contextvars is None else contextvars.get_contextvars().get("request_id"))
    return {}


async def main() -> None:
    spec = SQLSpec()
    spec.add_config(AiosqliteConfig(connection_config={"database": ":memory:"}))
    SQLSpecOps(spec).instrument(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/", headers={"x-request-id": "before-structlog"})
        print("structlog imported:", "structlog" in sys.modules)
        import structlog  # noqa: F401

        await client.get("/", headers={"x-request-id": "after-structlog"})
    print("seen:", seen)


asyncio.run(main())
"""


def test_structlog_is_bound_once_in_use_and_never_imported_for_an_app_without_it(tmp_path: Path) -> None:
    """An app that never imports structlog does not load it; once something imports it, requests bind their ID."""
    script = tmp_path / "late.py"
    script.write_text(_STRUCTLOG_LATE)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "structlog imported: False" in result.stdout
    assert "seen: [None, 'after-structlog']" in result.stdout
