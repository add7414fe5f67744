"""MySQL and MariaDB through asyncmy: everything sqlspec-ops knows about SQLSpec's ``AsyncmyConfig``.

SQLSpec parses a ``dsn``/``url`` into ``host``, ``port``, ``user``, ``password`` and ``database`` when the config is
built (defaults ``localhost`` and 3306) and passes ``minsize``/``maxsize`` to ``asyncmy.create_pool`` (asyncmy's
defaults: 1 and 10). It borrows with ``ctx = pool.acquire(); conn = await ctx.__aenter__()`` and gives back with
``await ctx.__aexit__(...)``, which calls ``pool.release(conn)`` (not a coroutine: it returns an awaitable
future). asyncmy's ``Pool`` exposes ``size`` (free + used + being opened), ``freesize``, ``minsize`` and
``maxsize``; it keeps its waiters in a private condition, so the pool proxy counts them itself. asyncmy has no
acquire timeout: the proxy's ``asyncio.timeout`` raises ``TimeoutError``.

asyncmy's errors carry ``(errno, message)`` in ``args`` and the SQLSTATE in ``sqlstate``; SQLSpec maps them to
its own exceptions (``UniqueViolationError`` for 1062...) with the driver's error as ``__cause__``.
MySQL's conventions (and operators) speak in error numbers, so ``error.type`` is the number, not the SQLSTATE
(``23000`` covers every integrity error alike).

Nothing here imports asyncmy: configs are recognised by class path, connections and pools are duck-typed.
"""

import asyncio
from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlspec_ops._adapters.base import Adapter, PoolCounts, ServerRead
from sqlspec_ops._adapters.proxy import AcquireReleasePool

__all__ = ("AsyncmyAdapter", "AsyncmyPool", "MySQLLimits", "mysql_error_number")

_CLOSE_TIMEOUT = 1.0  # seconds to wait for borrowed connections when closing before closing them anyway
_MYSQL_DRIVERS = frozenset({"asyncmy", "aiomysql", "pymysql", "MySQLdb"})
_ACCESS_DENIED = 1227  # ER_SPECIFIC_ACCESS_DENIED_ERROR: "you need (at least one of) the PROCESS privilege(s)"
_SIZE_KEYS = ("min_size", "max_size", "pool_size")
# The account's own limit shows in the session value of max_user_connections when set (MySQL and MariaDB).
# The privileges that admit the extra connection: MariaDB spells CONNECTION ADMIN with a space, MySQL with "_".
_LIMITS_SQL = """
SELECT @@GLOBAL.max_connections,
       @@GLOBAL.max_user_connections,
       @@SESSION.max_user_connections,
       CURRENT_USER(),
       VERSION(),
       (SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES
         WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''',
                                SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')
           AND PRIVILEGE_TYPE IN ('SUPER', 'CONNECTION ADMIN', 'CONNECTION_ADMIN'))
"""
# One bounded round trip over both views, grouped on the server (at most a few rows come back). INNODB_TRX
# needs PROCESS, and without PROCESS the process list silently shows the account's own threads only, so its
# error is what tells an incomplete view from a complete one.
_SERVER_VIEW_SQL = """
SELECT p.USER = COALESCE(%s, SUBSTRING_INDEX(USER(), '@', 1)),
       p.COMMAND,
       t.trx_id IS NOT NULL,
       COALESCE(t.trx_state = 'LOCK WAIT', FALSE) OR COALESCE(p.STATE LIKE 'Waiting for%%lock', FALSE),
       COUNT(*),
       MAX(TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)))
  FROM information_schema.PROCESSLIST p
  LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID
 WHERE p.COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID')
 GROUP BY 1, 2, 3, 4
"""
# COMMAND values of a thread running a statement; Sleep is idle, the rest are named as the server names them.
_BUSY_COMMANDS = frozenset({"Query", "Execute", "Fetch", "Prepare", "Long Data", "Close stmt", "Reset stmt"})


def mysql_error_number(exc: BaseException) -> str | None:
    """Return the MySQL error number of one driver exception (``"1062"``), None for anything else.

    MySQL drivers of the DB-API family (asyncmy, aiomysql, PyMySQL, mysqlclient) raise ``(errno, message)``;
    only their own exceptions are read, so an unrelated ``OSError(111, ...)`` is never taken for MySQL's.

    Args:
        exc: An exception (not its cause chain; see :meth:`AsyncmyAdapter.error_code`).

    Returns:
        The error number as text, or None.

    """
    if type(exc).__module__.partition(".")[0] not in _MYSQL_DRIVERS:
        return None
    args = exc.args
    number = args[0] if args else None
    if isinstance(number, int) and not isinstance(number, bool) and number > 0:
        return str(number)
    return None


@dataclass(frozen=True, slots=True)
class MySQLLimits:
    """What a MySQL or MariaDB server allows one account, as read by :meth:`AsyncmyAdapter.read_limits`.

    MySQL admits ``max_connections`` client connections, plus exactly one more for an account with ``SUPER``
    or ``CONNECTION_ADMIN`` (MariaDB 10.5.2+: ``CONNECTION ADMIN``), so that an operator can still log in to
    a full server. That extra connection is not part of the app's budget: the budget is ``max_connections``
    (there is nothing like PostgreSQL's ``superuser_reserved_connections`` to subtract, the reserve is on
    top), and when the app's own account holds the privilege, :meth:`explain` says so, because the app can
    then take the operator's last way in. ``max_user_connections`` limits one account (``user@host``) across
    all its connections, whichever worker or replica opens them: the account's own ``MAX_USER_CONNECTIONS``
    when set, else the global value; 0 means no limit.
    """

    max_connections: int
    max_user_connections: int
    global_max_user_connections: int
    account: str
    admin: bool
    version: str

    @property
    def account_limit(self) -> int | None:
        """The connections this account may hold at once, None when unlimited (MariaDB's -1 allows none)."""
        if self.max_user_connections == 0:
            return None
        return max(0, self.max_user_connections)

    def explain(self) -> str:
        """Say how the server's budget was computed."""
        return f"max_connections {self.max_connections}; {self.note()}"

    def note(self) -> str:
        """Say how MySQL's extra administrative connection is counted (it is not)."""
        text = "MySQL's one extra connection for SUPER/CONNECTION_ADMIN accounts comes on top and is not counted"
        if self.admin:
            text += f" (the app's account {self.account} has that privilege: it can take the operator's way in)"
        return text

    def as_server_read(self) -> ServerRead:
        """Say it in the budget's terms: nothing reserved below max_connections, the account is the "role"."""
        return ServerRead(
            max_connections=self.max_connections,
            role=self.account,
            role_limit=self.account_limit,
            note=self.note(),
        )


class _Closing:
    """What ``AsyncmyPool.close()`` returns: closes the driver's pool when first awaited, once."""

    __slots__ = ("_adapter", "_pool")

    def __init__(self, adapter: Adapter, pool: Any) -> None:
        self._adapter = adapter
        self._pool = pool

    def __await__(self) -> Generator[Any, None, None]:
        return self._close().__await__()

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._adapter.close(pool)


class AsyncmyPool(AcquireReleasePool):
    """asyncmy's borrow API is ``acquire()``/``release()``; its close comes in two steps."""

    _closing: _Closing | None = None

    def close(self) -> "_Closing":  # type: ignore[override]
        """Close the driver's pool: await the result, or (asyncmy's way) call ``wait_closed()`` afterwards.

        SQLSpec's asyncmy config calls ``close()`` without awaiting it, then ``await wait_closed()``.
        """
        pool, self._inner = self._inner, None
        self._forget_holders()
        self.publish()
        self._closing = _Closing(self.adapter, pool)
        return self._closing

    async def wait_closed(self) -> None:
        """Finish a ``close()`` nobody awaited."""
        closing, self._closing = self._closing, None
        if closing is not None:
            await closing


class AsyncmyAdapter(Adapter):
    """asyncmy's ``Pool`` (MySQL and MariaDB): sized by ``minsize``/``maxsize``, read through ``size``/``freesize``."""

    name = "asyncmy"
    db_system = "mysql"  # the conventions' name for MariaDB too
    config_class = "sqlspec.adapters.asyncmy.config.AsyncmyConfig"
    default_host = "localhost"
    default_port = 3306
    default_max = 10
    default_min = 1
    max_key = "maxsize"
    min_key = "minsize"
    proxy_class = AsyncmyPool
    library_packages = frozenset({"asyncmy"})

    def problems(self, config: Any) -> list[str]:
        """Flag the size keys of other adapters: SQLSpec hands them to ``asyncmy.connect``, which rejects them."""
        found = [key for key in _SIZE_KEYS if key in (config.connection_config or {})]
        if not found:
            return []
        return [
            (
                f"AsyncmyConfig is sized by 'minsize' and 'maxsize', not {' or '.join(map(repr, found))}: SQLSpec "
                "passes unknown keys on to asyncmy.connect(), which rejects them, so no connection can be opened. "
                "Rename min_size to 'minsize' and max_size to 'maxsize'."
            )
        ]

    def counts(self, pool: Any) -> PoolCounts:
        """Return open (``size`` also counts connections being opened) and idle (``freesize``) connections."""
        return PoolCounts(open=int(pool.size), idle=int(pool.freesize))

    async def ping(self, connection: Any) -> None:
        """Run ``SELECT 1``."""
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
            await cursor.fetchone()

    async def fetch_row(self, connection: Any, sql: str) -> list[Any]:
        """Return the first row as a list (tuple or dict cursors)."""
        return (await self._fetch(connection, sql, None, one=True))[0]

    has_server_view = True

    @asynccontextmanager
    async def borrow(self, pool: Any, timeout: float) -> AsyncIterator[Any]:  # noqa: ASYNC109 - the acquire wait only
        """Borrow from asyncmy's pool itself (not the proxy): asyncmy has no acquire timeout, so bound it here."""
        async with asyncio.timeout(timeout):
            connection = await pool.acquire()
        try:
            yield connection
        finally:
            await pool.release(connection)

    def transaction_state(self, connection: Any) -> bool | None:
        """Read the server's ``SERVER_STATUS_IN_TRANS`` flag asyncmy keeps from the last reply."""
        return bool(connection.get_transaction_status())

    def acquire_timeout_error(self, exc: BaseException) -> bool:
        """Count only the proxy's ``asyncio.timeout``: asyncmy has no acquire timeout of its own."""
        return isinstance(exc, TimeoutError)

    async def close(self, pool: Any) -> None:
        """Close the pool; connections still borrowed after one second are closed under their holders.

        asyncmy's ``wait_closed()`` waits for every borrowed connection to come back, for ever: a leaked
        connection or a request stuck on a silent server would hang the shutdown past its deadline.
        """
        pool.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await pool.wait_closed()
        except TimeoutError:
            pool.terminate()
            await pool.wait_closed()

    async def close_connection(self, connection: Any) -> None:
        """Close a standalone connection (asyncmy's ``close()`` is synchronous)."""
        connection.close()

    def error_code(self, exc: BaseException) -> str | None:
        """Return the MySQL error number of one exception (``"1062"`` for a duplicate key), not the SQLSTATE.

        asyncmy's errors carry a SQLSTATE too, but ``23000`` covers every integrity error alike; the caller walks
        SQLSpec's wrapper to the driver's error.
        """
        return mysql_error_number(exc)

    async def read_limits(self, connection: Any) -> ServerRead:
        """Read the server's and this account's connection limits in the budget's terms."""
        return (await self.read_mysql_limits(connection)).as_server_read()

    async def read_mysql_limits(self, connection: Any) -> MySQLLimits:
        """Read ``max_connections`` and this account's ``max_user_connections`` (see :class:`MySQLLimits`).

        Args:
            connection: A borrowed or standalone asyncmy connection of the app's account.

        Returns:
            The limits.

        """
        row = await self.fetch_row(connection, _LIMITS_SQL)
        max_connections, global_user, session_user, account, version, admin = row
        return MySQLLimits(
            max_connections=int(max_connections),
            max_user_connections=int(session_user),
            global_max_user_connections=int(global_user),
            account=str(account),
            admin=int(admin or 0) > 0,
            version=str(version),
        )

    async def server_view(self, connection: Any, user: str | None = None, *, pooled: bool = True) -> dict[str, Any]:  # noqa: ARG002 - counted alike
        """Return what the server sees: this app's connections by state, other clients, open transactions.

        MySQL has no ``application_name``, and the ``program_name`` connection attribute asyncmy can send is
        only readable through ``performance_schema``, which MariaDB leaves off. So "this app" is the pools'
        account (the ``USER`` column): like ``application_name`` on PostgreSQL it covers every worker and replica
        of the app; another app sharing the account counts as this one. States follow PostgreSQL's words so
        dashboards read alike: ``idle`` (``Sleep``), ``idle in transaction`` (``Sleep`` with an open InnoDB
        transaction), ``active`` (running a statement), else the ``COMMAND`` as the server names it. The
        connection running this query is counted as active.

        Args:
            connection: A borrowed asyncmy connection.
            user: The app's MySQL user name; None takes the connection's own.
            pooled: Unused: the connection running the query is counted as active either way.

        Returns:
            ``{"this_app": {state: n}, "other_clients": n, "idle_in_transaction": n (all accounts),
            "oldest_transaction_s": x | None, "waiting_on_lock": n}``, or ``{"error": ...}`` naming the missing
            privilege (``PROCESS``) when the server would only show the account's own connections.

        """
        try:
            rows = await self._fetch(connection, _SERVER_VIEW_SQL, (user,), one=False)
        except Exception as exc:
            if self.error_code(exc) == str(_ACCESS_DENIED):
                return {
                    "error": (
                        "the account needs the PROCESS privilege to see other clients and transactions "
                        "(GRANT PROCESS ON *.* TO the app's account)"
                    )
                }
            raise
        this_app: dict[str, int] = {}
        other = idle_in_transaction = waiting = 0
        oldest_us: int | None = None
        for mine, command, in_transaction, lock_wait, how_many, longest_us in rows:
            count = int(how_many)
            if lock_wait:
                waiting += count
            if longest_us is not None:
                oldest_us = max(int(longest_us), oldest_us or 0)
            idle = command == "Sleep"
            if idle and in_transaction:
                idle_in_transaction += count
            if not mine:
                other += count
                continue
            state = _state(str(command), idle=idle, in_transaction=bool(in_transaction))
            this_app[state] = this_app.get(state, 0) + count
        return {
            "this_app": this_app,
            "other_clients": other,
            "idle_in_transaction": idle_in_transaction,
            "oldest_transaction_s": round(oldest_us / 1e6, 3) if oldest_us is not None else None,
            "waiting_on_lock": waiting,
        }

    async def _fetch(self, connection: Any, sql: str, args: Any, *, one: bool) -> list[list[Any]]:
        async with connection.cursor() as cursor:
            await cursor.execute(sql, args)
            rows = [await cursor.fetchone()] if one else list(await cursor.fetchall())
        return [[] if row is None else list(row.values()) if isinstance(row, Mapping) else list(row) for row in rows]


def _state(command: str, *, idle: bool, in_transaction: bool) -> str:
    if idle:
        return "idle in transaction" if in_transaction else "idle"
    return "active" if command in _BUSY_COMMANDS else command.lower()


ADAPTER = AsyncmyAdapter
"""The adapter class the registry instantiates for this driver's configs."""
