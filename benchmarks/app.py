"""The benchmark app, in five variants chosen by ``BENCH_VARIANT``.

All variants serve the same two routes: ``GET /users/{user_id}`` (one primary-key SELECT through a
``spec.provide_session(config)`` dependency) and ``GET /ping`` (no database).

- ``bare``: FastAPI + SQLSpec + asyncpg, nothing else.
- ``ops``: ``SQLSpecOps(spec).instrument(app)`` (request IDs, structlog binding, pool and query metrics),
  no tracing.
- ``ops_tracing``: the same plus 100 %-sampled spans: FastAPI's own server span and sqlspec-ops' statement
  spans, through a tracer provider whose span processor drops every span.
- ``ops_traced``: ``SQLSpecOps(spec, tracer_provider=tp, server_spans=True)``: the server span from
  opentelemetry-instrumentation-fastapi without its send/receive spans, plus the statement spans, same
  dropping provider.
- ``anchors``: today's usual stack: asgi-correlation-id, prometheus-fastapi-instrumentator,
  opentelemetry-instrumentation-fastapi and SQLSpec's built-in metrics and tracing, with the same dropping
  span processor.

Run with ``uvicorn --factory benchmarks.app:create_app`` and ``DATABASE_URL`` set (``benchmarks/throughput.py``
does it); nothing is built at import time.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig, AsyncpgDriver

__all__ = ("VARIANTS", "add_users_route", "create_app")

VARIANTS = ("bare", "ops", "ops_tracing", "ops_traced", "anchors")
_TRACED = ("ops_tracing", "ops_traced", "anchors")


def _dropping_provider() -> Any:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON  # noqa: PLC0415

    class DropSpans(SpanProcessor):
        """Ends the pipeline: spans are fully built and recorded, then dropped instead of exported."""

    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(DropSpans())
    return provider


def add_users_route(app: FastAPI, spec: SQLSpec, config: AsyncpgConfig) -> None:
    """Add ``GET /users/{user_id}``: one primary-key SELECT through a ``spec.provide_session`` dependency."""

    async def session() -> AsyncIterator[AsyncpgDriver]:
        async with spec.provide_session(config) as db:
            yield db

    @app.get("/users/{user_id}")
    async def get_user(user_id: int, db: Annotated[AsyncpgDriver, Depends(session)]) -> dict[str, Any]:
        row = await db.select_one_or_none("SELECT id, name, email FROM users WHERE id = $1", user_id)
        if row is None:
            raise HTTPException(status_code=404, detail="no such user")
        return dict(row)


def create_app(variant: str | None = None) -> FastAPI:
    """Build the app for one variant."""
    variant = variant or os.environ.get("BENCH_VARIANT", "bare")
    if variant not in VARIANTS:
        msg = f"BENCH_VARIANT must be one of {VARIANTS}, got {variant!r}"
        raise ValueError(msg)
    pool_size = int(os.environ.get("BENCH_POOL_SIZE", "8"))
    connection_config = {"dsn": os.environ["DATABASE_URL"], "min_size": pool_size, "max_size": pool_size}
    provider = _dropping_provider() if variant in _TRACED else None
    extension_config: dict[str, Any] = {}
    if variant == "anchors":
        extension_config = {"prometheus": {}, "otel": {"tracer_provider": provider}}

    spec = SQLSpec()
    config = spec.add_config(
        AsyncpgConfig(connection_config=connection_config, bind_key="primary", extension_config=extension_config)
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await spec.get_pool(config)
        try:
            yield
        finally:
            await spec.close_all_pools()

    telemetry: dict[str, Any] = {"tracing": False, "metrics": False, "logs": False}
    if variant == "ops_tracing":
        telemetry = {"tracer_provider": provider, "metrics": False, "logs": False, "operation_spans": False}
    app = FastAPI(lifespan=lifespan, telemetry=telemetry)  # type: ignore[arg-type]

    add_users_route(app, spec, config)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    _instrument(app, spec, variant, provider)
    return app


def _instrument(app: FastAPI, spec: SQLSpec, variant: str, provider: Any) -> None:
    if variant in ("ops", "ops_tracing", "ops_traced"):
        from sqlspec_ops import SQLSpecOps  # noqa: PLC0415

        SQLSpecOps(spec, tracer_provider=provider, server_spans=variant == "ops_traced").instrument(app)
    elif variant == "anchors":
        from asgi_correlation_id import CorrelationIdMiddleware  # noqa: PLC0415
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415
        from prometheus_fastapi_instrumentator import Instrumentator  # noqa: PLC0415

        app.add_middleware(CorrelationIdMiddleware)
        Instrumentator().instrument(app).expose(app, endpoint="/metrics")
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
