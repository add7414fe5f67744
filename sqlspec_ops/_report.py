"""The ``/ops/pools`` body: per pool its target, sizes, live state, recent percentiles, problems and budget.

Live state and percentiles are this worker's (a request lands on one worker); Prometheus has the totals of
all workers. Targets never include a user or a password.
"""

import os
import statistics
from collections.abc import Sequence
from typing import Any

from sqlspec_ops._budget import BudgetReport
from sqlspec_ops._databases import Database

__all__ = ("percentiles", "pools_report")


def percentiles(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Return p50/p95/p99/max in milliseconds of the samples (None when there are none)."""
    if not seconds:
        return {"p50": None, "p95": None, "p99": None, "max": None, "samples": 0}
    cuts = [seconds[0]] * 99 if len(seconds) == 1 else statistics.quantiles(seconds, n=100, method="inclusive")
    return {
        "p50": round(cuts[49] * 1000, 3),
        "p95": round(cuts[94] * 1000, 3),
        "p99": round(cuts[98] * 1000, 3),
        "max": round(max(seconds) * 1000, 3),
        "samples": len(seconds),
    }


def _pool_entry(db: Database, verdicts: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": db.name,
        "adapter": db.target.adapter,
        "db_system": db.target.db_system,
        "target": db.target.label,
        "supported": db.adapter is not None,
    }
    if db.problems:
        entry["problems"] = list(db.problems)
    pool = db.pool
    if pool is None:
        entry["note"] = "sqlspec-ops does not support this adapter yet: no pool statistics"
        return entry
    snap = pool.snapshot()
    entry.update(
        {
            "open": snap.open,
            "min_size": pool.sizes.min_size,
            "max_size": pool.sizes.max_size,
            "sizes_from": {"min_size": pool.sizes.source("min"), "max_size": pool.sizes.source("max")},
            "size": snap.size,
            "idle": snap.idle,
            "used": snap.used,
            "pending": snap.pending,
            "acquires": snap.acquires,
            "timeouts": snap.timeouts,
            "acquire_timeout_s": pool.acquire_timeout,
            "acquire_wait_ms": percentiles(snap.waits),
            "hold_time_ms": percentiles(snap.holds),
            "leak_threshold_s": pool.leak_threshold,
            "holders": pool.holders(),
        }
    )
    if pool.adapter.counts_opening:
        entry["opening"] = snap.opening
    if pool.server_view is not None:
        entry["server"] = pool.server_view
    server = db.target.server
    if server is None:
        entry["budget"] = {"verdict": "no server limit"}
    elif server in verdicts:
        entry["budget"] = verdicts[server]
    return entry


def pools_report(
    databases: Sequence[Database], budget: BudgetReport | None, *, loop_lag_ms: float | None = None
) -> dict[str, Any]:
    """Build the report for this worker (``loop_lag_ms``: its recent maximum event-loop lag, None when off)."""
    verdicts: dict[str, Any] = budget.verdicts() if budget is not None else {}
    body: dict[str, Any] = {
        "worker_pid": os.getpid(),
        "event_loop_lag_ms": loop_lag_ms,
        "scope": "live state and percentiles are this worker's; /ops/metrics has all workers' totals",
        "pools": [_pool_entry(db, verdicts) for db in databases],
    }
    if budget is not None:
        body["budget"] = budget.as_json()
    return body
