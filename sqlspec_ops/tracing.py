"""Statement spans in the stable OpenTelemetry database conventions.

SQLSpec's own spans use the old conventions (``db.system``, ``db.operation``, name ``sqlspec.query``) and add
four lifecycle spans per session. sqlspec-ops leaves SQLSpec's tracing off and starts one CLIENT span per
statement itself, named ``{db.operation.name} {db.collection.name}`` (falling back to the namespace), with
``db.system.name``, ``db.namespace``, ``db.operation.name``, ``db.collection.name``, ``db.query.text``
(literals replaced by ``?``), ``server.address``/``server.port`` and, on failure, ``error.type`` and
``db.response.status_code`` (the SQLSTATE). Parameters are never recorded, and neither are error messages
(they can quote row values).

Everything derived from the SQL text is computed once per distinct statement and cached, so the per-statement
cost is a dictionary lookup plus the span itself. Sampling is the tracer provider's decision.
"""

import re
from functools import lru_cache
from typing import Any

from sqlspec_ops.adapters import PoolTarget

__all__ = ("SCHEMA_URL", "StatementShape", "error_details", "resolve_tracer", "shape_of")

SCHEMA_URL = "https://opentelemetry.io/schemas/1.33.0"

_STRING = re.compile(r"(?:\b[EeBbXxNn])?'(?:[^']|'')*'")
_DOLLAR = re.compile(r"\$(\w*)\$.*?\$\1\$", re.DOTALL)
_NUMBER = re.compile(r"(?<![\w$:.])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_IDENT = r'((?:"[^"]+"|[A-Za-z_][\w$]*)(?:\.(?:"[^"]+"|[A-Za-z_][\w$]*))?)'
_COLLECTION = (
    re.compile(r"^\s*SELECT\b.*?\bFROM\s+" + _IDENT + r"\s*(?:$|[\s;,)]|AS\b|WHERE\b)", re.IGNORECASE | re.DOTALL),
    re.compile(r"^\s*INSERT\s+INTO\s+" + _IDENT, re.IGNORECASE),
    re.compile(r"^\s*UPDATE\s+(?:ONLY\s+)?" + _IDENT, re.IGNORECASE),
    re.compile(r"^\s*DELETE\s+FROM\s+(?:ONLY\s+)?" + _IDENT, re.IGNORECASE),
    re.compile(r"^\s*MERGE\s+INTO\s+" + _IDENT, re.IGNORECASE),
    re.compile(r"^\s*(?:CREATE|ALTER|DROP|TRUNCATE)\s+(?:TABLE\s+)?(?:IF\s+(?:NOT\s+)?EXISTS\s+)?" + _IDENT,
               re.IGNORECASE),
)  # fmt: skip
_SQLSTATE_IN_MESSAGE = re.compile(r"\[([0-9A-Z]{5})\]")
_MAX_TEXT = 4096


class StatementShape:
    """What the SQL text tells about a statement, independent of its parameters."""

    __slots__ = ("collection", "text")

    def __init__(self, collection: str | None, text: str) -> None:
        self.collection = collection
        self.text = text


def mask_literals(sql: str) -> str:
    """Replace string, dollar-quoted and numeric literals with ``?`` (placeholders such as ``$1`` stay)."""
    masked = _DOLLAR.sub("?", sql)
    masked = _STRING.sub("?", masked)
    return _NUMBER.sub("?", masked)


@lru_cache(maxsize=4096)
def shape_of(sql: str) -> StatementShape:
    """Return the collection and the masked text of a statement (cached per distinct SQL text)."""
    text = mask_literals(sql)
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT]
    bare = _COMMENT.sub(" ", text)
    collection = None
    for pattern in _COLLECTION:
        match = pattern.match(bare)
        if match is not None:
            collection = match.group(1).replace('"', "")
            break
    return StatementShape(collection, text)


def span_name_and_attributes(shape: StatementShape, operation: str, target: PoolTarget) -> tuple[str, dict[str, Any]]:
    """Build a statement span's name and its static attributes.

    Args:
        shape: The statement's shape.
        operation: SQLSpec's operation type (``SELECT``, ``INSERT``...).
        target: Where the pool points.

    Returns:
        The span name and a fresh attribute dict.

    """
    attributes: dict[str, Any] = {"db.system.name": target.db_system, "db.operation.name": operation}
    if target.database:
        attributes["db.namespace"] = target.database
    if shape.collection:
        attributes["db.collection.name"] = shape.collection
        attributes["db.query.summary"] = f"{operation} {shape.collection}"
    attributes["db.query.text"] = shape.text
    if target.server is not None:
        attributes["server.address"] = target.host or "localhost"
        attributes["server.port"] = target.port or 5432
    span_target = shape.collection or target.database or target.db_system
    return f"{operation} {span_target}", attributes


def error_details(exc: BaseException) -> tuple[str, str | None]:
    """Return ``(error.type, db.response.status_code)`` for a failed statement.

    The status code is PostgreSQL's SQLSTATE (or SQLite's error name) found on the exception or the driver
    error SQLSpec wrapped; ``error.type`` is that code when known, else the exception's class.
    """
    code: str | None = None
    current: BaseException | None = exc
    for _ in range(5):
        if current is None:
            break
        candidate = getattr(current, "sqlstate", None) or getattr(current, "sqlite_errorname", None)
        if isinstance(candidate, str) and candidate:
            code = candidate
            break
        current = current.__cause__ or current.__context__
    if code is None:
        match = _SQLSTATE_IN_MESSAGE.search(str(exc))
        code = match.group(1) if match else None
    klass = type(exc)
    error_type = code or (
        klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"
    )
    return error_type, code


def resolve_tracer(tracer_provider: Any) -> Any:
    """Return a tracer for statement spans, or None when tracing is not configured.

    Args:
        tracer_provider: The ``tracer_provider`` option; None means the global provider.

    Returns:
        A tracer, or None when no provider was given and the global one is still OpenTelemetry's
        placeholder (spans would be dropped anyway, so none are started).

    """
    from opentelemetry import trace  # noqa: PLC0415 - keep `import sqlspec_ops` free of OpenTelemetry

    from sqlspec_ops import __version__  # noqa: PLC0415

    if tracer_provider is None:
        tracer_provider = trace.get_tracer_provider()
        if isinstance(tracer_provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None
    return tracer_provider.get_tracer("sqlspec_ops", __version__, schema_url=SCHEMA_URL)
