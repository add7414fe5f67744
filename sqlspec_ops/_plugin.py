"""SQLSpec's FastAPI and Starlette plugins: give the sessions they inject the observability SQLSpec forgets to attach.

SQLSpec 0.69's ``SQLSpecPlugin`` builds the sessions its ``get_session()`` (and the FastAPI plugin's
``provide_session()`` dependencies) return without the config's observability runtime, so their statements
reach no lifecycle hook: no metrics, no spans. Sessions from ``spec.provide_session(config)`` get it; this module
makes the plugin's match.

Which config a session key belongs to is read from the plugin's own config states, the table its
``get_session`` itself resolves keys with, so every shape the plugin accepts (``extension_config["fastapi"]`` on
the FastAPI plugin, ``["starlette"]`` on the Starlette one, none, custom session keys, several configs) maps the
same way SQLSpec maps it. Pinned by ``sqlspec<0.70`` and ``tests/test_plugin_shapes.py``.
"""

import logging
from typing import Any

from sqlspec import SQLSpec

__all__ = ("attach_plugin_sessions",)

logger = logging.getLogger("sqlspec_ops")

_observed_classes: dict[type, type] = {}


def attach_plugin_sessions(app: Any, spec: SQLSpec) -> None:  # noqa: ARG001 - the plugin knows its configs
    """Give sessions injected by SQLSpec's plugin on ``app`` the config's observability runtime (idempotent).

    The plugin instance's class is swapped for a subclass whose ``get_session`` attaches the runtime after
    SQLSpec built the session. A subclass rather than an instance attribute because the Starlette plugin has
    ``__slots__`` (the subclass adds no slot, so the instance layout is unchanged).
    """
    plugin = getattr(app.state, "sqlspec_plugin", None)
    if plugin is None or type(plugin) in _observed_classes.values():
        return
    states = getattr(plugin, "_config_states", None)
    if not isinstance(states, list) or not hasattr(plugin, "_config_state_by_key"):
        logger.warning("cannot attach observability to %s sessions: unknown plugin layout", type(plugin).__name__)
        return
    try:
        plugin.__class__ = _observed_class(type(plugin))
    except TypeError:
        logger.warning("cannot attach observability to %s sessions", type(plugin).__name__)


def _observed_class(base: type) -> type:
    observed = _observed_classes.get(base)
    if observed is None:

        def get_session(self: Any, request: Any, key: str | None = None) -> Any:
            session = base.get_session(self, request, key)  # type: ignore[attr-defined]
            if getattr(session, "_observability", None) is None:
                # the same lookup SQLSpec's get_session just made, so the session and its config always match
                state = self._config_states[0] if key is None else self._config_state_by_key(key)
                session.attach_observability(state.config.get_observability_runtime())
            return session

        observed = type(base.__name__, (base,), {"__slots__": (), "get_session": get_session})
        observed.__module__ = base.__module__
        observed.__qualname__ = base.__qualname__
        _observed_classes[base] = observed
    return observed
