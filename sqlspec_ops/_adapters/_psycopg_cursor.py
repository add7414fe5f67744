"""The cursor class psycopg connections are given as ``cursor_factory``: it times the app's statements.

A module of its own because it subclasses ``psycopg.AsyncCursor`` at import time, and psycopg is an optional
extra: ``sqlspec_ops._adapters.psycopg`` (imported by every app) loads it only once a psycopg config is timed.
See that module's docstring for what is counted and what is not.
"""

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Self

import psycopg
from psycopg.abc import Params, Query
from psycopg.copy import AsyncCopy, AsyncWriter
from sqlspec.utils.correlation import correlation_id_var

from sqlspec_ops._adapters._operations import operation_of
from sqlspec_ops._adapters.psycopg import ARMED

__all__ = ("TimedCursor", "timed_cursor_class")


class TimedCursor(psycopg.AsyncCursor[Any]):
    """A ``psycopg.AsyncCursor`` that times ``execute``, ``executemany`` and ``copy`` while its connection is armed.

    The pool proxy arms a connection (``connection.__dict__[ARMED] = (telemetry, holder)``) once psycopg_pool
    handed it out and disarms it before giving it back; cursors have slots, so the state lives on the connection.
    """

    __slots__ = ()

    # The three overrides repeat one shape on purpose: a shared helper would add a coroutine (and a frame) to
    # every statement, and this is the per-statement path benchmarks/statement_overhead.py measures.

    async def execute(
        self, query: Any, params: Params | None = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Self:
        """Run ``psycopg.AsyncCursor.execute``, timed.

        ``query`` is psycopg's ``Query`` (text, bytes, ``sql.Composable`` or a template); it is typed ``Any`` because
        psycopg's own overloads accept a template only without ``params``, and this passes both on as given.
        """
        armed = self._conn.__dict__.get(ARMED)
        if armed is None:
            return await super().execute(query, params, prepare=prepare, binary=binary)
        sql = query if isinstance(query, str) else _text_of(query)
        # In pipeline mode (SQLSpec's execute_stack) execute only queues the statement and its error surfaces at
        # the sync: no duration or outcome to record here, and SQLSpec's hooks do not count those either.
        operation = None if sql is None or self._pgconn.pipeline_status else operation_of(sql)
        if operation is None or sql is None:
            return await super().execute(query, params, prepare=prepare, binary=binary)
        telemetry = armed[0]
        request_id = correlation_id_var.get()
        started = telemetry.begin(sql, operation, request_id, armed[1])
        try:
            result = await super().execute(query, params, prepare=prepare, binary=binary)
        except BaseException as exc:  # cancellations too: they are counted and fail the span
            telemetry.finish(started, operation, sql, request_id, failed=True, exc=exc)
            raise
        telemetry.finish(started, operation, sql, request_id, failed=False)
        return result

    async def executemany(self, query: Query, params_seq: Iterable[Params], *, returning: bool = False) -> None:
        """Run ``psycopg.AsyncCursor.executemany``, timed (one statement, however many parameter sets)."""
        armed = self._conn.__dict__.get(ARMED)
        if armed is None:
            await super().executemany(query, params_seq, returning=returning)
            return
        sql = query if isinstance(query, str) else _text_of(query)
        operation = None if sql is None or self._pgconn.pipeline_status else operation_of(sql)
        if operation is None or sql is None:
            await super().executemany(query, params_seq, returning=returning)
            return
        telemetry = armed[0]
        request_id = correlation_id_var.get()
        started = telemetry.begin(sql, operation, request_id, armed[1])
        try:
            await super().executemany(query, params_seq, returning=returning)
        except BaseException as exc:
            telemetry.finish(started, operation, sql, request_id, failed=True, exc=exc)
            raise
        telemetry.finish(started, operation, sql, request_id, failed=False)

    @asynccontextmanager
    async def copy(
        self, statement: Query, params: Params | None = None, *, writer: AsyncWriter | None = None
    ) -> AsyncIterator[AsyncCopy]:
        """Run ``psycopg.AsyncCursor.copy``, timed from the COPY's start to the end of its block (as SQLSpec's hooks).

        SQLSpec's driver runs ``COPY ... FROM STDIN`` and ``COPY ... TO STDOUT`` through it; the data written or
        read inside the block belongs to the statement, so the duration ends when the block does.
        """
        armed = self._conn.__dict__.get(ARMED)
        sql = None if armed is None else statement if isinstance(statement, str) else _text_of(statement)
        operation = None if sql is None else operation_of(sql)  # psycopg refuses COPY in pipeline mode itself
        if operation is None or sql is None or armed is None:
            async with super().copy(statement, params, writer=writer) as copy:
                yield copy
            return
        telemetry = armed[0]
        request_id = correlation_id_var.get()
        started = telemetry.begin(sql, operation, request_id, armed[1])
        try:
            async with super().copy(statement, params, writer=writer) as copy:
                yield copy
        except BaseException as exc:
            telemetry.finish(started, operation, sql, request_id, failed=True, exc=exc)
            raise
        telemetry.finish(started, operation, sql, request_id, failed=False)


def _text_of(query: Any) -> str | None:
    """Return the text of a ``bytes`` query; None for ``sql.Composable`` and template queries (not timed).

    Bytes are in the connection's client encoding, an ASCII superset, so the keywords that classify the
    statement decode either way; the text is only a cache key and masked before anything is emitted. Composed
    and template queries would have to be rendered through the connection (quoting every literal) per statement
    just to be named, and SQLSpec never sends them (it passes SQL text), so they run untimed.
    """
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    return None


_timed_classes: dict[type[Any], type[Any]] = {}


def timed_cursor_class(base: type[Any] | None) -> type[Any] | None:
    """Return the timing subclass of ``base`` (the user's ``cursor_factory``; None: ``psycopg.AsyncCursor``).

    Returns None when ``base`` is not an ``AsyncCursor`` class a connection can use as ``cursor_factory`` (a
    server-side cursor needs a name; anything else is psycopg's to refuse): SQLSpec's hooks time statements then.
    """
    if base is None or base is psycopg.AsyncCursor:
        return TimedCursor
    if (
        not isinstance(base, type)
        or not issubclass(base, psycopg.AsyncCursor)
        or issubclass(base, psycopg.AsyncServerCursor)
    ):
        return None
    if issubclass(base, TimedCursor):
        return base
    timed = _timed_classes.get(base)
    if timed is None:
        # TimedCursor first in the MRO: its super() calls reach the user's overrides, then psycopg's. No
        # __dict__ is added to classes that have none (psycopg's cursors use slots).
        timed = _timed_classes[base] = type(f"Timed{base.__name__}", (TimedCursor, base), {"__slots__": ()})
    return timed
