"""Find the adapter support for a SQLSpec config; adding a driver means adding its module to ``_ADAPTER_MODULES``.

A config is recognised by its class path, so no driver is imported to find out, and an adapter module is only
imported once a config of its driver turns up (an app on asyncpg never loads the MySQL or SQLite support).
"""

import importlib
from typing import Any

from sqlspec_ops._adapters.base import Adapter, PoolTarget

__all__ = ("adapter_for", "describe_config")

# SQLSpec config class path -> the sqlspec-ops module whose ``ADAPTER`` class supports it (its ``config_class``).
_ADAPTER_MODULES: dict[str, str] = {
    "sqlspec.adapters.asyncpg.config.AsyncpgConfig": "sqlspec_ops._adapters.asyncpg",
    "sqlspec.adapters.psycopg.config.PsycopgAsyncConfig": "sqlspec_ops._adapters.psycopg",
    "sqlspec.adapters.asyncmy.config.AsyncmyConfig": "sqlspec_ops._adapters.asyncmy",
    "sqlspec.adapters.aiosqlite.config.AiosqliteConfig": "sqlspec_ops._adapters.aiosqlite",
}
_loaded: dict[str, Adapter] = {}


def _adapter(config_class: str) -> Adapter | None:
    adapter = _loaded.get(config_class)
    if adapter is None:
        module = _ADAPTER_MODULES.get(config_class)
        if module is None:
            return None
        adapter = _loaded[config_class] = importlib.import_module(module).ADAPTER()
    return adapter


def adapter_for(config: Any) -> Adapter | None:
    """Return the adapter support for a config, or None when sqlspec-ops does not support it yet."""
    for klass in type(config).__mro__:
        adapter = _adapter(f"{klass.__module__}.{klass.__qualname__}")
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
