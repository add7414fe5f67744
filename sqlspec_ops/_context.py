"""The current request's ID and statement tally, in context variables.

They follow the request's task (and tasks it spawns) and never leak into the next request, because the
middleware (and ``_requests``) reset them with the tokens they got back. This module imports nothing of
sqlspec-ops, so the pool proxy in the driver layer can read them without importing upwards.
"""

from contextvars import ContextVar, Token
from typing import Any

__all__ = ("RequestTally", "get_request_id", "request_id_var", "request_tally_var")

request_id_var: ContextVar[str | None] = ContextVar("sqlspec_ops_request_id", default=None)


class RequestTally:
    """How many statements the current request ran and how long they took in total."""

    __slots__ = ("count", "request_id", "scope", "seconds", "token")

    def __init__(self, scope: Any = None, request_id: str | None = None) -> None:
        self.count = 0
        self.seconds = 0.0
        self.token: Token[RequestTally | None] | None = None
        # Kept for connection holders: the router writes the matched route into this scope dict later.
        self.scope: dict[str, Any] | None = scope
        self.request_id = request_id


request_tally_var: ContextVar[RequestTally | None] = ContextVar("sqlspec_ops_request_tally", default=None)


def get_request_id() -> str | None:
    """Return the ID of the request being served, or None outside a request.

    Returns:
        The validated client ID or the generated one; None when no request is active.

    """
    return request_id_var.get()
