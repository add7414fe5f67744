"""aiosqlite through SQLSpec's own pool (sized by ``pool_size``, not ``max_size``)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlspec_ops._adapters.base import Adapter, PoolCounts, PoolTarget
from sqlspec_ops._adapters.proxy import AcquireReleasePool

__all__ = ("AiosqliteAdapter", "AiosqlitePool")


class AiosqlitePool(AcquireReleasePool):
    """SQLSpec's aiosqlite pool: ``acquire()``/``release()`` of pooled connections plus ``get_connection()``."""

    @asynccontextmanager
    async def get_connection(self) -> AsyncIterator[Any]:
        """Borrow a connection the way SQLSpec's aiosqlite ``provide_connection`` does."""
        pooled = await self._acquire(None)
        try:
            yield pooled.connection
        finally:
            await self.release(pooled)

    @property
    def is_closed(self) -> bool:
        """Mirror of SQLSpec's aiosqlite pool attribute, read by its ``close_pool``."""
        return self._inner is None or bool(getattr(self._inner, "is_closed", False))


class AiosqliteAdapter(Adapter):
    """SQLSpec's aiosqlite pool: an embedded database, no server to budget for."""

    name = "aiosqlite"
    db_system = "sqlite"
    config_class = "sqlspec.adapters.aiosqlite.config.AiosqliteConfig"
    default_max = 5
    default_min = 0
    max_key = "pool_size"
    proxy_class = AiosqlitePool
    library_packages = frozenset({"aiosqlite"})

    def describe(self, config: Any) -> PoolTarget:
        """Return the database file (or ``:memory:``) as the target, as the user configured it.

        SQLSpec rewrites ``:memory:`` into a shared-cache URI with a fresh uuid per config; naming the pool after
        that would give every process and every start a new metric series.
        """
        cc = config.connection_config or {}
        database = cc.get("database")
        text = str(database or ":memory:")
        if text.startswith("file:memory_") and "mode=memory" in text:
            text = ":memory:"
        return PoolTarget(adapter=self.name, db_system=self.db_system, database=text)

    def problems(self, config: Any) -> list[str]:
        """Flag ``max_size``: SQLSpec hands it to ``sqlite3.connect`` and every acquire then times out."""
        if "max_size" in (config.connection_config or {}):
            return [
                (
                    "AiosqliteConfig is sized by 'pool_size', not 'max_size': SQLSpec passes 'max_size' on to "
                    "sqlite3.connect(), which rejects it, so every acquire fails after connect_timeout. "
                    "Rename the key to 'pool_size'."
                )
            ]
        return []

    def counts(self, pool: Any) -> PoolCounts:
        """Return open and idle connection counts."""
        size = pool.size()
        return PoolCounts(open=size, idle=size - pool.checked_out())

    async def ping(self, connection: Any) -> None:
        """Run ``SELECT 1``."""
        cursor = await connection.execute("SELECT 1")
        try:
            await cursor.fetchone()
        finally:
            await cursor.close()

    def transaction_state(self, connection: Any) -> bool | None:
        """sqlite3's ``in_transaction`` (the proxy holds SQLSpec's pooled wrapper around aiosqlite's connection)."""
        inner = getattr(connection, "connection", connection)
        return bool(inner.in_transaction)

    def error_code(self, exc: BaseException) -> str | None:
        """Return SQLite's error name (``SQLITE_CONSTRAINT_UNIQUE``...) that Python's sqlite3 errors carry."""
        code = getattr(exc, "sqlite_errorname", None)
        return code if isinstance(code, str) and code else None

    def acquire_timeout_error(self, exc: BaseException) -> bool:
        """SQLSpec's pool raises ``AiosqliteConnectTimeoutError`` after ``connect_timeout``."""
        return isinstance(exc, TimeoutError) or type(exc).__name__ == "AiosqliteConnectTimeoutError"


ADAPTER = AiosqliteAdapter
"""The adapter class the registry instantiates for this driver's configs."""
