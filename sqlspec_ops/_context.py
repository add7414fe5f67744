"""The current request's ID, in a context variable.

It follows the request's task (and tasks it spawns) and never leaks into the next request, because the
middleware resets it with the token it got back.
"""

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlspec_ops._requests import RequestTally

__all__ = ("get_request_id", "request_id_var", "request_tally_var")

request_id_var: ContextVar[str | None] = ContextVar("sqlspec_ops_request_id", default=None)
# The current request's statement tally (see ``_requests``). Kept here, in a module that imports nothing of
# sqlspec-ops, so the pool proxy in the driver layer can read it without importing upwards.
request_tally_var: "ContextVar[RequestTally | None]" = ContextVar("sqlspec_ops_request_tally", default=None)


def get_request_id() -> str | None:
    """Return the ID of the request being served, or None outside a request.

    Returns:
        The validated client ID or the generated one; None when no request is active.

    """
    return request_id_var.get()
