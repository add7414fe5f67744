"""The per-request side of statement telemetry: the tally, ``Server-Timing``, N+1 warnings, the server span's ID.

:class:`RequestTelemetry` plugs into :class:`~sqlspec_ops._middleware.RequestIdMiddleware` through its hook
interface. Each request gets a :class:`RequestTally` in a context variable; the statement hooks add to it
(:func:`current_tally`), the response carries it as ``Server-Timing: db;dur=..;desc="N queries"``, and a request
that ran more statements than ``max_queries_per_request`` logs one warning when it ends.
"""

import logging

from starlette.types import Scope

from sqlspec_ops._context import RequestTally, request_tally_var
from sqlspec_ops._tracing import tag_current_span

__all__ = ("RequestTally", "RequestTelemetry", "current_tally")

logger = logging.getLogger("sqlspec_ops.queries")

_NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()


_tally = request_tally_var
current_tally = _tally.get
"""Return the tally of the request being served (None outside a request)."""


class RequestTelemetry:
    """Request hooks: start a tally, add ``Server-Timing``, flag N+1 patterns, tag the server span."""

    __slots__ = ("_tag_server_span", "_tag_span", "max_queries_per_request", "server_timing")

    def __init__(
        self, *, server_timing: bool, max_queries_per_request: int | None, tag_server_span: bool = True
    ) -> None:
        """Configure the per-request behaviour.

        Args:
            server_timing: Add ``Server-Timing: db;dur=..;desc="N queries"`` to responses.
            max_queries_per_request: Log a warning when a request runs more statements; None disables.
            tag_server_span: Put the request ID on the span current when the request starts (off when
                sqlspec-ops makes the server span itself and tags it from the instrumentation's hook).

        """
        self.server_timing = server_timing
        self.max_queries_per_request = max_queries_per_request
        self._tag_server_span = tag_server_span
        self._tag_span = False

    def bind_tracing(self, *, enabled: bool) -> None:
        """Say whether spans are recorded (known at startup only: the global tracer provider may be set late)."""
        self._tag_span = enabled and self._tag_server_span

    def on_start(self, scope: Scope, request_id: str) -> RequestTally:
        """Begin a request: a fresh tally becomes current."""
        if self._tag_span:
            tag_current_span(request_id)
        tally = RequestTally(scope, request_id)
        tally.token = _tally.set(tally)
        return tally

    def response_headers(self, tally: RequestTally) -> tuple[tuple[bytes, bytes], ...]:
        """Return the ``Server-Timing`` header once the request ran statements."""
        if not self.server_timing or not tally.count:
            return _NO_HEADERS
        return ((b"server-timing", b'db;dur=%.2f;desc="%d queries"' % (tally.seconds * 1000, tally.count)),)

    def on_end(self, scope: Scope, tally: RequestTally, request_id: str) -> None:
        """End a request: warn about too many statements, then stop counting into its tally."""
        try:
            limit = self.max_queries_per_request
            if limit is not None and tally.count > limit:
                _warn_n_plus_one(scope, tally, request_id, limit)
        finally:
            if tally.token is not None:
                _tally.reset(tally.token)
                tally.token = None


def _warn_n_plus_one(scope: Scope, tally: RequestTally, request_id: str, limit: int) -> None:
    route = scope.get("route")
    template = getattr(route, "path", None) or "<unmatched>"
    logger.warning(
        "request ran %d statements (limit %d): possible N+1 query pattern in %s %s",
        tally.count,
        limit,
        scope.get("method", "WEBSOCKET"),
        template,
        extra={
            "extra_fields": {
                "request_id": request_id,
                "route": template,
                "statements": tally.count,
                "db_time_ms": round(tally.seconds * 1000, 3),
                "limit": limit,
            }
        },
    )
