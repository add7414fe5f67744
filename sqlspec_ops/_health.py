"""Readiness: ping every database through its pool, concurrently, each ping bounded in time.

A probe storm must not become a ping storm: concurrent checks share one run (coalescing) and a finished
run is reused for ``cache_ttl`` seconds. The run itself is a separate task, so a probe whose client hangs
up does not cancel the pings other probes are waiting for.

Failures are reported by error class only: driver messages can carry hosts, users or worse, and never
leave this module. Pings use a raw pool connection (``config.provide_connection()``), which goes through
the pool proxy (so a ping waits like any request would) but fires no SQLSpec statement hooks or spans.
Configs of adapters sqlspec-ops does not support are listed as ``warn`` ("not checked"), never as down.

Two rules keep readiness from lying or cascading:

- **A busy pool is not a down database** (``ready_when_saturated``). When the ping cannot get a connection in
  time because every connection is handed out, and one came back to the pool within the last
  ``SATURATION_EVIDENCE_S`` seconds, the pool is saturated but moving: the check is ``warn`` (200) with an
  ``output`` naming the saturation, instead of failing every replica of a busy service at once. A pool whose
  connections are all stuck (nothing came back recently), or that has no connection at all, still fails.
- **Name the real cause.** A pool that retries connections in the background (``Adapter.probes_connect``) only
  lets a waiting caller time out. When the ping is still waiting halfway through ``timeout`` and the pool has
  handed nothing out, one direct connection attempt runs in the remaining time and its error class is reported
  instead of the bare timeout (``InvalidPassword``, ``ConnectionRefusedError``...).
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic, perf_counter
from typing import Any, Literal

from sqlspec_ops._adapters.base import failure_name
from sqlspec_ops._adapters.proxy import InstrumentedPool

__all__ = ("SATURATION_EVIDENCE_S", "Check", "HealthChecker", "HealthReport")

SATURATION_EVIDENCE_S = 5.0  # a connection that came back this recently shows a saturated pool still moves
_PROBE_AFTER = 0.5  # fraction of the timeout a ping waits on an empty pool before a direct attempt names the cause

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
        """``fail`` if any database failed, ``warn`` if one is saturated or could not be checked, else ``pass``."""
        if any(c.status == "fail" for c in self.checks):
            return "fail"
        return "warn" if self.unchecked or any(c.status == "warn" for c in self.checks) else "pass"

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
        ready_when_saturated: bool = True,
    ) -> None:
        """Configure the checker.

        Args:
            pools: Returns the pools to ping (read at every run, so pools added later are included).
            timeout: Seconds one ping may take, acquire included.
            cache_ttl: Seconds a finished run answers further probes.
            on_result: Called with every fresh report (to update the ``database_up`` gauge).
            unsupported: ``(name, adapter)`` of databases sqlspec-ops cannot ping; reported as ``warn`` so
                nobody mistakes them for checked (and never as down: a ``warn`` answers 200).
            ready_when_saturated: Report a saturated pool that still moves as ``warn`` instead of ``fail``.

        """
        self._pools = pools
        self._unchecked = tuple(
            Check(name, adapter, "warn", 0.0, f"not checked: sqlspec-ops does not support {adapter} yet")
            for name, adapter in unsupported
        )
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.ready_when_saturated = ready_when_saturated
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
        acquired = False

        async def select_one() -> None:
            nonlocal acquired
            async with pool.config.provide_connection() as connection:
                acquired = True
                await pool.adapter.ping(connection)

        ping = asyncio.ensure_future(select_one())
        probe: asyncio.Future[str | None] | None = None
        try:
            async with asyncio.timeout(self.timeout):
                if pool.adapter.probes_connect:
                    await asyncio.wait({ping}, timeout=self.timeout * _PROBE_AFTER)
                    if not ping.done() and not acquired and pool.used() == 0:
                        probe = asyncio.ensure_future(pool.adapter.connect_failure(pool.config))
                await ping
        except Exception as exc:
            elapsed_ms = (perf_counter() - started) * 1000
            check = self._failed(pool, exc, elapsed_ms, acquired=acquired, probe=probe)
        else:
            check = Check(pool.name, pool.adapter.name, "pass", (perf_counter() - started) * 1000)
        finally:
            if not ping.done():
                ping.cancel()
            if probe is not None and not probe.done():
                probe.cancel()
        self._log_transition(check)
        return check

    def _failed(
        self,
        pool: InstrumentedPool,
        exc: Exception,
        elapsed_ms: float,
        *,
        acquired: bool,
        probe: "asyncio.Future[str | None] | None",
    ) -> Check:
        """Turn a failed ping into a check: saturated-but-moving is ``warn``, else ``fail`` with the best cause."""
        waited_for_connection = isinstance(exc, TimeoutError) and not acquired
        if waited_for_connection and self.ready_when_saturated:
            saturation = _saturation(pool)
            if saturation is not None:
                return Check(pool.name, pool.adapter.name, "warn", elapsed_ms, saturation)
        cause = failure_name(exc)
        if waited_for_connection and probe is not None and probe.done() and not probe.cancelled():
            found = probe.exception() or probe.result()
            if isinstance(found, str):
                cause = found
        return Check(pool.name, pool.adapter.name, "fail", elapsed_ms, cause)

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


def _saturation(pool: InstrumentedPool) -> str | None:
    """Describe the pool's saturation when every connection is handed out and one came back recently, else None."""
    in_use, max_size = pool.used(), pool.sizes.max_size
    last = pool.last_release
    if in_use < max_size or last is None:
        return None
    ago = perf_counter() - last
    if ago > SATURATION_EVIDENCE_S:
        return None
    return (
        f"saturated: {in_use}/{max_size} connections in use, {pool.pending} waiting; "
        f"a connection came back {ago:.1f}s ago, so the database is answering"
    )
