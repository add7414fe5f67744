"""Readiness: ping every database through its pool, concurrently, each ping bounded in time.

A probe storm must not become a ping storm: concurrent checks share one run (coalescing) and a finished
run is reused for ``cache_ttl`` seconds. The run itself is a separate task, so a probe whose client hangs
up does not cancel the pings other probes are waiting for.

Failures are reported by error class only: driver messages can carry hosts, users or worse, and never
leave this module. Pings use a raw pool connection (``config.provide_connection()``), which goes through
the pool proxy (so a ping waits like any request would) but fires no SQLSpec statement hooks or spans.
Configs of adapters sqlspec-ops does not support are listed as ``warn`` ("not checked"), never as down.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic, perf_counter
from typing import Any, Literal

from sqlspec_ops._adapters.base import failure_name
from sqlspec_ops._adapters.proxy import InstrumentedPool

__all__ = ("Check", "HealthChecker", "HealthReport")

logger = logging.getLogger("sqlspec_ops.health")

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    """The result of pinging one database."""

    pool: str
    adapter: str
    status: Status
    latency_ms: float
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Render in the ``application/health+json`` ``checks`` style."""
        body: dict[str, Any] = {
            "componentType": "datastore",
            "adapter": self.adapter,
            "status": self.status,
            "observedValue": round(self.latency_ms, 3),
            "observedUnit": "ms",
        }
        if self.error is not None:
            body["output"] = self.error
        return body


@dataclass(frozen=True, slots=True)
class HealthReport:
    """All checks of one run, plus the databases that could not be checked (unsupported adapters)."""

    checks: tuple[Check, ...]
    unchecked: tuple[Check, ...] = ()
    checked_at: float = field(default_factory=monotonic)

    @property
    def status(self) -> Status:
        """``fail`` if any database failed, ``warn`` if one could not be checked, else ``pass``."""
        if any(c.status == "fail" for c in self.checks):
            return "fail"
        return "warn" if self.unchecked else "pass"

    def as_json(self) -> dict[str, Any]:
        """Render the health+json body."""
        return {
            "status": self.status,
            "checks": {f"{c.pool}:connections": [c.as_json()] for c in (*self.checks, *self.unchecked)},
        }


class HealthChecker:
    """Coalesced, cached, time-bounded readiness pings."""

    def __init__(
        self,
        pools: Callable[[], Sequence[InstrumentedPool]],
        *,
        timeout: float,
        cache_ttl: float,
        on_result: Callable[[HealthReport], None] | None = None,
        unsupported: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Configure the checker.

        Args:
            pools: Returns the pools to ping (read at every run, so pools added later are included).
            timeout: Seconds one ping may take, acquire included.
            cache_ttl: Seconds a finished run answers further probes.
            on_result: Called with every fresh report (to update the ``database_up`` gauge).
            unsupported: ``(name, adapter)`` of databases sqlspec-ops cannot ping; reported as ``warn`` so
                nobody mistakes them for checked (and never as down: a ``warn`` answers 200).

        """
        self._pools = pools
        self._unchecked = tuple(
            Check(name, adapter, "warn", 0.0, f"not checked: sqlspec-ops does not support {adapter} yet")
            for name, adapter in unsupported
        )
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self._on_result = on_result
        self._last: HealthReport | None = None
        self._running: asyncio.Task[HealthReport] | None = None
        self._failing: set[str] = set()
        self.runs = 0

    @property
    def last(self) -> HealthReport | None:
        """The most recent report, if any."""
        return self._last

    async def check(self) -> HealthReport:
        """Return a fresh-enough report, joining a run in flight instead of starting another.

        Returns:
            The report.

        """
        last = self._last
        if last is not None and monotonic() - last.checked_at < self.cache_ttl:
            return last
        running = self._running
        if running is None or running.done():
            running = self._running = asyncio.get_running_loop().create_task(self._run())
        return await asyncio.shield(running)

    async def _run(self) -> HealthReport:
        self.runs += 1
        pools = list(self._pools())
        checks = await asyncio.gather(*(self._ping(pool) for pool in pools))
        report = HealthReport(tuple(checks), self._unchecked)
        self._last = report
        if self._on_result is not None:
            try:
                self._on_result(report)
            except Exception:
                logger.debug("health result callback failed", exc_info=True)
        return report

    async def _ping(self, pool: InstrumentedPool) -> Check:
        pool.reattach()
        started = perf_counter()
        try:
            async with asyncio.timeout(self.timeout), pool.config.provide_connection() as connection:
                await pool.adapter.ping(connection)
        except Exception as exc:
            check = Check(pool.name, pool.adapter.name, "fail", (perf_counter() - started) * 1000, failure_name(exc))
        else:
            check = Check(pool.name, pool.adapter.name, "pass", (perf_counter() - started) * 1000)
        self._log_transition(check)
        return check

    def _log_transition(self, check: Check) -> None:
        """Log when a database starts or stops failing, not at every probe."""
        failing = check.status == "fail"
        if failing == (check.pool in self._failing):
            return
        fields = {"pool": check.pool, "adapter": check.adapter, "latency_ms": round(check.latency_ms, 1)}
        if failing:
            self._failing.add(check.pool)
            fields["error_type"] = check.error
            logger.warning(
                "readiness check of pool %s failing (%s): /ops/ready answers 503 until it passes; the app keeps "
                "serving and retries on use",
                check.pool,
                check.error,
                extra={"extra_fields": fields},
            )
        else:
            self._failing.discard(check.pool)
            logger.info("readiness check of pool %s passing again", check.pool, extra={"extra_fields": fields})
