"""The ``/ops`` endpoints and the 503 answer for an exhausted pool. Thin: every answer comes from what it is given.

``/live`` and ``/ready`` (alias ``/health``) stay open for orchestrator probes; ``/metrics``, ``/pools`` and
the status page ``/`` require the token when one is configured, as a bearer token or (what a browser can
send) as the password of HTTP Basic. ``HEAD`` on ``/live``, ``/ready`` and ``/health`` answers the same status
without a body (load balancers and uptime checkers use it). While ``refusing_traffic`` is held, ``/ready``
answers 503 with its reasons at once, without pinging. Authorization is checked inline (not through
``HTTPException``) because ``SQLSpecOps.instrument`` serves these routes ahead of the app's exception middleware.
"""

import binascii
import hmac
import logging
import secrets
from base64 import b64decode
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from sqlspec_ops._health import HealthChecker
from sqlspec_ops._refusals import TrafficRefusals

__all__ = ("HEALTH_JSON", "build_router", "pool_exhausted")

logger = logging.getLogger("sqlspec_ops")

HEALTH_JSON = "application/health+json"
_NO_STORE = {"Cache-Control": "no-store"}
_PAGE_REFRESH_SECONDS = 5.0


def _presented_token(header: str) -> bytes | None:
    """Return the token of an ``Authorization`` header: a bearer token, or the password of HTTP Basic."""
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return credentials.strip().encode()
    if scheme == "basic":
        try:
            decoded = b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]  # any username: the password is the token
    return None


def _page_headers(nonce: str) -> dict[str, str]:
    # Nothing external, nothing inline without the nonce; connect-src 'self' only for the refresh script's fetch.
    csp = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        **_NO_STORE,
    }


def build_router(  # noqa: C901 - counts the route closures
    *,
    prefix: str,
    token: str | None,
    health: HealthChecker,
    render_metrics: Callable[[str | None], tuple[bytes, str]],
    pools_report: Callable[[], dict[str, Any]],
    service: str | None = None,
    refusals: TrafficRefusals | None = None,
) -> APIRouter:
    """Build the ops router.

    Args:
        prefix: Where the endpoints live.
        token: Required by every endpoint except live and ready (None: open), as a bearer token or as the
            password of HTTP Basic.
        health: Answers readiness.
        render_metrics: Renders the exposition for a scraper's ``Accept`` header.
        pools_report: Builds the ``/ops/pools`` body.
        service: The service's name on the status page (default: ``OTEL_SERVICE_NAME``, else the app's title
            unless it is FastAPI's default, else ``sqlspec-ops``).
        refusals: While it holds a reason, ``/ready`` answers 503 with it (``ops.refusing_traffic``).

    Returns:
        An ``APIRouter`` whose paths start with ``prefix``.

    """
    router = APIRouter(prefix=prefix, tags=["ops"])
    expected = token.encode() if token else None

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        presented = _presented_token(request.headers.get("authorization", ""))
        # compare_digest runs in time independent of where the values differ
        return presented is not None and hmac.compare_digest(presented, expected)

    def unauthorized() -> Response:
        response = JSONResponse(
            {"detail": "the ops token is required: as a bearer token, or as the password of HTTP Basic"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="sqlspec-ops"', **_NO_STORE},
        )
        # A second challenge makes browsers ask for a user and password (they cannot send a bearer token).
        response.headers.append("WWW-Authenticate", 'Basic realm="sqlspec-ops", charset="UTF-8"')
        return response

    def health_response(request: Request, body: dict[str, Any], status: int) -> Response:
        if request.method == "HEAD":
            return Response(status_code=status, media_type=HEALTH_JSON, headers=_NO_STORE)
        return JSONResponse(body, status_code=status, media_type=HEALTH_JSON, headers=_NO_STORE)

    @router.api_route(
        "/live", methods=["GET", "HEAD"], summary="Liveness: the process serves requests (never touches a database)"
    )
    async def live(request: Request) -> Response:
        return health_response(request, {"status": "pass"}, 200)

    async def readiness() -> tuple[dict[str, Any], int]:
        """Return the ``/ready`` body and status (the status page shows the same verdict)."""
        reasons = refusals.reasons if refusals is not None else ()
        if reasons:
            # Taken out of rotation on purpose: answer at once; the last checks (if any) stay visible.
            last = health.last
            body = {"status": "fail", "output": "; ".join(reasons), "checks": last.as_json()["checks"] if last else {}}
            return body, 503
        report = await health.check()
        return report.as_json(), 503 if report.status == "fail" else 200

    @router.api_route("/ready", methods=["GET", "HEAD"], summary="Readiness: every database answers SELECT 1")
    async def ready(request: Request) -> Response:
        body, status = await readiness()
        return health_response(request, body, status)

    router.add_api_route("/health", ready, methods=["GET", "HEAD"], summary="Alias of /ready")

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

    @router.get("", include_in_schema=False)
    async def status_page_redirect(request: Request) -> Response:
        return RedirectResponse(f"{request.scope.get('root_path', '')}{prefix}/", headers=_NO_STORE)

    @router.get("/", summary="Status page for people: readiness, pools, holders, the database's view, budget")
    async def status_page(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        # Imported on first view: most processes never render the page, and it is the largest module here.
        from sqlspec_ops._status_page import render_status_page, service_name  # noqa: PLC0415

        nonce = secrets.token_urlsafe(18)
        page = render_status_page(
            service=service or service_name(title=getattr(request.app, "title", None)),
            health=(await readiness())[0],
            pools=pools_report(),
            nonce=nonce,
            refresh_seconds=_PAGE_REFRESH_SECONDS,
        )
        return HTMLResponse(page, headers=_page_headers(nonce))

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
