"""sqlspec-ops: operational observability for FastAPI apps built on SQLSpec.

One call instruments an app::

    from sqlspec_ops import SQLSpecOps

    SQLSpecOps(spec).instrument(app)

Importing this package starts nothing and does not import OpenTelemetry's SDK.
"""

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
