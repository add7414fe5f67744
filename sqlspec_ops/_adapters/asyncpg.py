"""asyncpg: ``Pool`` has public size getters; waiters and wait times need the proxy."""

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any, ClassVar

from sqlspec_ops._adapters.base import PoolCounts
from sqlspec_ops._adapters.postgres import PostgresAdapter, dsn_application_name
from sqlspec_ops._adapters.proxy import AcquireReleasePool

__all__ = ("AsyncpgAdapter", "AsyncpgPool")


class AsyncpgPool(AcquireReleasePool):
    """asyncpg's borrow API: ``acquire(timeout=...)`` (awaitable and ``async with``) and ``release()``."""

    timeout_keyword: ClassVar[str | None] = "timeout"


class AsyncpgAdapter(PostgresAdapter):
    """asyncpg's ``Pool`` (asyncpg opens all ``min_size`` connections, 10 by default, when the pool is created)."""

    name = "asyncpg"
    config_class = "sqlspec.adapters.asyncpg.config.AsyncpgConfig"
    default_max = 10
    default_min = 10
    proxy_class = AsyncpgPool

    def counts(self, pool: Any) -> PoolCounts:
        """Return open and idle connection counts."""
        return PoolCounts(open=pool.get_size(), idle=pool.get_idle_size())

    async def ping(self, connection: Any) -> None:
        """Run ``SELECT 1``."""
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
        """Return the first row as a list."""
        record = await connection.fetchrow(sql, *args)
        return list(record.values()) if record is not None else []

    async def fetch_row(self, connection: Any, sql: str) -> list[Any]:
        """Return the first row as a list (asyncpg has no cursors outside transactions)."""
        record = await connection.fetchrow(sql)
        return list(record.values()) if record is not None else []


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
