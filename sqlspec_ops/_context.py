"""The current request's ID, in a context variable.

It follows the request's task (and tasks it spawns) and never leaks into the next request, because the
middleware resets it with the token it got back.
"""

from contextvars import ContextVar

__all__ = ("get_request_id", "request_id_var")

request_id_var: ContextVar[str | None] = ContextVar("sqlspec_ops_request_id", default=None)


def get_request_id() -> str | None:
    """Return the ID of the request being served, or None outside a request.

    Returns:
        The validated client ID or the generated one; None when no request is active.

    """
    return request_id_var.get()
