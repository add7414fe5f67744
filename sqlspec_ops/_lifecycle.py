"""Startup and shutdown: open the pools, check the budget, ping the databases, keep readiness current.

Every step is bounded in time (one ``startup_timeout`` for the whole sequence, so a server that accepts TCP and
never answers costs it once), and none raises: a database that is down at startup never stops the app from
starting. It gets one warning (the readiness check's), its budget verdict is ``unknown`` and is computed once
the database answers (the background readiness refresh retries it).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlspec import SQLSpec

from sqlspec_ops._adapters.base import failure_name
from sqlspec_ops._budget import BudgetReport, check_pool_budget_async, standalone_connection
from sqlspec_ops._databases import Database
from sqlspec_ops._health import HealthChecker, HealthReport
from sqlspec_ops._loop_lag import LoopLagSampler
from sqlspec_ops._metrics import OpsMetrics, reap_dead_workers, release_worker
from sqlspec_ops._options import OpsOptions
from sqlspec_ops._plugin import attach_plugin_sessions
from sqlspec_ops._requests import RequestTelemetry
from sqlspec_ops._server_view import ServerSampler
from sqlspec_ops._tracing import resolve_tracer

__all__ = ("Lifecycle",)

logger = logging.getLogger("sqlspec_ops")


class Lifecycle:
    """What happens when the app starts and stops, for one ``SQLSpecOps``."""

    def __init__(
        self,
        *,
        spec: SQLSpec,
        options: OpsOptions,
        databases: Sequence[Database],
        health: HealthChecker,
        metrics: OpsMetrics,
        requests: RequestTelemetry,
        install: Callable[[], None],
    ) -> None:
        """Keep what startup and shutdown work on (no I/O here)."""
        self._spec = spec
        self._options = options
        self._databases = databases
        self._health = health
        self._metrics = metrics
        self._requests = requests
        self._install = install
        self._tasks: list[asyncio.Task[None]] = []
        self.budget: BudgetReport | None = None
        interval = options.loop_lag_interval
        self.loop_lag = LoopLagSampler(metrics.event_loop_lag, interval=interval) if interval is not None else None

    async def startup(self, app: Any = None) -> None:
        """Open pools, attach plugin sessions, check the budget and ping the databases (never raises)."""
        reaped = reap_dead_workers()
        if reaped:
            logger.info("dropped metrics of exited workers %s", reaped)
        self._install()
        # The tracer is resolved here, not when SQLSpecOps is built: apps often install the global tracer
        # provider later (in their lifespan, or through opentelemetry-instrument).
        tracer = resolve_tracer(self._options.tracer_provider)
        self._requests.bind_tracing(enabled=tracer is not None)
        for db in self._databases:
            if db.statements is not None:
                db.statements.bind_tracer(tracer)
            for problem in db.problems:
                logger.warning("%s (pool %s)", problem, db.name)
            if db.adapter is None:
                logger.warning(
                    "sqlspec-ops does not support %s yet: no pool metrics or readiness for %s",
                    type(db.config).__name__,
                    db.name,
                )
        if app is not None:
            attach_plugin_sessions(app, self._spec)
        timeout = self._options.startup_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._open_pools()
                health = await self._health.check()
                await self._check_budget(reported=self._servers_failing(health))
        except TimeoutError:
            logger.warning(
                "startup checks did not finish within startup_timeout=%ss; serving anyway (see /ops/ready)",
                timeout,
            )
            if self.budget is None:
                budget = await self._budget(unread_reason=f"not read within startup_timeout={timeout:g}s")
                self._settle_budget(budget, reported=[s.server for s in budget.servers])
        self._start_background()
        self._start_holder_work()

    async def shutdown(self) -> None:
        """Stop the background work, close the pools this process opened, drop this worker's live gauges."""
        if self.loop_lag is not None:
            self.loop_lag.stop()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for db in self._databases:
            pool = db.pool
            if pool is not None and pool.is_open and db.config.connection_instance is pool:
                try:
                    await db.config.close_pool()
                except Exception as exc:
                    logger.warning("closing pool %s failed: %s", db.name, type(exc).__name__)
        release_worker()

    # -- background work --------------------------------------------------------------------------------

    def _start_background(self) -> None:
        if self._options.health_interval is not None:
            self._start(self._options.health_interval, self._refresh_health)
        if self.loop_lag is not None:
            self.loop_lag.start()  # one timer per worker, never per request

    def _start(self, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` every ``interval`` seconds until shutdown; a failing step is logged at debug and retried."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await step()
                except Exception:
                    logger.debug("background step %s failed", getattr(step, "__name__", step), exc_info=True)

        self._tasks.append(asyncio.get_running_loop().create_task(loop()))

    def _start_holder_work(self) -> None:
        """Start the leak sweep (one per worker, not one timer per acquire) and the server's-view sampler."""
        if self._options.server_stats_interval is not None:
            sampler = ServerSampler(
                self._databases, self._metrics, timeout=self._options.health_timeout, replicas=self._options.replicas
            )
            self._start(self._options.server_stats_interval, sampler.sample)
        threshold = self._options.leak_threshold
        if threshold is not None:
            if self._options.noisy_leak_threshold:
                logger.warning(
                    "leak_threshold=%gs is below 1 s: ordinary requests will be reported as leaked connections",
                    threshold,
                )
            self._start(min(threshold / 2, 1.0), self._sweep_leaks)

    async def _sweep_leaks(self) -> None:
        for db in self._databases:
            if db.pool is not None:
                db.pool.sweep_leaks()

    async def _refresh_health(self) -> None:
        """Ping, so ``sqlspec_ops_database_up`` is current even when nothing probes; finish an unknown budget."""
        report = await self._health.check()
        if self.budget is not None and self.budget.errors and report.status != "fail":
            async with asyncio.timeout(self._options.startup_timeout):
                await self._check_budget()

    # -- steps ------------------------------------------------------------------------------------------

    async def _open_pools(self) -> None:
        async def open_one(db: Database) -> None:
            if db.pool is None or db.pool.is_open:
                return
            try:
                async with asyncio.timeout(self._options.startup_timeout):
                    await db.pool.open()
            except Exception as exc:  # the readiness check that follows reports it (once)
                logger.debug("could not open pool %s at startup (%s)", db.name, failure_name(exc))

        await asyncio.gather(*(open_one(db) for db in self._databases))

    def _servers_failing(self, report: HealthReport) -> list[str]:
        failing = {check.pool for check in report.checks if check.status == "fail"}
        return [db.target.server for db in self._databases if db.name in failing and db.target.server is not None]

    async def _check_budget(self, *, reported: Sequence[str] = ()) -> None:
        """Compare replicas x workers x pool sizes with what each server allows, once (see ``_budget``).

        Limits are read through the pools opened just before (no extra connection), or over a standalone
        connection when a pool could not open. Servers in ``reported`` were already warned about as
        unreachable, so their ``unknown`` verdict is not warned about twice.
        """
        if self.budget is not None and not self.budget.errors:
            return
        try:
            report = await self._budget()
        except Exception as exc:
            logger.warning("connection budget check failed (%s); no budget verdict", failure_name(exc))
            return
        self._settle_budget(report, reported)

    async def _budget(self, unread_reason: str | None = None) -> BudgetReport:
        options = self._options
        return await check_pool_budget_async(
            list(self._databases),
            workers=options.workers,
            replicas=options.replicas,
            max_connections=options.max_connections,
            timeout=options.startup_timeout,
            borrow=_borrow,
            unread_reason=unread_reason,
        )

    def _settle_budget(self, report: BudgetReport, reported: Sequence[str] = ()) -> None:
        self.budget = report
        report.publish(self._metrics)
        report.log_warnings(reported=reported)


def _borrow(db: Database) -> AbstractAsyncContextManager[Any]:
    """Borrow from the database's open pool (no extra connection), else open a standalone connection."""
    if db.pool is not None and db.pool.is_open:
        connection: AbstractAsyncContextManager[Any] = db.config.provide_connection()
        return connection
    return standalone_connection(db)
