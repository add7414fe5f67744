"""Pure ASGI middleware that gives every HTTP request and WebSocket connection an ID.

The ID comes from the ``X-Request-ID`` header when the client's value is safe to reuse (1..128 visible
ASCII characters, nothing else), otherwise a new one is generated; raw input is never reflected. For the
duration of the request the ID is bound to:

- :func:`sqlspec_ops.get_request_id`;
- SQLSpec's ``CorrelationContext``, so SQLSpec's log records, statement events and spans carry it;
- structlog's context variables as ``request_id``.

Everything is reset when the request ends, so nothing leaks into the next one. The ID is echoed on every
HTTP response (4xx/5xx included; install the middleware outermost, as ``SQLSpecOps.instrument`` does, to
cover responses of unhandled exceptions too) and on the WebSocket handshake (acceptance or denial response).
An exception escaping the app is tagged with the ID, so the server's "Exception in ASGI application" line,
logged after the context is reset, still carries it through :func:`sqlspec_ops.configure_logging`.

Usage::

    app.add_middleware(RequestIdMiddleware, header_name="X-Request-ID")

Other per-request work plugs in through :class:`RequestHooks` (``SQLSpecOps`` adds its statement tally and
``Server-Timing`` that way); :class:`PrefixShortcut` serves the ``/ops`` paths ahead of the app's middleware.
"""

import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from contextvars import ContextVar
from random import randbytes as _randbytes
from typing import Any, Protocol

from sqlspec.utils.correlation import correlation_id_var
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sqlspec_ops._context import request_id_var

__all__ = (
    "EXCEPTION_REQUEST_ID",
    "PrefixShortcut",
    "RequestHooks",
    "RequestIdMiddleware",
    "ServerErrorShell",
    "generate_request_id",
    "is_valid_request_id",
    "tag_exception",
)

_VALID_ID = re.compile(rb"[\x21-\x7e]{1,128}")
# Messages that carry response headers: HTTP responses, WebSocket handshake acceptance and denial responses.
_STARTS_RESPONSE = frozenset(("http.response.start", "websocket.accept", "websocket.http.response.start"))
EXCEPTION_REQUEST_ID = "_sqlspec_ops_request_id"


class _Structlog:
    """structlog's context variable for ``request_id``, found once structlog is in use in this process.

    structlog keeps one ContextVar per bound key; binding once tells us which, so each request costs a single
    set/reset instead of ``bind_contextvars``' per-call dict and lookups. It is looked up only once something
    imported structlog (the app, its logging set-up, :func:`sqlspec_ops.configure_logging`): nothing can read
    structlog's context before that, and importing it for an app that never logs through it would load structlog
    (and rich, when installed) for nothing. Until then each request pays one dictionary lookup.
    """

    var: "ContextVar[Any] | None" = None

    @classmethod
    def find(cls) -> "ContextVar[Any] | None":
        """Return the variable once structlog is imported (None before)."""
        if "structlog" not in sys.modules:
            return None
        from structlog.contextvars import bind_contextvars, reset_contextvars  # noqa: PLC0415 - see the class

        tokens = bind_contextvars(request_id=None)
        reset_contextvars(**tokens)
        cls.var = tokens["request_id"].var
        return cls.var


def is_valid_request_id(value: bytes) -> bool:
    """Tell whether a client-supplied request ID may be reused as is.

    Args:
        value: The raw header value.

    Returns:
        True for 1..128 visible ASCII characters (no whitespace, control or non-ASCII bytes).

    """
    return _VALID_ID.fullmatch(value) is not None


def generate_request_id() -> str:
    """Return a new random request ID (32 lowercase hex characters).

    IDs need to be unique, not unpredictable, so the per-process PRNG (re-seeded in every forked worker)
    is used instead of a system call per request.
    """
    return _randbytes(16).hex()  # noqa: S311 - unique, not secret


class RequestHooks(Protocol):
    """Per-request work plugged into the middleware; runs with the request ID bound."""

    def on_start(self, scope: Scope, request_id: str) -> Any:
        """Begin a request; return a state object handed to the other two hooks."""
        ...

    def response_headers(self, state: Any) -> "tuple[tuple[bytes, bytes], ...]":
        """Return headers to add when the response starts (lower-case names)."""
        ...

    def on_end(self, scope: Scope, state: Any, request_id: str) -> None:
        """End a request (also after an exception); must never raise."""
        ...


class RequestIdMiddleware:
    """Bind a safe request ID to every HTTP and WebSocket scope and echo it back."""

    __slots__ = ("_header_key", "app", "generator", "header_name", "hooks", "validator")

    def __init__(
        self,
        app: ASGIApp,
        header_name: str = "X-Request-ID",
        *,
        validator: Callable[[bytes], bool] = is_valid_request_id,
        generator: Callable[[], str] = generate_request_id,
        hooks: RequestHooks | None = None,
    ) -> None:
        """Wrap an ASGI app.

        Args:
            app: The ASGI application to wrap.
            header_name: Header read from the request and written on the response.
            validator: Decides whether a client value is reused; it receives raw bytes. Even a permissive
                validator cannot make the middleware reflect CR, LF, NUL or non-ASCII bytes.
            generator: Makes a new ID when the client sent none or an unacceptable one.
            hooks: Per-request work (``SQLSpecOps`` passes its statement tally and ``Server-Timing``).

        Raises:
            ValueError: If ``header_name`` is not a valid HTTP header name.

        """
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", header_name):
            msg = f"header_name must be a valid HTTP header name, got {header_name!r}"
            raise ValueError(msg)
        self.app = app
        self.header_name = header_name
        self._header_key = header_name.lower().encode("latin-1")
        self.validator = validator
        self.generator = generator
        self.hooks = hooks

    def _request_id(self, scope: Scope) -> str:
        key = self._header_key
        for name, value in scope["headers"]:
            if name == key:
                # The hard rule runs even after a custom validator: never reflect unsafe bytes.
                if self.validator(value) and _VALID_ID.fullmatch(value) is not None:
                    return str(value.decode("ascii"))
                break
        return self.generator()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI scope with the request ID bound."""
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":  # noqa: PLR1714 - faster than a tuple lookup
            await self.app(scope, receive, send)
            return

        request_id = self._request_id(scope)
        header = (self._header_key, request_id.encode("ascii"))
        id_token = request_id_var.set(request_id)
        correlation_token = correlation_id_var.set(request_id)
        structlog_var = _Structlog.var or _Structlog.find()
        structlog_token = structlog_var.set(request_id) if structlog_var is not None else None
        hooks = self.hooks
        state = hooks.on_start(scope, request_id) if hooks is not None else None

        # A plain function handing back the server's own awaitable: no coroutine of ours is added to the await
        # chain, which every resumption of the request's task walks through.
        def send_with_id(message: Message) -> Awaitable[None]:
            if message["type"] in _STARTS_RESPONSE:
                headers = _raw_headers(message)
                _replace(headers, header)  # the app may have set the header itself
                if hooks is not None:
                    headers.extend(hooks.response_headers(state))
            return send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # The server logs this exception after the context below is reset: the tag lets the log pipeline
            # (sqlspec_ops._logs) still put this request's ID on that line.
            tag_exception(exc, request_id)
            raise
        finally:
            if hooks is not None:
                hooks.on_end(scope, state, request_id)
            if structlog_var is not None and structlog_token is not None:
                structlog_var.reset(structlog_token)
            correlation_id_var.reset(correlation_token)
            request_id_var.reset(id_token)


def tag_exception(exc: BaseException, request_id: str) -> None:
    """Record on an exception which request raised it (the innermost request wins when nested)."""
    with suppress(AttributeError, TypeError):  # exception types with __slots__ or read-only attributes
        if getattr(exc, EXCEPTION_REQUEST_ID, None) is None:
            setattr(exc, EXCEPTION_REQUEST_ID, request_id)


def _raw_headers(message: Message) -> list[tuple[bytes, bytes]]:
    """Return the message's header list, made a list in place if the app sent another iterable."""
    headers = message.get("headers")
    if type(headers) is not list:
        headers = message["headers"] = list(headers or ())
    return headers


def _replace(headers: list[tuple[bytes, bytes]], header: tuple[bytes, bytes]) -> None:
    key = header[0]
    size = len(key)
    for index, (name, _) in enumerate(headers):
        if len(name) == size and name.lower() == key:  # the length check skips lower() for most headers
            headers[index] = header
            return
    headers.append(header)


class PrefixShortcut:
    """Serve ``prefix`` paths straight from the ops app, ahead of the main app's own middleware.

    SQLSpec's FastAPI plugin checks out a pool connection for every request in its middleware, which would make
    ``/ops/live`` wait on a saturated pool; the ops endpoints must answer whatever the app's stack is doing.
    """

    __slots__ = ("_prefix", "_slash_prefix", "app", "ops")

    def __init__(self, app: ASGIApp, ops: ASGIApp, prefix: str) -> None:
        """Send ``prefix`` and ``prefix/...`` HTTP requests to ``ops``, everything else to ``app``."""
        self.app = app
        self.ops = ops
        self._prefix = prefix
        self._slash_prefix = prefix + "/"

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Route one ASGI scope: hand back the chosen app's awaitable (no frame of ours stays in the await chain)."""
        if scope["type"] == "http":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path.startswith(self._slash_prefix) or path == self._prefix:
                return self.ops(scope, receive, send)
        return self.app(scope, receive, send)


class ServerErrorShell(ServerErrorMiddleware):
    """The outermost layer: shaped like Starlette's ``ServerErrorMiddleware``, passing every call straight on.

    opentelemetry-instrumentation-fastapi, when it instruments the app after sqlspec-ops, accepts only a stack
    that starts with ``ServerErrorMiddleware``: it takes that layer's ``app``, ``handler`` and ``debug`` and builds
    its own around its server span. Until then this shell does nothing per request (Starlette's real one, inside,
    already answers an unhandled exception with a 500 before it propagates), so it costs one call and hands back
    the wrapped app's awaitable: no frame of its own stays in the await chain.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app`` (no handler, not in debug mode: the app's own ServerErrorMiddleware has those)."""
        super().__init__(app)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        """Pass the call on unchanged."""
        return self.app(scope, receive, send)  # type: ignore[return-value] # ASGI apps are awaited, nothing more
