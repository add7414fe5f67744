"""sqlspec-ops: operational observability for FastAPI apps built on SQLSpec.

One call instruments an app::

    from sqlspec_ops import SQLSpecOps

    SQLSpecOps(spec).instrument(app)

Importing this package starts nothing and does not import OpenTelemetry's SDK.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlspec_ops.budget import check_pool_budget
    from sqlspec_ops.context import get_request_id
    from sqlspec_ops.logs import configure_logging
    from sqlspec_ops.middleware import RequestIdMiddleware
    from sqlspec_ops.ops import SQLSpecOps
    from sqlspec_ops.pools import PoolAcquireTimeout

__all__ = (
    "PoolAcquireTimeout",
    "RequestIdMiddleware",
    "SQLSpecOps",
    "__version__",
    "check_pool_budget",
    "configure_logging",
    "get_request_id",
)

__version__ = "0.1.0"

# The public names are imported on first use: pytest loads `sqlspec_ops.testing` (this package's pytest
# plugin) in every test run of an environment where sqlspec-ops is installed, and importing FastAPI, SQLSpec
# and prometheus_client there would slow down suites that never use them.
_LAZY = {
    "PoolAcquireTimeout": "sqlspec_ops.pools",
    "RequestIdMiddleware": "sqlspec_ops.middleware",
    "SQLSpecOps": "sqlspec_ops.ops",
    "check_pool_budget": "sqlspec_ops.budget",
    "configure_logging": "sqlspec_ops.logs",
    "get_request_id": "sqlspec_ops.context",
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
