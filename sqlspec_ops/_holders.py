"""Who holds each borrowed connection: one small record per hold, written by the pool proxy and the statement hooks.

A :class:`Holder` is made when the proxy hands a connection out and dropped when it comes back. The hot path
writes a few attributes: at acquire the time, the current request's tally (which knows the request ID and, once
the router matched, the route template) and, only when leak detection is on, the acquiring user frames; per
statement its start, its shape key and at its end the count and the time. Everything else (route template,
masked summary, transaction state) is read when ``/ops/pools`` renders or a leak is reported.

The statement hooks find the holder through a context variable per pool, set at acquire: hooks run in the
task that runs the statement, which is the task (or a child of the task) that borrowed the connection. Each
holder remembers the one that was current before it, so a task that borrows twice from one pool (nested
sessions) still attributes statements to the innermost connection that is still out.
"""

import asyncio
import re
import sys
from contextvars import ContextVar
from time import perf_counter
from typing import Any

from sqlspec_ops._context import RequestTally

__all__ = ("BACKGROUND", "LIBRARY_PACKAGES", "Holder", "active_holder", "user_frames")

BACKGROUND = "background"
"""The route of a hold made outside any request (the label value of ``http_route``)."""

# Frames of these packages are trimmed from an acquiring stack: the user's own code is what a leak report names.
# Each adapter adds its driver's packages (``Adapter.library_packages``).
LIBRARY_PACKAGES = frozenset(
    {
        "sqlspec",
        "sqlspec_ops",
        "fastapi",
        "starlette",
        "anyio",
        "asyncio",
        "contextlib",
        "uvicorn",
        "gunicorn",
        "httpx",
        "httpcore",
        "asgi_lifespan",
        "pydantic",
        "concurrent",
        "threading",
        "runpy",
        "_pytest",
        "pytest",
        "pluggy",
        "pytest_asyncio",
        "opentelemetry",
        "sniffio",
    }
)
_MAX_FRAMES = 8
_DEFAULT_TASK_NAME = re.compile(r"Task-\d+")


def user_frames(library: frozenset[str] = LIBRARY_PACKAGES) -> tuple[tuple[str, int, str], ...]:
    """Return the acquiring code's own frames, innermost first (frames of the ``library`` packages trimmed).

    Returns:
        Up to eight ``(path, line, qualified function name)`` tuples.

    """
    found: list[tuple[str, int, str]] = []
    frame = sys._getframe(1)  # noqa: SLF001 - the cheapest way to walk the stack (no source lines are read)
    while frame is not None and len(found) < _MAX_FRAMES:
        module = frame.f_globals.get("__name__", "")
        if module.partition(".")[0] not in library:
            code = frame.f_code
            found.append((code.co_filename, frame.f_lineno, code.co_qualname))
        frame = frame.f_back  # type: ignore[assignment]
    return tuple(found)


class Holder:
    """One borrowed connection: who borrowed it, since when, and what it did during this hold."""

    __slots__ = (
        "acquired",
        "connection",
        "db_time",
        "leaked",
        "operation",
        "previous",
        "released",
        "span",
        "sql_key",
        "stack",
        "started",
        "statements",
        "tally",
        "task_name",
        "telemetry",
    )

    def __init__(
        self,
        connection: Any,
        acquired: float,
        tally: "RequestTally | None",
        previous: "Holder | None",
        stack: tuple[tuple[str, int, str], ...] | None,
    ) -> None:
        """Record a borrow (hot path: attribute writes only, plus the task's name outside requests)."""
        self.connection = connection
        self.acquired = acquired
        self.tally = tally
        self.previous = previous
        self.stack = stack
        self.statements = 0
        self.db_time = 0.0
        self.started = 0.0  # start of the statement running now; 0.0 while none is
        self.operation: str = ""
        self.sql_key: str = ""
        self.span: Any = None
        self.telemetry: Any = None  # the StatementTelemetry that started the statement running now
        self.leaked = False
        self.released = False
        self.task_name: str | None = None
        if tally is None:
            try:
                task = asyncio.current_task()
            except RuntimeError:  # no event loop running (a pool borrowed from outside asyncio)
                task = None
            if task is not None:
                self.task_name = task.get_name()

    # -- read when reported (never on the hot path) ---------------------------------------------------------

    @property
    def request_id(self) -> str | None:
        """The borrowing request's ID (None outside a request)."""
        return self.tally.request_id if self.tally is not None else None

    @property
    def route(self) -> str:
        """The route template of the borrowing request, else the task's own name or ``background``."""
        tally = self.tally
        if tally is None:
            name = self.task_name
            return name if name and not _DEFAULT_TASK_NAME.fullmatch(name) else BACKGROUND
        return route_of(tally)

    @property
    def label_route(self) -> str:
        """The route as a metric label: route templates only, ``background`` outside requests (bounded)."""
        return route_of(self.tally) if self.tally is not None else BACKGROUND

    def held(self, now: float | None = None) -> float:
        """Seconds the connection has been out."""
        return (perf_counter() if now is None else now) - self.acquired

    @property
    def acquired_at(self) -> str | None:
        """The innermost user frame that borrowed the connection, ``path:line function`` (leak detection only)."""
        if not self.stack:
            return None
        path, line, function = self.stack[0]
        return f"{path}:{line} {function}"

    def stack_lines(self) -> list[str]:
        """Return the acquiring user frames, innermost first, as ``path:line function``."""
        return [f"{path}:{line} {function}" for path, line, function in self.stack or ()]


def route_of(tally: "RequestTally") -> str:
    """Return the request's route template (what Starlette's router matched), else ``<unmatched>``."""
    scope = tally.scope
    route = scope.get("route") if scope is not None else None
    return getattr(route, "path", None) or "<unmatched>"


def active_holder(var: "ContextVar[Holder | None]") -> Holder | None:
    """Return the innermost holder of this context's borrows from one pool that is still out."""
    holder = var.get()
    while holder is not None and holder.released:
        holder = holder.previous
    return holder
