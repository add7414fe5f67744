"""Serve an ASGI app in-process for a test, or drive it by hand with bytes HTTP clients would not send.

``serving(app)`` runs the app's lifespan and yields an httpx client talking to it. HTTP client libraries
refuse (or normalise) header values with CR, LF, NUL or non-ASCII bytes, so tests that prove what the
middleware does with such bytes build the ASGI scope themselves (``http_request``, ``websocket_session``).
"""

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ("http_request", "response_headers", "serving", "websocket_session")


def _state_per_request(app: ASGIApp) -> ASGIApp:
    """Give each request its own copy of the lifespan state, as uvicorn does.

    asgi-lifespan hands every request the same state dict, so concurrent requests would overwrite each other's
    ``request.state`` (SQLSpec's FastAPI plugin keeps the request's connection there).
    """

    async def app_with_request_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and "state" in scope:
            scope = {**scope, "state": dict(scope["state"])}
        await app(scope, receive, send)

    return app_with_request_state


@asynccontextmanager
async def serving(
    app: ASGIApp, *, base_url: str = "http://testserver", raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's startup, yield an HTTP client talking to it in-process, then run its shutdown.

    The shutdown runs even when the block raises, so a failing test still closes the app's pools.

    Args:
        app: The ASGI app.
        base_url: The client's base URL.
        raise_app_exceptions: Re-raise an exception the app did not handle (False: answer 500 as a server does).

    Yields:
        The client.

    """
    async with LifespanManager(_state_per_request(app)) as manager:
        try:
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=raise_app_exceptions)
            async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
                yield client
        except BaseException as failure:
            # asgi-lifespan sends the shutdown only when the block succeeded
            try:
                await manager.shutdown()
            except Exception as exc:
                failure.add_note(f"the app's shutdown failed as well: {exc!r}")
            raise


def _scope(kind: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": list(headers),
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


async def http_request(
    app: ASGIApp, path: str = "/", headers: Iterable[tuple[bytes, bytes]] = (), *, method: str = "GET"
) -> list[Message]:
    """Send one HTTP request with exactly these raw headers; return every message the app sent."""
    scope = _scope("http", path, headers)
    scope["method"] = method
    sent: list[Message] = []
    request_sent = False

    async def receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects on its own
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def response_headers(messages: list[Message]) -> list[tuple[bytes, bytes]]:
    """Return the raw headers of the ``http.response.start`` (or ``websocket.accept``) message."""
    for message in messages:
        if message["type"] in {"http.response.start", "websocket.accept"}:
            return list(message.get("headers", []))
    msg = f"no response start among {[m['type'] for m in messages]}"
    raise AssertionError(msg)


async def websocket_session(
    app: ASGIApp, path: str, texts: Iterable[str], headers: Iterable[tuple[bytes, bytes]] = ()
) -> list[Message]:
    """Connect, send each text after the app's previous reply, disconnect; return what the app sent."""
    scope = _scope("websocket", path, headers)
    sent: list[Message] = []
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    pending = list(texts)

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] in {"websocket.accept", "websocket.send"}:
            if pending:
                await inbox.put({"type": "websocket.receive", "text": pending.pop(0)})
            else:
                await inbox.put({"type": "websocket.disconnect", "code": 1000})

    async with asyncio.timeout(30):
        await app(scope, receive, send)
    return sent
