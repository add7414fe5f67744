"""The ``/ops/pools`` body: per pool its target, sizes, live state, recent percentiles, problems and budget.

Live state and percentiles are this worker's (a request lands on one worker); Prometheus has the totals of
all workers. Targets never include a user or a password.
"""

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlspec_ops.ops import SQLSpecOps, _Database

__all__ = ("percentiles", "pools_report")


def percentiles(sorted_seconds: Sequence[float]) -> dict[str, float | None]:
    """Return p50/p95/p99/max in milliseconds of already sorted samples (None when there are none)."""
    if not sorted_seconds:
        return {"p50": None, "p95": None, "p99": None, "max": None, "samples": 0}

    def at(q: float) -> float:
        index = min(len(sorted_seconds) - 1, max(0, round(q * (len(sorted_seconds) - 1))))
        return round(sorted_seconds[index] * 1000, 3)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": at(1.0), "samples": len(sorted_seconds)}


def _pool_entry(db: "_Database", verdicts: dict[str, Any]) -> dict[str, Any]:
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
            "sizes_from": {
                "min_size": "config" if pool.sizes.min_explicit else "driver default",
                "max_size": "config" if pool.sizes.max_explicit else "driver default",
            },
            "size": snap.size,
            "idle": snap.idle,
            "used": snap.used,
            "pending": snap.pending,
            "acquires": snap.acquires,
            "timeouts": snap.timeouts,
            "acquire_timeout_s": pool.acquire_timeout,
            "acquire_wait_ms": percentiles(snap.waits),
            "hold_time_ms": percentiles(snap.holds),
        }
    )
    server = db.target.server
    if server is None:
        entry["budget"] = {"verdict": "no server limit"}
    elif server in verdicts:
        entry["budget"] = verdicts[server]
    return entry


def pools_report(ops: "SQLSpecOps") -> dict[str, Any]:
    """Build the report for this worker."""
    budget = ops.budget
    verdicts: dict[str, Any] = budget.verdicts() if budget is not None else {}
    body: dict[str, Any] = {
        "worker_pid": os.getpid(),
        "scope": "live state and percentiles are this worker's; /ops/metrics has all workers' totals",
        "pools": [_pool_entry(db, verdicts) for db in ops.databases],
    }
    if budget is not None:
        body["budget"] = budget.as_json()
    return body
