"""One logging pipeline for stdlib records and structlog events.

:func:`configure_logging` routes every stdlib record (SQLSpec's ``sqlspec``, ``sqlspec.sql`` and
``sqlspec.pool`` loggers, uvicorn's, the app's) and every structlog event through the same processors,
so each line carries ``request_id`` and, when a span is active, ``trace_id`` and ``span_id``.

SQLSpec's ``sqlspec.sql`` statement records (emitted with ``ObservabilityConfig(print_sql=True)``) keep
their operation, duration, row count and statement hash; their raw ``parameters`` are dropped unless
``sql_parameters=True`` is passed, because parameters hold user data (passwords, e-mail addresses...).

Usage::

    from sqlspec_ops import configure_logging

    configure_logging()                      # JSON when stdout is not a TTY, else console
    configure_logging(json=True, level="DEBUG")
"""

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from sqlspec_ops._context import get_request_id
from sqlspec_ops._middleware import EXCEPTION_REQUEST_ID

__all__ = ("add_request_id", "add_trace_context", "configure_logging", "shared_processors")

# Fields SQLSpec puts into the ``extra`` of its ``sqlspec.sql`` records (flat, dotted keys) and into the
# nested ``extra_fields`` of its other loggers.
_SQL_FIELDS = (
    "db.system",
    "db.operation",
    "db.statement",
    "db.statement.hash",
    "db.statement.truncated",
    "duration_ms",
    "rows_affected",
    "driver",
    "bind_key",
    "sqlspec.config",
)
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access")


def add_request_id(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Add ``request_id``: the current request's, else SQLSpec's correlation ID, else the failed request's.

    The last case is the server's own report of an unhandled exception ("Exception in ASGI application"),
    logged after the request's context is gone; the middleware tagged the exception with the ID.
    """
    if event_dict.get("request_id") is None:
        request_id = get_request_id()
        if request_id is None:
            record = event_dict.get("_record")
            request_id = getattr(record, "correlation_id", None) if record is not None else None
            if request_id is None:
                request_id = _exception_request_id(record, event_dict)
        if request_id is not None:
            event_dict["request_id"] = request_id
        else:
            event_dict.pop("request_id", None)
    return event_dict


def _exception_request_id(record: logging.LogRecord | None, event_dict: EventDict) -> str | None:
    exc_info = record.exc_info if record is not None else event_dict.get("exc_info")
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    request_id = getattr(exc, EXCEPTION_REQUEST_ID, None) if isinstance(exc, BaseException) else None
    return request_id if isinstance(request_id, str) else None


def add_trace_context(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id``/``span_id`` of the current OpenTelemetry span, when one is recording."""
    from opentelemetry import trace  # noqa: PLC0415 - the API only; keeps `import sqlspec_ops` light

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def _sqlspec_fields(sql_parameters: bool) -> Processor:
    def add_fields(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        record = event_dict.get("_record")
        if record is None:
            return event_dict
        nested = getattr(record, "extra_fields", None)
        if isinstance(nested, dict):
            for key, value in nested.items():
                if key != "parameters" or sql_parameters:
                    event_dict.setdefault(key, value)
        for key in _SQL_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                event_dict.setdefault(key, value)
        if sql_parameters and "parameters" in record.__dict__:
            event_dict["parameters"] = record.__dict__["parameters"]
        return event_dict

    return add_fields


def shared_processors(*, sql_parameters: bool = False) -> list[Processor]:
    """Return the processors every record and event goes through, in order.

    Args:
        sql_parameters: Keep SQLSpec's raw statement parameters (off by default: they hold user data).

    Returns:
        A new list, safe to extend.

    """
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        _sqlspec_fields(sql_parameters),
        add_request_id,
        add_trace_context,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(
    json: bool | None = None,
    level: str | int = "INFO",
    *,
    sql_parameters: bool = False,
    stream: Any = None,
) -> None:
    """Route stdlib logging and structlog through one pipeline.

    Replaces the root logger's handlers, makes uvicorn's and gunicorn's loggers propagate to it (except one
    the server silenced, as ``uvicorn --no-access-log`` does), and configures structlog to render through the
    same handler.

    Args:
        json: Render JSON lines; None picks JSON when the stream is not a TTY.
        level: Root log level.
        sql_parameters: Keep raw statement parameters of SQLSpec's ``sqlspec.sql`` records.
        stream: Where lines go (default ``sys.stdout``).

    """
    stream = sys.stdout if stream is None else stream
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    pre_chain = shared_processors(sql_parameters=sql_parameters)
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json:
        final += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        final.append(structlog.dev.ConsoleRenderer(colors=False))  # renders tracebacks itself
    formatter = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=pre_chain, processors=final)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.set_name("sqlspec_ops")

    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _UVICORN_LOGGERS:
        named = logging.getLogger(name)
        if not named.handlers and not named.propagate:
            continue  # silenced on purpose (uvicorn --no-access-log): keep it silent
        named.handlers.clear()
        named.propagate = True

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *pre_chain,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
