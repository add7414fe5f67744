"""Statement spans in the stable OpenTelemetry database conventions.

SQLSpec's own spans use the old conventions (``db.system``, ``db.operation``, name ``sqlspec.query``) and add
four lifecycle spans per session. sqlspec-ops leaves SQLSpec's tracing off and starts one CLIENT span per
statement itself, with ``db.system.name``, ``db.namespace``, ``db.operation.name``, ``db.query.text``
(literals replaced by ``?``), ``db.query.summary``, ``db.collection.name`` (only when the statement touches a
single collection, as the conventions ask), ``server.address``/``server.port`` and, on failure, ``error.type``
and ``db.response.status_code``. The span is named after the summary, falling back to the operation.
Parameters are never recorded, and neither are comments or error messages (they can quote row values).

Everything derived from the SQL text is computed once per distinct statement and cached by the caller, so the
per-statement cost is a dictionary lookup plus the span itself. Sampling is the tracer provider's decision.
OpenTelemetry's API is imported only when tracing is used: ``import sqlspec_ops`` stays free of it.
"""

from typing import TYPE_CHECKING, Any

from opentelemetry.semconv.attributes import db_attributes, error_attributes, server_attributes

from sqlspec_ops._adapters.base import PoolTarget
from sqlspec_ops._sql import StatementShape
from sqlspec_ops._version import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = (
    "REQUEST_ID_ATTRIBUTE",
    "SCHEMA_URL",
    "fail_span",
    "resolve_tracer",
    "span_name_and_attributes",
    "tag_current_span",
)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.33.0"
REQUEST_ID_ATTRIBUTE = "request.id"


def span_name_and_attributes(shape: StatementShape, operation: str, target: PoolTarget) -> tuple[str, dict[str, Any]]:
    """Build a statement span's name and its static attributes.

    Args:
        shape: The statement's shape.
        operation: SQLSpec's operation type (``SELECT``, ``INSERT``, ``DDL``...).
        target: Where the pool points.

    Returns:
        The span name and a fresh attribute dict (passed to every span of this statement; never mutated).

    """
    attributes: dict[str, Any] = {
        db_attributes.DB_SYSTEM_NAME: target.db_system,
        db_attributes.DB_OPERATION_NAME: operation,
    }
    if target.database:
        attributes[db_attributes.DB_NAMESPACE] = target.database
    if shape.collection:
        attributes[db_attributes.DB_COLLECTION_NAME] = shape.collection
    if shape.summary:
        attributes[db_attributes.DB_QUERY_SUMMARY] = shape.summary
    attributes[db_attributes.DB_QUERY_TEXT] = shape.text
    if target.address is not None:
        attributes[server_attributes.SERVER_ADDRESS] = target.address
        if target.port_or_default is not None:
            attributes[server_attributes.SERVER_PORT] = target.port_or_default
    if shape.summary:
        name = shape.summary
    elif shape.collection:
        name = f"{operation} {shape.collection}"
    else:
        name = operation
    return name, attributes


def fail_span(span: "Span", error_type: str, status_code: str | None) -> None:
    """Mark a statement span failed with its error type (and the database's own code)."""
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - only when tracing is used

    if not span.is_recording():
        return
    span.set_attribute(error_attributes.ERROR_TYPE, error_type)
    if status_code is not None:
        span.set_attribute(db_attributes.DB_RESPONSE_STATUS_CODE, status_code)
    span.set_status(Status(StatusCode.ERROR))


def tag_current_span(request_id: str) -> None:
    """Put the request ID on the current (server) span."""
    from opentelemetry import trace  # noqa: PLC0415 - only when tracing is used

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)


def resolve_tracer(tracer_provider: "TracerProvider | None") -> "Tracer | None":
    """Return a tracer for statement spans, or None when tracing is not configured.

    Args:
        tracer_provider: The ``tracer_provider`` option; None means the global provider.

    Returns:
        A tracer, or None when no provider was given and the global one is still OpenTelemetry's
        placeholder (spans would be dropped anyway, so none are started).

    """
    from opentelemetry import trace  # noqa: PLC0415 - keep `import sqlspec_ops` free of OpenTelemetry

    if tracer_provider is None:
        tracer_provider = trace.get_tracer_provider()
        if isinstance(tracer_provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None
    return tracer_provider.get_tracer("sqlspec_ops", __version__, schema_url=SCHEMA_URL)
