"""The ``/ops`` endpoints. Thin: every answer comes from the ``SQLSpecOps`` object.

``/live`` and ``/ready`` (alias ``/health``) stay open for orchestrator probes; ``/metrics`` and ``/pools``
require the bearer token when one is configured. Authorization is checked inline (not through
``HTTPException``) because ``SQLSpecOps.instrument`` serves these routes ahead of the app's exception
middleware.
"""

import hmac
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

if TYPE_CHECKING:
    from sqlspec_ops.ops import SQLSpecOps

__all__ = ("HEALTH_JSON", "build_router")

HEALTH_JSON = "application/health+json"
_NO_STORE = {"Cache-Control": "no-store"}


def build_router(ops: "SQLSpecOps") -> APIRouter:
    """Build the router for one ``SQLSpecOps``.

    Args:
        ops: Provides health, metrics and pool reports.

    Returns:
        An ``APIRouter`` whose paths start with ``ops.prefix``.

    """
    router = APIRouter(prefix=ops.prefix, tags=["ops"])
    expected = ops.token.encode() if ops.token else None

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
        report = await ops.health.check()
        status = 503 if report.status == "fail" else 200
        return JSONResponse(report.as_json(), status_code=status, media_type=HEALTH_JSON, headers=_NO_STORE)

    router.add_api_route("/health", ready, methods=["GET"], summary="Alias of /ready")

    @router.get("/metrics", summary="Prometheus exposition (OpenMetrics when asked for)")
    async def metrics(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        body, content_type = ops.render_metrics(request.headers.get("accept"))
        return Response(body, media_type=content_type, headers=_NO_STORE)

    @router.get("/pools", summary="Pool diagnostics and the connection-budget verdict")
    async def pools(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        body: dict[str, Any] = ops.pools_report()
        return JSONResponse(body, headers=_NO_STORE)

    return router
