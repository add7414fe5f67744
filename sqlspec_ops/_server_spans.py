"""The request's SERVER span for ``SQLSpecOps(server_spans=True)``: one call gives the whole trace.

FastAPI apps get it from opentelemetry-instrumentation-fastapi (``FastAPIInstrumentor.instrument_app``), plain
Starlette apps from opentelemetry-instrumentation-asgi's ``OpenTelemetryMiddleware`` (with the route template as
the span name, not the raw path). Either way:

- the per-message ``send``/``receive`` spans are excluded: they are most of the instrumentation's cost (about
  three extra spans per request) and say nothing a server span does not;
- the span is installed *inside* the request-ID middleware, so the ID is bound before the span starts and
  ``request.id`` is set by the instrumentation's ``server_request_hook``; responses the instrumentation itself
  produces still carry the ID header;
- it is also inside the ``/ops`` shortcut, so probes and scrapes make no traces;
- statement spans start while the server span is current, so they are its children.

The FastAPI instrumentation also traces Starlette's ``BackgroundTask`` calls (it patches that class once per
process, as it does whenever it instruments an app). OpenTelemetry's instrumentation packages are imported here
only, and only when the option is on: ``import sqlspec_ops`` stays free of them.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Match
from starlette.types import ASGIApp, Scope

from sqlspec_ops._context import request_id_var
from sqlspec_ops._tracing import REQUEST_ID_ATTRIBUTE

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

__all__ = ("install_server_spans", "server_spans_conflict", "tag_request_id")

_EXCLUDED_SPANS: list[Any] = ["send", "receive"]


def tag_request_id(span: "Span", scope: Scope) -> None:  # noqa: ARG001 - the instrumentation's hook signature
    """Put the bound request ID on the server span (the instrumentation's ``server_request_hook``)."""
    request_id = request_id_var.get()
    if request_id is not None and span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)


def server_spans_conflict(app: Starlette) -> str | None:
    """Say why ``server_spans=True`` cannot be honoured on this app (None when it can); changes nothing."""
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        return (
            "server_spans=True makes the server span itself, but this app is already instrumented by "
            "opentelemetry-instrumentation-fastapi (FastAPIInstrumentor or opentelemetry-instrument); drop "
            "server_spans=True, or stop instrumenting FastAPI elsewhere (OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fastapi)"
        )
    return None


def install_server_spans(app: Starlette, tracer_provider: "TracerProvider | None") -> Callable[[ASGIApp], ASGIApp]:
    """Make ``app`` produce a SERVER span per request; return how to wrap its built stack (identity for FastAPI).

    For FastAPI the instrumentation replaces ``app.build_middleware_stack`` now, before sqlspec-ops wraps that
    builder, so its span ends up inside the request-ID middleware. For Starlette the returned function wraps the
    built stack in the ASGI middleware.

    Args:
        app: The app being instrumented (checked by :func:`server_spans_conflict` first).
        tracer_provider: Where the span goes (None: the global provider).

    Returns:
        A function applied to the app's built middleware stack.

    """
    if isinstance(app, FastAPI):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415 - only with the option

        FastAPIInstrumentor.instrument_app(
            app,
            server_request_hook=tag_request_id,
            tracer_provider=tracer_provider,
            exclude_spans=_EXCLUDED_SPANS,
        )
        return _unchanged

    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # noqa: PLC0415 - only with the option

    def wrap(stack: ASGIApp) -> ASGIApp:
        return OpenTelemetryMiddleware(
            stack,
            default_span_details=_route_span_details(app),
            server_request_hook=tag_request_id,
            tracer_provider=tracer_provider,
            exclude_spans=_EXCLUDED_SPANS,
        )

    return wrap


def _unchanged(stack: ASGIApp) -> ASGIApp:
    return stack


def _route_span_details(app: Starlette) -> Callable[[Scope], tuple[str, dict[str, Any]]]:
    """Name Starlette server spans ``METHOD /route/{template}`` (the ASGI default uses the raw path: unbounded)."""

    def details(scope: Scope) -> tuple[str, dict[str, Any]]:
        method = scope.get("method", "")
        template = None
        for route in app.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                template = getattr(route, "path", None)
                break
        if template is None:
            return method or "HTTP", {}
        name = f"{method} {template}" if method else template
        return name, {"http.route": template}

    return details
