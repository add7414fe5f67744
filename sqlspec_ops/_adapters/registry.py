"""Find the adapter support for a SQLSpec config; adding a driver means adding its module to ``_ADAPTERS``."""

from typing import Any

from sqlspec_ops._adapters.aiosqlite import AiosqliteAdapter
from sqlspec_ops._adapters.asyncmy import AsyncmyAdapter
from sqlspec_ops._adapters.asyncpg import AsyncpgAdapter
from sqlspec_ops._adapters.base import Adapter, PoolTarget
from sqlspec_ops._adapters.psycopg import PsycopgAdapter

__all__ = ("adapter_for", "describe_config")

_ADAPTERS: dict[str, Adapter] = {
    a.config_class: a for a in (AsyncpgAdapter(), PsycopgAdapter(), AsyncmyAdapter(), AiosqliteAdapter())
}


def adapter_for(config: Any) -> Adapter | None:
    """Return the adapter support for a config, or None when sqlspec-ops does not support it yet."""
    for klass in type(config).__mro__:
        adapter = _ADAPTERS.get(f"{klass.__module__}.{klass.__qualname__}")
        if adapter is not None:
            return adapter
    return None


def describe_config(config: Any) -> PoolTarget:
    """Return a config's target, also for unsupported adapters (best effort, never raises)."""
    adapter = adapter_for(config)
    try:
        target = (adapter or Adapter()).describe(config)
    except Exception:
        target = PoolTarget(adapter="unknown", db_system="other_sql")
    if adapter is None:
        target = PoolTarget(
            adapter=type(config).__name__,
            db_system=target.db_system,
            host=target.host,
            port=target.port,
            database=target.database,
        )
    return target
