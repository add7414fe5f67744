"""asyncpg: ``Pool`` has public size getters; waiters and wait times need the proxy."""

from typing import Any, ClassVar

from sqlspec_ops._adapters.base import PoolCounts
from sqlspec_ops._adapters.postgres import PostgresAdapter
from sqlspec_ops._pools import AcquireReleasePool

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

    async def fetch_row(self, connection: Any, sql: str) -> list[Any]:
        """Return the first row as a list (asyncpg has no cursors outside transactions)."""
        record = await connection.fetchrow(sql)
        return list(record.values()) if record is not None else []
