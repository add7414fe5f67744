"""One record per SQLSpec config: its name, target, adapter and what sqlspec-ops installed on it."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlspec_ops._adapters.base import Adapter, PoolSizes, PoolTarget
from sqlspec_ops._adapters.proxy import InstrumentedPool
from sqlspec_ops._adapters.registry import adapter_for, describe_config
from sqlspec_ops._statements import StatementTelemetry

__all__ = ("Database", "discover")


@dataclass(eq=False, slots=True)
class Database:
    """A SQLSpec config as sqlspec-ops sees it."""

    config: Any
    name: str
    """The pool label: ``bind_key``, else ``host:port/database``."""
    target: PoolTarget
    adapter: Adapter | None
    """None when sqlspec-ops does not support the config's adapter."""
    problems: tuple[str, ...] = ()
    pool: InstrumentedPool | None = field(default=None)
    statements: StatementTelemetry | None = field(default=None)

    @property
    def sizes(self) -> PoolSizes | None:
        """The pool's size limits (None for unsupported adapters)."""
        return self.adapter.sizes(self.config) if self.adapter is not None else None


def discover(configs: Any) -> list[Database]:
    """Name each config the way metrics label its pool: ``bind_key``, else ``host:port/database``.

    Two configs on one target without a ``bind_key`` get a ``'`` appended so their series stay apart.

    Args:
        configs: A ``SQLSpec`` or an iterable of SQLSpec configs.

    Returns:
        One record per config, in the order SQLSpec holds them.

    Raises:
        TypeError: If ``configs`` is neither.

    """
    if hasattr(configs, "configs") and isinstance(configs.configs, Mapping):
        configs = list(configs.configs.values())
    if not isinstance(configs, Iterable):
        msg = f"expected a SQLSpec or an iterable of SQLSpec configs, got {type(configs).__name__}"
        raise TypeError(msg)
    found: list[Database] = []
    seen: set[str] = set()
    for config in configs:
        target = describe_config(config)
        name = getattr(config, "bind_key", None) or target.label
        while name in seen:
            name += "'"
        seen.add(name)
        adapter = adapter_for(config)
        problems = tuple(adapter.problems(config)) if adapter is not None else ()
        found.append(Database(config, name, target, adapter, problems))
    return found
