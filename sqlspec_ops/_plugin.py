"""SQLSpec's FastAPI plugin: give the sessions it injects the observability SQLSpec forgets to attach.

SQLSpec 0.69's ``SQLSpecPlugin`` builds the sessions its ``provide_session()`` dependencies inject without the
config's observability runtime, so their statements reach no lifecycle hook: no metrics, no spans. Sessions
from ``spec.provide_session(config)`` get it; this module makes the plugin's match.
"""

import logging
from typing import Any

from fastapi import FastAPI
from sqlspec import SQLSpec

__all__ = ("attach_plugin_sessions",)

logger = logging.getLogger("sqlspec_ops")


def attach_plugin_sessions(app: FastAPI, spec: SQLSpec) -> None:
    """Give sessions injected by SQLSpec's FastAPI plugin the config's observability runtime.

    SQLSpec 0.69's plugin builds those sessions without it, so their statements reach no hook (no metrics,
    no spans). The plugin instance's ``get_session`` (which its ``provide_session()`` dependencies call) is
    wrapped to attach the runtime, the same thing SQLSpec does for ``spec.provide_session()`` sessions.
    """
    plugin = getattr(app.state, "sqlspec_plugin", None)
    if plugin is None or getattr(plugin, "_sqlspec_ops_attached", False):
        return
    configs = list(spec.configs.values())
    get_session = plugin.get_session

    def get_session_with_observability(request: Any, key: str | None = None) -> Any:
        session = get_session(request, key)
        config = _config_for_session_key(configs, key)
        if config is not None and getattr(session, "_observability", None) is None:
            session.attach_observability(config.get_observability_runtime())
        return session

    try:
        plugin.get_session = get_session_with_observability
        plugin._sqlspec_ops_attached = True  # noqa: SLF001
    except AttributeError:  # a plugin class with __slots__: nothing to attach to
        logger.warning("cannot attach observability to %s sessions", type(plugin).__name__)


def _config_for_session_key(configs: list[Any], key: str | None) -> Any:
    if key is None:
        return configs[0] if configs else None
    for config in configs:
        settings = (config.extension_config or {}).get("fastapi") or (config.extension_config or {}).get("starlette")
        if (settings or {}).get("session_key", "db_session") == key:
            return config
    return None
