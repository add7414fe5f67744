"""Connection budget (being written)."""

from typing import Any

__all__ = ("check_pool_budget",)


def check_pool_budget(*args: Any, **kwargs: Any) -> Any:
    """Not written yet."""
    raise NotImplementedError
