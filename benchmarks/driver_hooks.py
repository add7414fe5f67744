"""Prototypes of statement timing on asyncpg's own hooks, for the benchmarks only (not wired into sqlspec-ops).

Both run on SQLSpec's idle fast path (no lifecycle hook registered) and do what sqlspec-ops' metric hooks do per
statement: observe a pre-bound histogram child and add to the request's tally.

- :func:`add_query_logger`: asyncpg's ``Connection.add_query_logger`` (>= 0.29), added in the pool's ``init``
  callback (SQLSpec chains a user ``init`` after its own). asyncpg reports after the statement through
  ``loop.call_soon``, so nothing marks the statement running and the last statement of a request may be reported
  after the response started (``Server-Timing`` would miss it); it also reports the pool's reset query.
- :class:`TimedConnection`: asyncpg's documented ``connection_class`` pool argument, a ``Connection`` subclass
  whose ``fetch``/``execute``/``executemany`` (the calls SQLSpec's asyncpg driver makes) note the start in a
  context variable and observe the end in the caller's task, cancellations included. The pool's reset query goes
  through ``execute`` too, so a real implementation must tell it apart (a flag set in the pool's ``reset``
  callback, or in the proxy's ``release``).
"""

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from time import perf_counter
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Histogram

from sqlspec_ops._requests import current_tally

__all__ = ("TimedConnection", "add_query_logger", "running_statement_started")

_HISTOGRAM = Histogram("bench_driver_hook_seconds", "prototypes", ["operation"], registry=CollectorRegistry())
_CHILD = _HISTOGRAM.labels("SELECT")
_running: ContextVar[float | None] = ContextVar("bench_running_statement", default=None)
running_statement_started = _running.get
"""When the statement running in this task started (None when none runs): what the holders need."""


def _record(elapsed: float) -> None:
    _CHILD.observe(elapsed)
    tally = current_tally()
    if tally is not None:
        tally.count += 1
        tally.seconds += elapsed


def _log_query(record: Any) -> None:
    # Only the elapsed time is read: the record also holds the raw arguments and the connection's password.
    _record(record.elapsed)


async def add_query_logger(connection: asyncpg.Connection) -> None:
    """Pool ``init`` callback: report every statement of this connection to the prototype's histogram."""
    connection.add_query_logger(_log_query)


class TimedConnection(asyncpg.Connection):
    """Times the calls SQLSpec's asyncpg driver makes, in the caller's task (the start is visible while running)."""

    async def _timed(self, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        token = _running.set(started)
        try:
            return await call(*args, **kwargs)
        finally:
            _running.reset(token)
            _record(perf_counter() - started)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        """Time ``fetch``."""
        return await self._timed(super().fetch, *args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Time ``execute``."""
        return await self._timed(super().execute, *args, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        """Time ``executemany``."""
        return await self._timed(super().executemany, *args, **kwargs)
