"""psycopg 3 with psycopg_pool's ``AsyncConnectionPool``: borrowed through ``pool.connection()``; timed by cursors.

Statement telemetry on psycopg does not use SQLSpec's lifecycle hooks: SQLSpec 0.69 runs its instrumented
execution path for every statement as soon as a config has one, with no switch to avoid it. Instead the
connections get psycopg's documented ``cursor_factory`` connection keyword (the extension point psycopg's
maintainers point to), set to a subclass of ``psycopg.AsyncCursor`` (of the user's own ``cursor_factory`` when one
is configured, top level or in ``kwargs``) whose ``execute``, ``executemany`` and ``copy`` (what SQLSpec's
driver calls on the cursor it makes per statement) time the call in the caller's task: the current span is the
request's, the running statement is visible to ``/ops/pools`` while it runs, and a cancellation is seen as the
``CancelledError`` it is. No driver class is patched.

A connection times statements only while the pool proxy has it out ("armed" right after psycopg_pool handed it
out, so after its ``check`` and the ``configure`` callbacks; disarmed before psycopg_pool gets it back and
commits, rolls back or runs ``reset``), so those and the queries sqlspec-ops runs for itself (health pings, the
server's view) are never counted. Transaction control (``BEGIN``/``COMMIT``/``ROLLBACK``/savepoints sent as SQL)
is not counted, as SQLSpec's hooks do not see it; psycopg's own ``commit()``/``rollback()`` and
``transaction()`` blocks do not go through a cursor at all.

What differs from SQLSpec's hooks, and what neither path counts:

- ``COPY ... FROM STDIN`` / ``TO STDOUT`` (``cursor.copy()``) is one statement timed from its start to the end
  of its block, data transfer included, as with the hooks.
- A script (``execute_script``) counts each of its statements: SQLSpec's psycopg driver runs them one by one
  (its hooks count the script once, as ``SCRIPT``).
- Not counted, on either path: ``select_stream``'s server-side named cursors (made by the connection's
  ``server_cursor_factory``; SQLSpec emits no hook for them either) and statements queued in pipeline mode
  (``execute_stack``: ``execute`` only queues, errors surface at the pipeline's sync; SQLSpec emits no
  per-statement hook there). ``sql.Composed`` and template queries (never sent by SQLSpec) run untimed.
- Statements the app runs on the raw connection (``session.connection.execute(...)``) while it is borrowed
  through SQLSpec are counted here; SQLSpec's hooks never see them.
"""

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any, Self

# psycopg is an optional extra: the registry imports this module only once a psycopg config turns up.
import psycopg
from psycopg.abc import Params, Query
from psycopg.copy import AsyncCopy, AsyncWriter
from sqlspec.utils.correlation import correlation_id_var

from sqlspec_ops._adapters._operations import operation_of
from sqlspec_ops._adapters.base import PoolCounts, failure_name
from sqlspec_ops._adapters.postgres import PostgresAdapter, dsn_application_name
from sqlspec_ops._adapters.proxy import InstrumentedPool

__all__ = ("PsycopgAdapter", "PsycopgPool", "TimedCursor")

# The key of a connection's ``__dict__`` holding (telemetry, holder) while the proxy has it out (None or absent:
# its cursors do not time). psycopg's connections have a ``__dict__``, its cursors only slots.
_ARMED = "_sqlspec_ops_armed"

_CLOSE_TIMEOUT = 1.0  # seconds psycopg_pool waits for its worker tasks when closing
_IN_TRANSACTION = frozenset({2, 3})  # psycopg.pq.TransactionStatus.INTRANS, INERROR

# libpq reports a failed connection as text only (psycopg raises a bare OperationalError, no SQLSTATE), so the
# cause is recognised from libpq's and the server's fixed wording and named by a class from this table: the text
# itself (which holds the host, the user, sometimes more) never leaves this module. The names are psycopg's own
# error classes for those SQLSTATEs, or Python's for socket-level failures. Unrecognised (or localised) text
# falls back to the exception's class.
_CONNECT_CAUSES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("password authentication failed",), "InvalidPassword"),  # 28P01
    (("no pg_hba.conf entry",), "InvalidAuthorizationSpecification"),  # 28000
    (("role", "does not exist"), "InvalidAuthorizationSpecification"),  # 28000
    (("database", "does not exist"), "InvalidCatalogName"),  # 3D000
    (("too many connections",), "TooManyConnections"),  # 53300
    (("remaining connection slots are reserved",), "TooManyConnections"),  # 53300
    (("the database system is",), "CannotConnectNow"),  # 57P03: starting up, shutting down, in recovery
    (("connection refused",), "ConnectionRefusedError"),
    (("timeout expired",), "TimeoutError"),
    (("could not translate host name",), "gaierror"),
    (("no route to host",), "OSError"),
)


class TimedCursor(psycopg.AsyncCursor[Any]):
    """A ``psycopg.AsyncCursor`` that times ``execute``, ``executemany`` and ``copy`` while its connection is armed.

    The pool proxy arms a connection (``connection.__dict__[_ARMED] = (telemetry, holder)``) once psycopg_pool
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
        armed = self._conn.__dict__.get(_ARMED)
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
        armed = self._conn.__dict__.get(_ARMED)
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
        armed = self._conn.__dict__.get(_ARMED)
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


_timed_cursor_classes: dict[type[Any], type[Any]] = {}


def _timed_cursor_class(base: type[Any] | None) -> type[Any] | None:
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
    timed = _timed_cursor_classes.get(base)
    if timed is None:
        # TimedCursor first in the MRO: its super() calls reach the user's overrides, then psycopg's. No
        # __dict__ is added to classes that have none (psycopg's cursors use slots).
        timed = _timed_cursor_classes[base] = type(f"Timed{base.__name__}", (TimedCursor, base), {"__slots__": ()})
    return timed


class PsycopgPool(InstrumentedPool):
    """psycopg_pool's borrow API: ``async with pool.connection(timeout=...) as connection``."""

    @asynccontextmanager
    async def connection(self, timeout: float | None = None, **kwargs: Any) -> AsyncIterator[Any]:  # noqa: ASYNC109 - psycopg_pool's signature
        """Borrow a connection (psycopg_pool commits or rolls back when the block ends, as without the proxy)."""
        inner = self._inner if self._inner is not None else await self.open()
        timeout = self._timeout_for(timeout)
        context = inner.connection(timeout=timeout, **kwargs) if timeout is not None else inner.connection(**kwargs)
        key = id(context)
        started = self._begin_wait()
        try:
            connection = await context.__aenter__()
        except BaseException as exc:
            timed_out = self._acquire_failed(exc, started)
            if timed_out is not None:
                raise timed_out from exc
            raise
        holder = self._acquired(key, started, connection)
        telemetry = self.statements  # None: SQLSpec's hooks time this config's statements
        if telemetry is not None:
            # Armed only now: psycopg_pool's check and the configure callbacks ran before it handed it out.
            connection.__dict__[_ARMED] = (telemetry, holder)
        try:
            yield connection
        except BaseException as exc:
            if telemetry is not None:
                connection.__dict__[_ARMED] = None  # psycopg_pool's commit, rollback and reset are not the app's
            self._released(key)  # before the pool gets it back: it may hand it to a waiter at once
            try:
                await context.__aexit__(type(exc), exc, exc.__traceback__)
            finally:
                self._returned()
            raise
        else:
            if telemetry is not None:
                connection.__dict__[_ARMED] = None
            self._released(key)
            try:
                await context.__aexit__(None, None, None)
            finally:
                self._returned()


class PsycopgAdapter(PostgresAdapter):
    """psycopg_pool's ``AsyncConnectionPool`` (SQLSpec passes ``max_size=None``: max equals min, 4 by default)."""

    name = "psycopg"
    config_class = "sqlspec.adapters.psycopg.config.PsycopgAsyncConfig"
    default_min = 4
    proxy_class = PsycopgPool
    library_packages = frozenset({"psycopg", "psycopg_pool"})
    # psycopg_pool retries failed connections in the background: a waiting caller sees only PoolTimeout.
    probes_connect = True
    counts_opening = True  # get_stats()["pool_size"] includes connections being made or retried
    times_statements = True

    def time_statements(self, config: Any) -> bool:
        """Give the connections a timing ``cursor_factory`` (the user's own one subclassed, not replaced)."""
        cc = config.connection_config
        nested = cc.get("kwargs") or {}
        # SQLSpec merges the "kwargs" sub-dict over the top-level keys, so a cursor_factory there is the one used.
        in_kwargs = "cursor_factory" in nested
        timed = _timed_cursor_class(nested["cursor_factory"] if in_kwargs else cc.get("cursor_factory"))
        if timed is None:
            return False  # not an AsyncCursor class psycopg would make plain cursors with: leave it to psycopg
        if in_kwargs:
            cc["kwargs"] = {**nested, "cursor_factory": timed}  # a copy: the app's own dict is left as it was
        else:
            cc["cursor_factory"] = timed
        return True

    def time_connects(self, config: Any, observe: Callable[[float], None]) -> bool:
        """Time each connect through psycopg_pool's ``connection_class`` argument (the config's own one subclassed).

        psycopg_pool opens every connection with ``connection_class.connect(...)``, a classmethod a subclass may
        override; SQLSpec's standalone ``create_connection()`` uses the same class, so it is timed too.
        """
        cc = config.connection_config
        current = cc.get("connection_class")
        if getattr(current, "sqlspec_ops_timed", False):
            return True
        if current is not None and not (isinstance(current, type) and issubclass(current, psycopg.AsyncConnection)):
            return False  # not a connection class psycopg_pool would accept: leave it to psycopg_pool to say so
        cc["connection_class"] = _timed_connect_class(current or psycopg.AsyncConnection, observe)
        return True

    def default_max_for(self, min_size: int) -> int:
        """SQLSpec passes ``max_size=None``, so psycopg_pool makes max equal to min."""
        return min_size

    def counts(self, pool: Any) -> PoolCounts:
        """Return open and idle counts from ``get_stats()`` (not ``pop_stats()``, which resets).

        psycopg_pool's ``pool_size`` also counts connections still being made (or retried while the server is
        down), so it is "open or opening"; only ``pool_available`` is ready to hand out.
        """
        stats = pool.get_stats()
        return PoolCounts(open=stats.get("pool_size", 0), idle=stats.get("pool_available", 0))

    async def ping(self, connection: Any) -> None:
        """Run ``SELECT 1`` (not counted as one of the app's statements)."""
        async with _untimed(connection):
            await connection.execute("SELECT 1")

    def connect_failure_name(self, exc: BaseException) -> str:
        """Name what libpq's text says went wrong (``InvalidPassword``, ``ConnectionRefusedError``...) or the class."""
        current: BaseException | None = exc
        for _ in range(3):  # SQLSpec may wrap the driver's error
            if current is None:
                break
            if type(current).__name__ == "OperationalError":
                text = str(current).lower()
                for needles, name in _CONNECT_CAUSES:
                    if all(needle in text for needle in needles):
                        return name
            current = current.__cause__
        return failure_name(exc)

    def transaction_state(self, connection: Any) -> bool | None:
        """Read libpq's transaction status: ``INTRANS`` (2) or ``INERROR`` (3) mean a transaction is open."""
        return int(connection.info.transaction_status) in _IN_TRANSACTION

    placeholder = "%s"

    def application_name(self, config: Any) -> str | None:
        """Return the ``application_name`` keyword (top level or in ``kwargs``), else the one in the conninfo."""
        cc = config.connection_config or {}
        name = cc.get("application_name") or (cc.get("kwargs") or {}).get("application_name")
        if name:
            return str(name)
        return dsn_application_name(cc.get("conninfo"))

    def apply_application_name(self, config: Any, name: str) -> str | None:
        """Pass ``application_name`` as a connection keyword (SQLSpec hands extra keys to psycopg) unless set."""
        current = self.application_name(config)
        if current:
            return current
        config.connection_config["application_name"] = name
        return name

    @asynccontextmanager
    async def borrow(self, pool: Any, timeout: float) -> AsyncIterator[Any]:  # noqa: ASYNC109 - the acquire wait only
        """Borrow from psycopg_pool itself (not the proxy) within ``timeout``."""
        async with pool.connection(timeout=timeout) as connection:
            yield connection

    async def fetch_one(self, connection: Any, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """Return the first row as a list (not counted as one of the app's statements)."""
        async with _untimed(connection):
            cursor = await connection.execute(sql, args)
            row = await cursor.fetchone()
        if row is None:
            return []
        return list(row.values()) if isinstance(row, dict) else list(row)

    async def fetch_row(self, connection: Any, sql: str) -> list[Any]:
        """Return the first row as a list (not counted as one of the app's statements)."""
        async with _untimed(connection):
            return await super().fetch_row(connection, sql)

    def acquire_timeout_error(self, exc: BaseException) -> bool:
        """psycopg_pool raises its own ``PoolTimeout``."""
        return isinstance(exc, TimeoutError) or type(exc).__name__ == "PoolTimeout"

    async def close(self, pool: Any) -> None:
        """Close without psycopg_pool's 5 s wait for workers stuck connecting to a server that never answers.

        The pool is closed either way (psycopg_pool only logs the stuck workers); 5 s per pool would overrun
        a shutdown's own deadline (asgi-lifespan's is 5 s, Kubernetes' grace period is shared by everything).
        """
        await pool.close(timeout=_CLOSE_TIMEOUT)


def _timed_connect_class(base: type[Any], observe: Callable[[float], None]) -> type[Any]:
    """Return a subclass of ``base`` whose ``connect`` reports how long each successful connect took."""

    class TimedConnect(base):  # type: ignore[misc] # a subclass of the class the config names
        sqlspec_ops_timed = True

        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any) -> Any:
            started = perf_counter()
            connection = await super().connect(*args, **kwargs)
            observe(perf_counter() - started)  # successful connects only: failures have no creation time
            return connection

    TimedConnect.__name__ = TimedConnect.__qualname__ = f"TimedConnect{base.__name__}"
    return TimedConnect


@asynccontextmanager
async def _untimed(connection: Any) -> AsyncIterator[None]:
    """Run sqlspec-ops' own queries on a borrowed connection without its cursors timing them as the app's."""
    state = getattr(connection, "__dict__", None)
    armed = state.pop(_ARMED, None) if state is not None else None
    try:
        yield
    finally:
        if armed is not None:
            connection.__dict__[_ARMED] = armed


ADAPTER = PsycopgAdapter
"""The adapter class the registry instantiates for this driver's configs."""
