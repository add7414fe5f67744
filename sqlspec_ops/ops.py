"""``SQLSpecOps``: the one object that wires sqlspec-ops into a FastAPI app. Wiring only.

``SQLSpecOps(spec).instrument(app)`` does, in this order:

1. registers statement hooks on every supported SQLSpec config (merged into the config's own
   ``ObservabilityConfig``, then the config is re-added so SQLSpec rebuilds its runtime);
2. installs a pool proxy as each config's ``connection_instance`` (no I/O: the driver pool opens at startup
   or on first use);
3. wraps the app's middleware stack with the request-ID middleware, outermost (outside Starlette's
   ``ServerErrorMiddleware``, so even responses of unhandled exceptions carry the ID), with a shortcut that
   serves the ``/ops`` endpoints before the app's own middleware (SQLSpec's FastAPI plugin checks out a pool
   connection for every request, which would make ``/ops/live`` wait on a saturated pool);
4. mounts :attr:`SQLSpecOps.router` and composes its startup/shutdown around the app's own lifespan.

Startup opens the pools, attaches observability to SQLSpecPlugin sessions, checks the connection budget and
pings the databases, each bounded in time: a database that is down never stops the app from starting.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.observability import ObservabilityConfig
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from sqlspec_ops.adapters import Adapter, PoolTarget, adapter_for, describe_config, failure_name, named_configs
from sqlspec_ops.budget import BudgetReport, budget_without_limits, check_pool_budget_async, standalone_connection
from sqlspec_ops.health import HealthChecker, HealthReport
from sqlspec_ops.metrics import metrics_for, reap_dead_workers, release_worker, render
from sqlspec_ops.middleware import RequestIdMiddleware
from sqlspec_ops.plugin import attach_plugin_sessions
from sqlspec_ops.pools import InstrumentedPool, PoolAcquireTimeout
from sqlspec_ops.queries import RequestTelemetry, StatementTelemetry
from sqlspec_ops.router import build_router
from sqlspec_ops.tracing import resolve_tracer

__all__ = ("SQLSpecOps",)

logger = logging.getLogger("sqlspec_ops")

_TOKEN_ENV = "SQLSPEC_OPS_TOKEN"  # noqa: S105 - the variable's name, not a secret


class _Database:
    """What SQLSpecOps keeps per SQLSpec config."""

    __slots__ = ("adapter", "config", "name", "pool", "problems", "statements", "target")

    def __init__(self, config: Any, name: str, target: PoolTarget, adapter: Adapter | None) -> None:
        self.config = config
        self.name = name
        self.target = target
        self.adapter = adapter
        self.pool: InstrumentedPool | None = None
        self.statements: StatementTelemetry | None = None
        self.problems: list[str] = adapter.problems(config) if adapter is not None else []


class SQLSpecOps:
    """Operational observability for a FastAPI app built on SQLSpec."""

    def __init__(
        self,
        spec: SQLSpec,
        *,
        prefix: str = "/ops",
        workers: int | None = None,
        replicas: int = 1,
        max_connections: int | None = None,
        health_timeout: float = 1.0,
        health_cache_ttl: float = 1.0,
        acquire_timeout: float | None = None,
        token: str | None = None,
        tracer_provider: Any = None,
        registry: CollectorRegistry | None = None,
        header_name: str = "X-Request-ID",
        server_timing: bool = True,
        max_queries_per_request: int | None = 50,
        slow_query_threshold: float | None = 0.5,
        startup_timeout: float = 5.0,
        health_interval: float | None = 15.0,
    ) -> None:
        """Configure the add-on (no I/O happens here).

        Args:
            spec: The app's ``SQLSpec`` with its configs added.
            prefix: Where the ops endpoints live.
            workers: Worker processes per replica; None detects it (``WEB_CONCURRENCY``, ``UVICORN_WORKERS``,
                ``GUNICORN_CMD_ARGS``, the server's command line, else 1).
            replicas: Replicas (hosts/pods) running this app, for the connection budget.
            max_connections: Take this as each server's connection budget, as given, instead of reading
                ``max_connections`` minus the reserved slots from the server.
            health_timeout: Seconds one readiness ping may take (acquire included).
            health_cache_ttl: Seconds a readiness result answers further probes.
            acquire_timeout: Seconds a pool acquire may wait before failing (and counting as a timeout).
            token: Bearer token required on every ops endpoint except live and ready (default: the
                ``SQLSPEC_OPS_TOKEN`` environment variable).
            tracer_provider: Where statement spans go (default: the global provider).
            registry: Prometheus registry (default: prometheus_client's global ``REGISTRY``).
            header_name: The request-ID header.
            server_timing: Add a ``Server-Timing`` header with the request's statement count and DB time.
            max_queries_per_request: Warn when a request runs more statements (N+1); None disables.
            slow_query_threshold: Warn about statements slower than this many seconds; None disables.
            startup_timeout: Seconds the startup work (opening pools, budget check, first readiness ping) may take
                in total; the app starts serving afterwards whatever the databases do.
            health_interval: Seconds between background readiness pings in every worker, so
                ``sqlspec_ops_database_up`` stays current without probes; None pings only on ``/ready``.

        Raises:
            ValueError: On an invalid option.

        """
        if not prefix.startswith("/") or prefix.endswith("/"):
            msg = f"prefix must start with '/' and not end with one, got {prefix!r}"
            raise ValueError(msg)
        for option, value in (("health_timeout", health_timeout), ("startup_timeout", startup_timeout)):
            if value <= 0:
                msg = f"{option} must be a positive number of seconds, got {value!r}"
                raise ValueError(msg)
        if acquire_timeout is not None and acquire_timeout <= 0:
            msg = f"acquire_timeout must be positive or None, got {acquire_timeout!r}"
            raise ValueError(msg)
        if replicas < 1 or (workers is not None and workers < 1):
            msg = "replicas and workers must be at least 1"
            raise ValueError(msg)
        if max_connections is not None and max_connections < 1:
            msg = (
                f"max_connections must be a positive integer or None (read it from the server), got {max_connections!r}"
            )
            raise ValueError(msg)
        if token is not None and not token.strip():
            msg = "token must be a non-empty string (or None to read SQLSPEC_OPS_TOKEN / leave the endpoints open)"
            raise ValueError(msg)
        self.spec = spec
        self.prefix = prefix
        self.workers = workers
        self.replicas = replicas
        self.max_connections = max_connections
        self.acquire_timeout = acquire_timeout
        self.token = token if token is not None else (os.environ.get(_TOKEN_ENV) or None)
        self.tracer_provider = tracer_provider
        self.registry = registry
        self.header_name = header_name
        self.slow_query_threshold = slow_query_threshold
        self.startup_timeout = startup_timeout
        if health_interval is not None and health_interval <= 0:
            msg = f"health_interval must be positive or None, got {health_interval!r}"
            raise ValueError(msg)
        self.health_interval = health_interval
        self._health_task: asyncio.Task[None] | None = None
        self.metrics = metrics_for(registry)
        self.request_telemetry = RequestTelemetry(
            server_timing=server_timing, max_queries_per_request=max_queries_per_request, tag_span=False
        )
        self.databases = self._discover(spec)
        self.health = HealthChecker(
            self.pools,
            timeout=health_timeout,
            cache_ttl=health_cache_ttl,
            on_result=self._publish_health,
            unsupported=[(db.name, db.target.adapter) for db in self.databases if db.adapter is None],
        )
        self.budget: BudgetReport | None = None
        self.router: APIRouter = build_router(self)

    # -- discovery ------------------------------------------------------------------------------------

    def _discover(self, spec: SQLSpec) -> list[_Database]:
        return [
            _Database(config, name, describe_config(config), adapter_for(config))
            for name, config in named_configs(spec)
        ]

    def pools(self) -> Sequence[InstrumentedPool]:
        """Return the instrumented pools (supported configs only)."""
        return [db.pool for db in self.databases if db.pool is not None]

    # -- instrumentation ------------------------------------------------------------------------------

    def instrument(self, app: FastAPI) -> FastAPI:
        """Instrument a FastAPI app: hooks, pool proxies, outermost middleware, router, lifespan.

        Args:
            app: The app; call before it starts serving.

        Returns:
            The same app.

        Raises:
            RuntimeError: If the app already built its middleware stack (it is serving).

        """
        if getattr(app.state, "sqlspec_ops", None) is self:
            return app
        if app.middleware_stack is not None:
            msg = "SQLSpecOps.instrument(app) must be called before the app starts serving requests"
            raise RuntimeError(msg)
        app.state.sqlspec_ops = self
        self.install()
        self._wrap_middleware(app)
        app.include_router(self.router, include_in_schema=False)
        if PoolAcquireTimeout not in app.exception_handlers:
            app.add_exception_handler(PoolAcquireTimeout, _pool_exhausted)
        self._wrap_lifespan(app)
        return app

    def install(self) -> None:
        """Register the statement hooks and the pool proxies on the SQLSpec configs (idempotent, no I/O)."""
        for db in self.databases:
            if db.adapter is None:
                continue
            if db.statements is None:
                db.statements = StatementTelemetry(
                    pool_name=db.name,
                    target=db.target,
                    metrics=self.metrics,
                    slow_query_threshold=self.slow_query_threshold,
                )
                db.config.observability_config = ObservabilityConfig.merge(
                    db.config.observability_config, db.statements.observability_config()
                )
                self.spec.add_config(db.config)  # re-adding rebuilds SQLSpec's runtime with the hooks
            self._install_pool(db)

    def _install_pool(self, db: _Database) -> None:
        assert db.adapter is not None  # noqa: S101 - callers filter unsupported configs
        if db.pool is None:
            current = db.config.connection_instance
            if isinstance(current, InstrumentedPool):  # another SQLSpecOps got there first: share its proxy
                db.pool = current
            else:
                db.pool = InstrumentedPool(
                    db.config,
                    db.adapter,
                    name=db.name,
                    target=db.target,
                    metrics=self.metrics,
                    acquire_timeout=self.acquire_timeout,
                )
        db.pool.reattach()  # adopts a driver pool the app already created; no I/O

    def _wrap_middleware(self, app: FastAPI) -> None:
        build = app.build_middleware_stack
        # A bare app of its own gives the ops routes FastAPI's request plumbing (exit stacks, exception
        # handling) without the main app's middleware; the app's title names the service on the status page.
        ops_app = FastAPI(title=app.title, openapi_url=None, docs_url=None, redoc_url=None)
        ops_app.include_router(self.router)

        def build_middleware_stack() -> ASGIApp:
            stack = build()
            outer: ASGIApp = RequestIdMiddleware(
                _OpsShortcut(stack, ops_app, self.prefix),
                self.header_name,
                hooks=self.request_telemetry,
            )
            if isinstance(stack, ServerErrorMiddleware):
                # opentelemetry-instrumentation-fastapi, when it instruments the app after us, only accepts a
                # stack that starts with ServerErrorMiddleware (it re-wraps that middleware's inner app, ours,
                # inside its server span) and otherwise skips instrumenting. A bare shell keeps that shape;
                # without a handler it never calls the app's error handler a second time.
                outer = ServerErrorMiddleware(outer)
            return outer

        # Overriding the instance's builder is the only way to sit outside ServerErrorMiddleware
        # (opentelemetry-instrumentation-fastapi does the same).
        app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]

    def _wrap_lifespan(self, app: FastAPI) -> None:
        original = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(inner_app: Any) -> AsyncIterator[Any]:
            await self.startup(app)
            try:
                async with original(inner_app) as state:
                    yield state
            finally:
                await self.shutdown()

        app.router.lifespan_context = lifespan

    # -- lifecycle ------------------------------------------------------------------------------------

    async def startup(self, app: FastAPI | None = None) -> None:
        """Open pools, attach plugin sessions, check the budget and ping the databases (never raises)."""
        reaped = reap_dead_workers()
        if reaped:
            logger.info("dropped metrics of exited workers %s", reaped)
        self.install()
        tracer = resolve_tracer(self.tracer_provider)
        self.request_telemetry.tag_span = tracer is not None
        for db in self.databases:
            if db.statements is not None:
                db.statements.tracer = tracer
            for problem in db.problems:
                logger.warning("%s (pool %s)", problem, db.name)
            if db.adapter is None:
                logger.warning(
                    "sqlspec-ops does not support %s yet: no pool metrics or readiness for %s",
                    type(db.config).__name__,
                    db.name,
                )
        if app is not None:
            attach_plugin_sessions(app, self.spec)
        # One deadline for the whole sequence: a server that accepts TCP and never answers would otherwise
        # cost startup_timeout per step (pools, then budget) plus health_timeout. A database that is down
        # gets one warning (the readiness check's); the pool and budget steps stay quiet about it.
        try:
            async with asyncio.timeout(self.startup_timeout):
                await self._open_pools()
                health = await self.health.check()
                await self._check_budget(reported=self._servers_failing(health))
        except TimeoutError:
            logger.warning(
                "startup checks did not finish within startup_timeout=%ss; serving anyway (see /ops/ready)",
                self.startup_timeout,
            )
            if self.budget is None:
                reason = f"not read within startup_timeout={self.startup_timeout:g}s"
                budget = budget_without_limits(
                    self._named(),
                    workers=self.workers,
                    replicas=self.replicas,
                    max_connections=self.max_connections,
                    reason=reason,
                )
                self._settle_budget(budget, reported=[s.server for s in budget.servers])
        if self.health_interval is not None:
            self._health_task = asyncio.get_running_loop().create_task(self._refresh_health(self.health_interval))

    def _servers_failing(self, report: HealthReport) -> list[str]:
        failing = {check.pool for check in report.checks if check.status == "fail"}
        return [db.target.server for db in self.databases if db.name in failing and db.target.server is not None]

    async def _refresh_health(self, interval: float) -> None:
        """Ping in the background so ``sqlspec_ops_database_up`` is current even when nothing probes.

        A budget left ``unknown`` because a database was down at startup is computed once it answers.
        """
        while True:
            await asyncio.sleep(interval)
            try:
                report = await self.health.check()
                if self.budget is not None and self.budget.errors and report.status != "fail":
                    async with asyncio.timeout(self.startup_timeout):
                        await self._check_budget()
            except Exception:
                logger.debug("background readiness ping failed", exc_info=True)

    async def _open_pools(self) -> None:
        async def open_one(pool: InstrumentedPool) -> None:
            try:
                async with asyncio.timeout(self.startup_timeout):
                    await pool.open()
            except Exception as exc:  # the readiness check that follows reports it (once)
                logger.debug("could not open pool %s at startup (%s)", pool.name, failure_name(exc))

        await asyncio.gather(*(open_one(pool) for pool in self.pools() if not pool.is_open))

    async def _check_budget(self, *, reported: Sequence[str] = ()) -> None:
        """Compare replicas x workers x pool sizes with what each server allows, once (see ``budget``).

        Limits are read through the pools opened just before (no extra connection), or over a standalone
        connection when a pool could not open. Servers in ``reported`` were already warned about as
        unreachable, so their ``unknown`` verdict is not warned about twice.
        """
        if self.budget is not None and not self.budget.errors:
            return
        by_config = {id(db.config): db for db in self.databases}

        def borrow(config: Any) -> AbstractAsyncContextManager[Any]:
            db = by_config.get(id(config))
            if db is not None and db.pool is not None and db.pool.is_open:
                return cast("AbstractAsyncContextManager[Any]", config.provide_connection())
            return standalone_connection(config)

        try:
            report = await check_pool_budget_async(
                [db.config for db in self.databases],  # named as in the metrics: the same naming function
                workers=self.workers,
                replicas=self.replicas,
                max_connections=self.max_connections,
                timeout=self.startup_timeout,
                borrow=borrow,
            )
        except Exception as exc:
            logger.warning("connection budget check failed (%s); no budget verdict", failure_name(exc))
            return
        self._settle_budget(report, reported)

    def _settle_budget(self, report: BudgetReport, reported: Sequence[str] = ()) -> None:
        self.budget = report
        report.publish(self.metrics)
        report.log_warnings(reported=reported)

    def _named(self) -> list[tuple[str, Any]]:
        return [(db.name, db.config) for db in self.databases]

    async def shutdown(self) -> None:
        """Close the pools this process opened and the app left open; drop this worker's live gauges."""
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for db in self.databases:
            pool = db.pool
            if pool is not None and pool.is_open and db.config.connection_instance is pool:
                try:
                    await db.config.close_pool()
                except Exception as exc:
                    logger.warning("closing pool %s failed: %s", db.name, type(exc).__name__)
        release_worker()

    # -- what the router serves -------------------------------------------------------------------------

    def _publish_health(self, report: HealthReport) -> None:
        gauge = self.metrics.database_up
        for check in report.checks:
            gauge.labels(check.pool).set(1 if check.status == "pass" else 0)

    def render_metrics(self, accept: str | None) -> tuple[bytes, str]:
        """Publish every pool's state and render the exposition."""
        for pool in self.pools():
            pool.publish()
        return render(self.registry, accept)

    def pools_report(self) -> dict[str, Any]:
        """Return the ``/ops/pools`` body."""
        from sqlspec_ops.report import pools_report  # noqa: PLC0415 - keeps the hot modules small

        return pools_report(self)


class _OpsShortcut:
    """Serve ``prefix`` paths straight from the ops router, ahead of the app's own middleware."""

    __slots__ = ("_prefix", "_slash_prefix", "app", "ops")

    def __init__(self, app: ASGIApp, ops: ASGIApp, prefix: str) -> None:
        self.app = app
        self.ops = ops
        self._prefix = prefix
        self._slash_prefix = prefix + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path.startswith(self._slash_prefix) or path == self._prefix:
                await self.ops(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _pool_exhausted(_request: Request, exc: Exception) -> Response:
    """Answer 503 + ``Retry-After`` when no pool connection became free within ``acquire_timeout``.

    An exhausted pool is overload, not a bug: a 503 tells load balancers and clients to back off, and the
    event is logged once at WARNING instead of as an unhandled exception with a traceback. Apps that
    register their own handler for ``PoolAcquireTimeout`` keep it.
    """
    logger.warning("%s", exc)
    return JSONResponse(
        {"detail": "the database is saturated, retry shortly"}, status_code=503, headers={"Retry-After": "1"}
    )
