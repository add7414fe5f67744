"""sqlspec-ops: operational observability for FastAPI apps built on SQLSpec.

One call instruments an app::

    from sqlspec_ops import SQLSpecOps

    SQLSpecOps(spec).instrument(app)

Importing this package starts nothing and does not import OpenTelemetry's SDK.
"""

import importlib
from typing import TYPE_CHECKING

from sqlspec_ops._version import __version__

if TYPE_CHECKING:
    from sqlspec_ops._adapters.proxy import PoolAcquireTimeout
    from sqlspec_ops._budget import BudgetReport, check_pool_budget
    from sqlspec_ops._context import get_request_id
    from sqlspec_ops._logs import configure_logging
    from sqlspec_ops._middleware import RequestIdMiddleware
    from sqlspec_ops._ops import SQLSpecOps

__all__ = (
    "BudgetReport",
    "PoolAcquireTimeout",
    "RequestIdMiddleware",
    "SQLSpecOps",
    "__version__",
    "check_pool_budget",
    "configure_logging",
    "get_request_id",
)

# The public names are imported on first use: pytest loads `sqlspec_ops.testing` (this package's pytest
# plugin) in every test run of an environment where sqlspec-ops is installed, and importing FastAPI, SQLSpec
# and prometheus_client there would slow down suites that never use them.
_LAZY = {
    "BudgetReport": "sqlspec_ops._budget",
    "PoolAcquireTimeout": "sqlspec_ops._adapters.proxy",
    "RequestIdMiddleware": "sqlspec_ops._middleware",
    "SQLSpecOps": "sqlspec_ops._ops",
    "check_pool_budget": "sqlspec_ops._budget",
    "configure_logging": "sqlspec_ops._logs",
    "get_request_id": "sqlspec_ops._context",
}


def __getattr__(name: str) -> object:
    """Import a public name on first use."""
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'sqlspec_ops' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
