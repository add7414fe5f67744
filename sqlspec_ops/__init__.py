"""sqlspec-ops: operational observability for FastAPI apps built on SQLSpec.

One call instruments an app::

    from sqlspec_ops import SQLSpecOps

    SQLSpecOps(spec).instrument(app)

Importing this package starts nothing and does not import OpenTelemetry's SDK.
"""

from sqlspec_ops._budget import BudgetReport, check_pool_budget
from sqlspec_ops._context import get_request_id
from sqlspec_ops._logs import configure_logging
from sqlspec_ops._middleware import RequestIdMiddleware
from sqlspec_ops._ops import SQLSpecOps
from sqlspec_ops._pools import PoolAcquireTimeout
from sqlspec_ops._version import __version__

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
