"""The ``/ops`` endpoints and the 503 answer for an exhausted pool. Thin: every answer comes from what it is given.

``/live`` and ``/ready`` (alias ``/health``) stay open for orchestrator probes; ``/metrics`` and ``/pools``
require the bearer token when one is configured. Authorization is checked inline (not through
``HTTPException``) because ``SQLSpecOps.instrument`` serves these routes ahead of the app's exception
middleware.
"""

import hmac
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from sqlspec_ops._health import HealthChecker

__all__ = ("HEALTH_JSON", "build_router", "pool_exhausted")

logger = logging.getLogger("sqlspec_ops")

HEALTH_JSON = "application/health+json"
_NO_STORE = {"Cache-Control": "no-store"}


def build_router(
    *,
    prefix: str,
    token: str | None,
    health: HealthChecker,
    render_metrics: Callable[[str | None], tuple[bytes, str]],
    pools_report: Callable[[], dict[str, Any]],
) -> APIRouter:
    """Build the ops router.

    Args:
        prefix: Where the endpoints live.
        token: Bearer token required by every endpoint except live and ready (None: open).
        health: Answers readiness.
        render_metrics: Renders the exposition for a scraper's ``Accept`` header.
        pools_report: Builds the ``/ops/pools`` body.

    Returns:
        An ``APIRouter`` whose paths start with ``prefix``.

    """
    router = APIRouter(prefix=prefix, tags=["ops"])
    expected = token.encode() if token else None

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        # compare_digest runs in time independent of where the values differ
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), expected)

    def unauthorized() -> Response:
        return JSONResponse(
            {"detail": "a bearer token is required for this endpoint"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="ops"', **_NO_STORE},
        )

    @router.get("/live", summary="Liveness: the process serves requests (never touches a database)")
    async def live() -> Response:
        return JSONResponse({"status": "pass"}, media_type=HEALTH_JSON, headers=_NO_STORE)

    @router.get("/ready", summary="Readiness: every database answers SELECT 1 through its pool")
    async def ready() -> Response:
        report = await health.check()
        status = 503 if report.status == "fail" else 200
        return JSONResponse(report.as_json(), status_code=status, media_type=HEALTH_JSON, headers=_NO_STORE)

    router.add_api_route("/health", ready, methods=["GET"], summary="Alias of /ready")

    @router.get("/metrics", summary="Prometheus exposition (OpenMetrics when asked for)")
    async def metrics(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        body, content_type = render_metrics(request.headers.get("accept"))
        return Response(body, media_type=content_type, headers=_NO_STORE)

    @router.get("/pools", summary="Pool diagnostics and the connection-budget verdict")
    async def pools(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        body: dict[str, Any] = pools_report()
        return JSONResponse(body, headers=_NO_STORE)

    return router


async def pool_exhausted(_request: Request, exc: Exception) -> Response:
    """Answer 503 + ``Retry-After`` when no pool connection became free within ``acquire_timeout``.

    An exhausted pool is overload, not a bug: a 503 tells load balancers and clients to back off, and the
    event is logged once at WARNING instead of as an unhandled exception with a traceback. Apps that
    register their own handler for ``PoolAcquireTimeout`` keep it.
    """
    logger.warning("%s", exc)
    return JSONResponse(
        {"detail": "the database is saturated, retry shortly"}, status_code=503, headers={"Retry-After": "1"}
    )
