"""psycopg 3 with psycopg_pool's ``AsyncConnectionPool``: connections are borrowed through ``pool.connection()``."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlspec_ops._adapters.base import PoolCounts, failure_name
from sqlspec_ops._adapters.postgres import PostgresAdapter, dsn_application_name
from sqlspec_ops._adapters.proxy import InstrumentedPool

__all__ = ("PsycopgAdapter", "PsycopgPool")

_CLOSE_TIMEOUT = 1.0  # seconds psycopg_pool waits for its worker tasks when closing
_IN_TRANSACTION = frozenset({2, 3})  # psycopg.pq.TransactionStatus.INTRANS, INERROR (not imported: no driver import)

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
        self._acquired(key, started, connection)
        try:
            yield connection
        except BaseException as exc:
            self._released(key)  # before the pool gets it back: it may hand it to a waiter at once
            try:
                await context.__aexit__(type(exc), exc, exc.__traceback__)
            finally:
                self._returned()
            raise
        else:
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
        """Run ``SELECT 1``."""
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
        """Return the first row as a list."""
        cursor = await connection.execute(sql, args)
        row = await cursor.fetchone()
        if row is None:
            return []
        return list(row.values()) if isinstance(row, dict) else list(row)

    def acquire_timeout_error(self, exc: BaseException) -> bool:
        """psycopg_pool raises its own ``PoolTimeout``."""
        return isinstance(exc, TimeoutError) or type(exc).__name__ == "PoolTimeout"

    async def close(self, pool: Any) -> None:
        """Close without psycopg_pool's 5 s wait for workers stuck connecting to a server that never answers.

        The pool is closed either way (psycopg_pool only logs the stuck workers); 5 s per pool would overrun
        a shutdown's own deadline (asgi-lifespan's is 5 s, Kubernetes' grace period is shared by everything).
        """
        await pool.close(timeout=_CLOSE_TIMEOUT)


ADAPTER = PsycopgAdapter
"""The adapter class the registry instantiates for this driver's configs."""
