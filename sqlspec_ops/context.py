"""Request-scoped state: the request ID and the per-request database tally.

Both live in context variables so they follow the request's task (and tasks it spawns) and never
leak into the next request: the middleware sets them and resets them with the tokens it got back.
"""

from contextvars import ContextVar

__all__ = ("RequestQueries", "get_request_id")

_request_id: ContextVar[str | None] = ContextVar("sqlspec_ops_request_id", default=None)
_queries: ContextVar["RequestQueries | None"] = ContextVar("sqlspec_ops_request_queries", default=None)


class RequestQueries:
    """How many statements the current request ran and how long they took in total."""

    __slots__ = ("count", "seconds")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0


def get_request_id() -> str | None:
    """Return the ID of the request being served, or None outside a request.

    Returns:
        The validated client ID or the generated one; None when no request is active.

    """
    return _request_id.get()
