"""``SQLSpecOps``: the one object that wires sqlspec-ops into a FastAPI (or Starlette) app. Wiring only.

``SQLSpecOps(spec).instrument(app)`` does, in this order:

1. has every supported SQLSpec config's statements timed: by the driver where its adapter can
   (``Adapter.times_statements``, e.g. through a driver's connection class) and SQLSpec is otherwise idle, else by
   statement hooks merged into the config's own ``ObservabilityConfig`` (then the config is re-added so SQLSpec
   rebuilds its runtime);
2. installs a pool proxy as each config's ``connection_instance`` (no I/O: the driver pool opens at startup
   or on first use);
3. with ``server_spans=True``, has OpenTelemetry's FastAPI (or ASGI) instrumentation make the request's server
   span (``_server_spans``), inside what comes next;
4. wraps the app's middleware stack with the request-ID middleware, outermost (outside Starlette's
   ``ServerErrorMiddleware``, so even responses of unhandled exceptions carry the ID), with a shortcut that
   serves the ``/ops`` endpoints from a private app before the app's own middleware runs;
5. composes startup/shutdown (``_lifecycle``) around the app's own lifespan.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.observability import ObservabilityConfig
from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp

from sqlspec_ops._adapters.proxy import InstrumentedPool, PoolAcquireTimeout
from sqlspec_ops._budget import BudgetReport
from sqlspec_ops._databases import Database, discover
from sqlspec_ops._health import HealthChecker, HealthReport
from sqlspec_ops._lifecycle import Lifecycle
from sqlspec_ops._loop_lag import recent_max_ms
from sqlspec_ops._metrics import metrics_for, render
from sqlspec_ops._middleware import PrefixShortcut, RequestIdMiddleware, ServerErrorShell
from sqlspec_ops._options import OpsOptions
from sqlspec_ops._refusals import RefusingTraffic, TrafficRefusals
from sqlspec_ops._requests import RequestTelemetry
from sqlspec_ops._router import build_router, pool_exhausted
from sqlspec_ops._server_spans import install_server_spans, server_spans_conflict
from sqlspec_ops._server_view import default_application_name
from sqlspec_ops._statements import StatementTelemetry

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ("SQLSpecOps",)

AppT = TypeVar("AppT", bound=Starlette)


class SQLSpecOps:
    """Operational observability for a FastAPI (or Starlette) app built on SQLSpec."""

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
        tracer_provider: "TracerProvider | None" = None,
        registry: CollectorRegistry | None = None,
        header_name: str = "X-Request-ID",
        server_timing: bool = True,
        max_queries_per_request: int | None = 50,
        slow_query_threshold: float | None = 0.5,
        startup_timeout: float = 5.0,
        health_interval: float | None = 15.0,
        leak_threshold: float | None = None,
        application_name: str | None = None,
        server_stats_interval: float | None = 15.0,
        ready_when_saturated: bool = True,
        server_spans: bool = False,
        loop_lag_interval: float | None = 0.5,
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
            leak_threshold: Seconds a connection may be held before it is reported as a possible leak; None off.
            application_name: The name this app's connections show in the database's session list.
            server_stats_interval: Seconds between reads of the database's own view of this app; None off.
            ready_when_saturated: Keep ``/ready`` at 200 (check ``warn``) while a saturated pool still completes
                statements, instead of failing every replica of a busy service at once.
            server_spans: Also make the request's SERVER span (opentelemetry-instrumentation-fastapi; its ASGI
                middleware for Starlette), carrying ``request.id``, without its per-message send/receive spans.
            loop_lag_interval: Seconds between event-loop lag samples per worker; None off.

        Raises:
            ValueError: On an invalid option.

        """
        self.options = OpsOptions(
            prefix=prefix,
            workers=workers,
            replicas=replicas,
            max_connections=max_connections,
            health_timeout=health_timeout,
            health_cache_ttl=health_cache_ttl,
            acquire_timeout=acquire_timeout,
            token=token,
            tracer_provider=tracer_provider,
            registry=registry,
            header_name=header_name,
            server_timing=server_timing,
            max_queries_per_request=max_queries_per_request,
            slow_query_threshold=slow_query_threshold,
            startup_timeout=startup_timeout,
            health_interval=health_interval,
            leak_threshold=leak_threshold,
            application_name=application_name,
            server_stats_interval=server_stats_interval,
            ready_when_saturated=ready_when_saturated,
            server_spans=server_spans,
            loop_lag_interval=loop_lag_interval,
        )
        self.spec = spec
        self._app_title: str | None = None
        self.metrics = metrics_for(registry)
        self.databases: list[Database] = discover(spec)
        self.request_telemetry = RequestTelemetry(
            server_timing=server_timing,
            max_queries_per_request=max_queries_per_request,
            tag_server_span=not server_spans,  # with server_spans the instrumentation's hook tags the span
        )
        self.health = HealthChecker(
            self.pools,
            timeout=health_timeout,
            cache_ttl=health_cache_ttl,
            on_result=self._publish_health,
            unsupported=[(db.name, db.target.adapter) for db in self.databases if db.adapter is None],
            ready_when_saturated=ready_when_saturated,
        )
        self.refusals = TrafficRefusals()
        self.lifecycle = Lifecycle(
            spec=spec,
            options=self.options,
            databases=self.databases,
            health=self.health,
            metrics=self.metrics,
            requests=self.request_telemetry,
            install=self.install,
        )
        self.router: APIRouter = build_router(
            prefix=prefix,
            token=self.options.resolved_token,
            health=self.health,
            render_metrics=self.render_metrics,
            pools_report=self.pools_report,
            refusals=self.refusals,
        )

    # -- what the options say (read by the CLI and by tests) --------------------------------------------

    @property
    def workers(self) -> int | None:
        """The ``workers`` option."""
        return self.options.workers

    @property
    def replicas(self) -> int:
        """The ``replicas`` option."""
        return self.options.replicas

    @property
    def max_connections(self) -> int | None:
        """The ``max_connections`` option."""
        return self.options.max_connections

    @property
    def prefix(self) -> str:
        """Where the ops endpoints live."""
        return self.options.prefix

    @property
    def budget(self) -> BudgetReport | None:
        """The connection-budget report of the last check (None before startup)."""
        return self.lifecycle.budget

    def refusing_traffic(self, reason: str) -> RefusingTraffic:
        """Make ``/ready`` answer 503 with ``reason`` while the block runs (``with`` or ``async with``).

        For migrations, cache warm-ups or a manual drain: the orchestrator takes the instance out of rotation,
        ``/live`` stays 200 so it is not restarted. Nested and concurrent blocks compose; each ends with its block,
        also when the block raises.

        Args:
            reason: What ``/ready`` shows as ``output`` (say why and what is going on).

        Returns:
            A context manager usable with ``with`` and ``async with``.

        Raises:
            ValueError: If ``reason`` is empty.

        """
        return self.refusals.hold(reason)

    def pools(self) -> list[InstrumentedPool]:
        """Return the instrumented pools (supported configs only)."""
        return [db.pool for db in self.databases if db.pool is not None]

    # -- instrumentation ------------------------------------------------------------------------------

    def instrument(self, app: AppT) -> AppT:
        """Instrument a FastAPI or Starlette app: hooks, pool proxies, outermost middleware, lifespan.

        All or nothing: everything that could refuse the app is checked before anything is changed.

        Args:
            app: The app; call before it starts serving.

        Returns:
            The same app.

        Raises:
            TypeError: If ``app`` is not a Starlette (or FastAPI) application.
            RuntimeError: If the app already built its middleware stack (it is serving), another
                ``SQLSpecOps`` instrumented it, or ``server_spans=True`` meets an app that
                opentelemetry-instrumentation-fastapi instrumented already.

        """
        if not isinstance(app, Starlette):
            msg = f"SQLSpecOps.instrument() takes a FastAPI or Starlette app, got {type(app).__name__}"
            raise TypeError(msg)
        current = getattr(app.state, "sqlspec_ops", None)
        if current is self:
            return app
        if current is not None:
            msg = "this app is already instrumented by another SQLSpecOps; instrument each app once"
            raise RuntimeError(msg)
        if app.middleware_stack is not None:
            msg = "SQLSpecOps.instrument(app) must be called before the app starts serving requests"
            raise RuntimeError(msg)
        if self.options.server_spans and (conflict := server_spans_conflict(app)) is not None:
            raise RuntimeError(conflict)
        title = app.title if isinstance(app, FastAPI) else None
        ops_app = self._ops_app(title)  # nothing changed if this fails
        self._app_title = title
        self.install()
        # The server span's instrumentation goes in first, so the request-ID middleware wraps it: the ID is bound
        # before the span starts, and statement spans start inside it.
        wrap_stack = install_server_spans(app, self.options.tracer_provider) if self.options.server_spans else None
        self._wrap_middleware(app, ops_app, wrap_stack)
        if PoolAcquireTimeout not in app.exception_handlers:
            app.add_exception_handler(PoolAcquireTimeout, pool_exhausted)
        self._wrap_lifespan(app)
        app.state.sqlspec_ops = self
        return app

    def install(self) -> None:
        """Register statement timing and the pool proxies on the SQLSpec configs (idempotent, no I/O)."""
        application_name = default_application_name(self.options.application_name, self._app_title)
        for db in self.databases:
            adapter = db.adapter
            if adapter is None:
                continue
            created = db.statements is None
            if created:
                db.statements = StatementTelemetry(
                    pool_name=db.name,
                    target=db.target,
                    adapter=adapter,
                    metrics=self.metrics,
                    slow_query_threshold=self.options.slow_query_threshold,
                )
            if db.pool is None:
                current = db.config.connection_instance
                if isinstance(current, InstrumentedPool):  # another SQLSpecOps got there first: share its proxy
                    db.pool = current
                else:
                    db.pool = adapter.proxy_class(
                        db.config,
                        adapter,
                        name=db.name,
                        target=db.target,
                        metrics=self.metrics,
                        acquire_timeout=self.options.acquire_timeout,
                        leak_threshold=self.options.leak_threshold,
                    )
            statements = db.statements
            if statements is not None:
                statements.holders = db.pool.current_holder
                if created:
                    self._register_statement_timing(db, statements)
            if not db.pool.is_open and db.config.connection_instance in (None, db.pool):
                db.pool.application_name = adapter.apply_application_name(db.config, application_name)
                adapter.time_connects(db.config, self.metrics.connection_create_time.labels(db.name).observe)
            elif db.pool.application_name is None:
                db.pool.application_name = adapter.application_name(db.config)
            db.pool.reattach()  # adopts a driver pool the app already created; no I/O

    def _register_statement_timing(self, db: Database, statements: StatementTelemetry) -> None:
        """Time the config's statements on the driver's own extension point, else with SQLSpec's hooks.

        The driver's path is taken only while SQLSpec would otherwise stay on its idle execution path (no
        lifecycle hook, statement observer or span of the user's own: ``print_sql``, SQLSpec's Prometheus or
        OpenTelemetry extensions...) and the driver's pool is not made yet; SQLSpec then never runs its
        instrumented path for this config. Otherwise its hooks are registered as before (the user's features
        need that path anyway).
        """
        adapter = db.adapter
        pool = db.pool
        if adapter is not None and adapter.times_statements:
            # Re-adding rebuilds SQLSpec's runtime from the config as it is now (an app may have changed its
            # observability_config after adding it), so is_idle below tells what the user asked SQLSpec for.
            self.spec.add_config(db.config)
        if (
            adapter is not None
            and adapter.times_statements
            and pool is not None
            and not pool.is_open
            and db.config.connection_instance in (None, pool)
            and db.config.get_observability_runtime().is_idle
            # a proxy shared with another SQLSpecOps already times into that one's telemetry
            and pool.statements in (None, statements)
            and adapter.time_statements(db.config)
        ):
            pool.statements = statements  # the proxy arms each connection it hands out with this telemetry
            return
        db.config.observability_config = ObservabilityConfig.merge(
            db.config.observability_config, statements.observability_config()
        )
        self.spec.add_config(db.config)  # re-adding rebuilds SQLSpec's runtime with the hooks

    def _ops_app(self, title: str | None) -> FastAPI:
        """Build the private app serving the ops routes: FastAPI's request plumbing without the app's middleware.

        It carries the app's title, which names the service on the status page.
        """
        ops_app = FastAPI(title=title or "FastAPI", openapi_url=None, docs_url=None, redoc_url=None)
        ops_app.include_router(self.router)
        return ops_app

    def _wrap_middleware(
        self, app: Starlette, ops_app: ASGIApp, wrap_stack: Callable[[ASGIApp], ASGIApp] | None = None
    ) -> None:
        build = app.build_middleware_stack

        def build_middleware_stack() -> ASGIApp:
            stack = build()
            inner = stack if wrap_stack is None else wrap_stack(stack)
            outer: ASGIApp = RequestIdMiddleware(
                PrefixShortcut(inner, ops_app, self.options.prefix),
                self.options.header_name,
                hooks=self.request_telemetry,
            )
            if isinstance(stack, ServerErrorMiddleware):
                # opentelemetry-instrumentation-fastapi, when it instruments the app after us, only accepts a
                # stack that starts with ServerErrorMiddleware (it re-wraps that middleware's inner app, ours,
                # inside its server span) and otherwise skips instrumenting. A pass-through shell keeps that
                # shape at the cost of one call; it never calls the app's error handler a second time.
                outer = ServerErrorShell(outer)
            return outer

        # Overriding the instance's builder is the only way to sit outside ServerErrorMiddleware
        # (opentelemetry-instrumentation-fastapi does the same).
        app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]

    def _wrap_lifespan(self, app: Starlette) -> None:
        original = app.router.lifespan_context
        lifecycle = self.lifecycle

        @asynccontextmanager
        async def lifespan(inner_app: Any) -> AsyncIterator[Any]:
            await lifecycle.startup(app)
            try:
                async with original(inner_app) as state:
                    yield state
            finally:
                await lifecycle.shutdown()

        app.router.lifespan_context = lifespan

    # -- lifecycle (also callable by hand, e.g. in scripts and tests) --------------------------------------

    async def startup(self, app: Starlette | None = None) -> None:
        """Open pools, attach plugin sessions, check the budget and ping the databases (never raises)."""
        await self.lifecycle.startup(app)

    async def shutdown(self) -> None:
        """Close the pools this process opened and the app left open; drop this worker's live gauges."""
        await self.lifecycle.shutdown()

    # -- what the router serves -------------------------------------------------------------------------

    def _publish_health(self, report: HealthReport) -> None:
        gauge = self.metrics.database_up
        for check in report.checks:
            gauge.labels(check.pool).set(0 if check.status == "fail" else 1)  # saturated ("warn") is up

    def render_metrics(self, accept: str | None) -> tuple[bytes, str]:
        """Publish every pool's state and render the exposition."""
        for pool in self.pools():
            pool.publish()
        return render(self.options.registry, accept)

    def pools_report(self) -> dict[str, Any]:
        """Return the ``/ops/pools`` body (its module is loaded on the first read: a diagnosis, not a hot path)."""
        from sqlspec_ops._report import pools_report  # noqa: PLC0415

        return pools_report(self.databases, self.lifecycle.budget, loop_lag_ms=recent_max_ms())
