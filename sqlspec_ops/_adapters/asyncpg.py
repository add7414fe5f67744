"""asyncpg: ``Pool`` has public size getters; waiters and wait times need the proxy; statements are timed by asyncpg.

Statement telemetry on asyncpg does not use SQLSpec's lifecycle hooks: SQLSpec 0.69 runs its instrumented
execution path for every statement as soon as a config has one (about 23 µs per statement), with no switch to
avoid it. Instead the pool is created with asyncpg's documented ``connection_class`` argument set to a subclass of
``asyncpg.Connection`` (of the user's own ``connection_class`` when one is configured) whose ``fetch``,
``fetchrow``, ``fetchval``, ``execute`` and ``executemany`` (what SQLSpec's asyncpg driver calls) time the call in
the caller's task: the current span is the request's, the running statement is visible to ``/ops/pools`` while it
runs, and a cancellation is seen as the ``CancelledError`` it is. No driver class is patched.

A connection times statements only while the pool proxy has it out ("armed" at acquire, after SQLSpec's and the
user's ``init`` ran; disarmed before the pool resets it on release), so asyncpg's reset query, the ``init``
callbacks and connections sqlspec-ops borrows for itself (health pings, the server's view) are never counted.
asyncpg's type introspection goes through private methods and is never seen either. Transaction control
(``BEGIN``/``COMMIT``/``ROLLBACK``/savepoints, which asyncpg's ``Transaction`` and SQLSpec's ``begin()``/``commit()``
send through ``execute``) is not counted, as SQLSpec's hooks do not see it.
"""

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from time import perf_counter
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlspec.utils.correlation import correlation_id_var

from sqlspec_ops._adapters._operations import operation_of
from sqlspec_ops._adapters.base import PoolCounts
from sqlspec_ops._adapters.postgres import PostgresAdapter, dsn_application_name
from sqlspec_ops._adapters.proxy import AcquireReleasePool

if TYPE_CHECKING:
    from sqlspec_ops._holders import Holder
    from sqlspec_ops._statements import StatementTelemetry

__all__ = ("AsyncpgAdapter", "AsyncpgPool", "TimedConnection")


class TimedConnection(asyncpg.Connection):
    """An ``asyncpg.Connection`` that times the calls SQLSpec's driver makes while the pool proxy has it out."""

    # (telemetry, holder) while the proxy has the connection out; None otherwise (the calls pass straight on).
    _sqlspec_ops_armed: "tuple[StatementTelemetry, Holder | None] | None" = None

    def sqlspec_ops_arm(self, armed: "tuple[StatementTelemetry, Holder | None] | None") -> None:
        """Time statements into this telemetry and hold from now on (None: stop; the pool proxy calls this)."""
        self._sqlspec_ops_armed = armed

    def sqlspec_ops_disarm(self) -> "tuple[StatementTelemetry, Holder | None] | None":
        """Stop timing and return what was armed (sqlspec-ops' own queries: pings, the server's view, limits)."""
        armed, self._sqlspec_ops_armed = self._sqlspec_ops_armed, None
        return armed

    # The five overrides below repeat one shape on purpose: a shared helper would add a coroutine (and a frame)
    # to every statement, and this is the per-statement path benchmarks/statement_overhead.py measures.

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``asyncpg.Connection.fetch``, timed."""
        armed = self._sqlspec_ops_armed
        operation = None if armed is None else operation_of(query)
        if operation is None or armed is None:
            return await super().fetch(query, *args, **kwargs)
        telemetry = armed[0]
        request_id = correlation_id_var.get()
        started = telemetry.begin(query, operation, request_id, armed[1])
        try:
            result = await super().fetch(query, *args, **kwargs)
        except BaseException as exc:  # cancellations too: they are counted and fail the span
            telemetry.finish(started, operation, query, request_id, failed=True, exc=exc)
            raise
        telemetry.finish(started, operation, query, request_id, failed=False)
        return result

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``asyncpg.Connection.fetchrow``, timed."""
        armed = self._sqlspec_ops_armed
        operation = None if armed is None else operation_of(query)
        if operation is None or armed is None:
            return await super().fetchrow(query, *args, **kwargs)
        telemetry = armed[0]
        request_id = correlation_id_var.get()
        started = telemetry.begin(query, operation, request_id, armed[1])
        try:
            result = await super().fetchrow(query, *args, **kwargs)
        except BaseException as exc:
            telemetry.finish(started, operation, query, request_id, failed=True, exc=exc)
            raise
        telemetry.finish(started, operation, query, request_id, failed=False)
        return result

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``asyncpg.Connection.fetchval``, timed."""
        armed = self._sqlspec_ops_armed
        operation = None if armed is None else operation_of(query)
        if operation is None or armed is None:
            return await super().fetchval(query, *args, **kwargs)
        telemetry = armed[0]
        request_id = correlation_id_var.get()
        started = telemetry.begin(query, operation, request_id, armed[1])
        try:
            result = await super().fetchval(query, *args, **kwargs)
        except BaseException as exc:
            telemetry.finish(started, operation, query, request_id, failed=True, exc=exc)
            raise
        telemetry.finish(started, operation, query, request_id, failed=False)
        return result

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``asyncpg.Connection.execute``, timed."""
        armed = self._sqlspec_ops_armed
        operation = None if armed is None else operation_of(query)
        if operation is None or armed is None:
            return await super().execute(query, *args, **kwargs)
        telemetry = armed[0]
        request_id = correlation_id_var.get()
        started = telemetry.begin(query, operation, request_id, armed[1])
        try:
            result = await super().execute(query, *args, **kwargs)
        except BaseException as exc:
            telemetry.finish(started, operation, query, request_id, failed=True, exc=exc)
            raise
        telemetry.finish(started, operation, query, request_id, failed=False)
        return result

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> None:
        """Run ``asyncpg.Connection.executemany``, timed (one statement, however many parameter sets)."""
        armed = self._sqlspec_ops_armed
        operation = None if armed is None else operation_of(command)
        if operation is None or armed is None:
            await super().executemany(command, args, **kwargs)
            return
        telemetry = armed[0]
        request_id = correlation_id_var.get()
        started = telemetry.begin(command, operation, request_id, armed[1])
        try:
            await super().executemany(command, args, **kwargs)
        except BaseException as exc:
            telemetry.finish(started, operation, command, request_id, failed=True, exc=exc)
            raise
        telemetry.finish(started, operation, command, request_id, failed=False)


_timed_classes: dict[type[Any], type[Any]] = {}


def _timed_connection_class(base: type[Any] | None) -> type[Any]:
    """Return the timing subclass of ``base`` (the user's ``connection_class``; None: ``asyncpg.Connection``)."""
    if base is None or base is asyncpg.Connection or issubclass(base, TimedConnection):
        return TimedConnection if base is None or base is asyncpg.Connection else base
    timed = _timed_classes.get(base)
    if timed is None:
        # TimedConnection first in the MRO: its super() calls reach the user's overrides, then asyncpg's.
        timed = _timed_classes[base] = type(f"Timed{base.__name__}", (TimedConnection, base), {})
    return timed


class AsyncpgPool(AcquireReleasePool):
    """asyncpg's borrow API: ``acquire(timeout=...)`` (awaitable and ``async with``) and ``release()``."""

    def _arm(self, connection: Any, holder: "Holder") -> None:
        # Armed only now: SQLSpec's and the user's init ran when the connection was made. asyncpg's pool hands
        # out a proxy that forwards unknown attributes to the connection, so the call reaches TimedConnection
        # (a pool adopted from elsewhere may hold plain connections: those are not timed).
        arm = getattr(connection, "sqlspec_ops_arm", None)
        if arm is not None:
            arm((self.statements, holder))

    def _disarm(self, connection: Any) -> None:
        arm = getattr(connection, "sqlspec_ops_arm", None)
        if arm is not None:
            arm(None)


class AsyncpgAdapter(PostgresAdapter):
    """asyncpg's ``Pool`` (asyncpg opens all ``min_size`` connections, 10 by default, when the pool is created)."""

    name = "asyncpg"
    config_class = "sqlspec.adapters.asyncpg.config.AsyncpgConfig"
    default_max = 10
    default_min = 10
    proxy_class = AsyncpgPool
    library_packages = frozenset({"asyncpg"})
    times_statements = True

    def time_statements(self, config: Any) -> bool:
        """Create the pool with a timing ``connection_class`` (the user's own one subclassed, not replaced)."""
        cc = config.connection_config
        current = cc.get("connection_class")
        if current is not None and not (isinstance(current, type) and issubclass(current, asyncpg.Connection)):
            return False  # not a Connection class asyncpg would accept: leave it to asyncpg to say so
        cc["connection_class"] = _timed_connection_class(current)
        return True

    def counts(self, pool: Any) -> PoolCounts:
        """Return open and idle connection counts."""
        return PoolCounts(open=pool.get_size(), idle=pool.get_idle_size())

    async def ping(self, connection: Any) -> None:
        """Run ``SELECT 1`` (not counted as one of the app's statements)."""
        async with _untimed(connection):
            await connection.fetchval("SELECT 1")

    def transaction_state(self, connection: Any) -> bool | None:
        """Read the transaction status asyncpg tracks on the connection (``is_in_transaction()``)."""
        return bool(connection.is_in_transaction())

    def application_name(self, config: Any) -> str | None:
        """Return ``server_settings["application_name"]``, else the one in the DSN."""
        cc = config.connection_config or {}
        settings = cc.get("server_settings") or {}
        name = settings.get("application_name")
        if name:
            return str(name)
        return dsn_application_name(cc.get("dsn") or cc.get("url") or cc.get("conninfo") or cc.get("connection_string"))

    def apply_application_name(self, config: Any, name: str) -> str | None:
        """Put ``application_name`` into ``server_settings`` (asyncpg sends them at connect) unless one is set."""
        current = self.application_name(config)
        if current:
            return current
        cc = config.connection_config
        cc["server_settings"] = {**(cc.get("server_settings") or {}), "application_name": name}
        return name

    def time_connects(self, config: Any, observe: Callable[[float], None]) -> bool:
        """Time each connect through asyncpg's ``create_pool(connect=...)`` hook (the config's own one is kept)."""
        cc = config.connection_config
        current = cc.get("connect")
        if getattr(current, "sqlspec_ops_timed", False):
            return True
        cc["connect"] = _timed_connect(config, current, observe)
        return True

    @asynccontextmanager
    async def borrow(self, pool: Any, timeout: float) -> AsyncIterator[Any]:  # noqa: ASYNC109 - the acquire wait only
        """Borrow from asyncpg's pool itself (not the proxy) within ``timeout``."""
        connection = await pool.acquire(timeout=timeout)
        try:
            yield connection
        finally:
            await pool.release(connection)

    async def fetch_one(self, connection: Any, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """Return the first row as a list (not counted as one of the app's statements)."""
        async with _untimed(connection):
            record = await connection.fetchrow(sql, *args)
        return list(record.values()) if record is not None else []

    async def fetch_row(self, connection: Any, sql: str) -> list[Any]:
        """Return the first row as a list (asyncpg has no cursors outside transactions; not counted)."""
        async with _untimed(connection):
            record = await connection.fetchrow(sql)
        return list(record.values()) if record is not None else []


@asynccontextmanager
async def _untimed(connection: Any) -> AsyncIterator[None]:
    """Run sqlspec-ops' own queries on a borrowed connection without timing them as the app's."""
    disarm = getattr(connection, "sqlspec_ops_disarm", None)
    armed = disarm() if disarm is not None else None
    try:
        yield
    finally:
        if armed is not None:
            connection.sqlspec_ops_arm(armed)


def _timed_connect(
    config: Any, connect: Callable[..., Awaitable[Any]] | None, observe: Callable[[float], None]
) -> Callable[..., Awaitable[Any]]:
    """Wrap the pool's connect callable (asyncpg's own ``connect`` by default) to observe its duration.

    asyncpg's pool calls it with the connection arguments; SQLSpec's ``create_connection()`` (a standalone
    connection: the budget check, the server's-view sampler when every pool connection is out) calls a
    configured ``connect`` with none, so then the wrapper passes the config's own connection arguments, the ones
    ``asyncpg.connect`` accepts.
    """

    async def timed_connect(*args: Any, **kwargs: Any) -> Any:
        import asyncpg  # noqa: PLC0415 - asyncpg is imported only once it is used

        if connect is not None:
            target: Callable[..., Awaitable[Any]] = connect
        else:
            target = asyncpg.connect
            if not args and not kwargs:
                kwargs = _standalone_arguments(config, asyncpg.connect)
        started = perf_counter()
        connection = await target(*args, **kwargs)
        observe(perf_counter() - started)  # successful connects only: failures have no creation time
        return connection

    timed_connect.sqlspec_ops_timed = True  # type: ignore[attr-defined]
    return timed_connect


def _standalone_arguments(config: Any, connect: Callable[..., Any]) -> dict[str, Any]:
    """Return the config's arguments for ``asyncpg.connect`` (pool-only keys dropped, DSN aliases resolved)."""
    from sqlspec.adapters.asyncpg.core import build_connection_config  # noqa: PLC0415 - asyncpg configs only

    accepted = inspect.signature(connect).parameters
    arguments = {
        key: value
        for key, value in build_connection_config(config.connection_config).items()
        if value is not None and key in accepted and key != "connect"
    }
    if config.connection_config.get("pgbouncer") or config.driver_features.get("pgbouncer"):
        arguments["statement_cache_size"] = 0
    return arguments


ADAPTER = AsyncpgAdapter
"""The adapter class the registry instantiates for this driver's configs."""
