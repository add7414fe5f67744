"""Statement spans in the stable OpenTelemetry database conventions.

SQLSpec's own spans use the old conventions (``db.system``, ``db.operation``, name ``sqlspec.query``) and add
four lifecycle spans per session. sqlspec-ops leaves SQLSpec's tracing off and starts one CLIENT span per
statement itself, with ``db.system.name``, ``db.namespace``, ``db.operation.name``, ``db.query.text``
(literals replaced by ``?``), ``db.query.summary``, ``db.collection.name`` (only when the statement touches a
single collection, as the conventions ask), ``server.address``/``server.port`` and, on failure, ``error.type``
and ``db.response.status_code`` (the SQLSTATE). The span is named after the summary (``SELECT items``,
``INSERT orders SELECT carts``), falling back to the operation. Parameters are never recorded, and neither
are comments (SQLCommenter puts trace IDs there) or error messages (they can quote row values).

Everything derived from the SQL text is computed once per distinct statement and cached by the caller, so the
per-statement cost is a dictionary lookup plus the span itself. Sampling is the tracer provider's decision.
"""

import hashlib
import re
from typing import Any

from sqlspec_ops.adapters import PoolTarget
from sqlspec_ops.adapters_asyncmy import mysql_error_number

__all__ = (
    "MAX_SQL",
    "SCHEMA_URL",
    "StatementShape",
    "error_details",
    "mask_literals",
    "resolve_tracer",
    "shape_of",
    "span_name_and_attributes",
)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.33.0"

# One pass over the SQL text, leftmost alternative first, so a quote inside a comment, a digit inside an
# identifier or a ``--`` inside a string is never mistaken for something else. Unterminated strings and
# comments run to the end of the text: masking too much is safe, masking too little is not.
_LEXER = re.compile(
    r"""
    (?P<comment>--[^\r\n]*|/\*.*?(?:\*/|\Z))
  | (?P<literal>
        [Ee]'(?:[^'\\]|\\.|'')*(?:'|\Z)                 # E'..' strings honour backslash escapes
      | (?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*(?:'|\Z)        # standard, bit, hex, national, unicode strings
      | \$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z)   # dollar quoting
      | (?<![\w$])(?:0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+
          |(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?)   # numbers
    )
  | (?P<keep>"(?:[^"]|"")*"                            # quoted identifiers
      | \$\d+ | %\(\w+\)s | %s | \?\d* | (?<!:):[A-Za-z_]\w*   # placeholders
      | [A-Za-z_][\w$]*)                                # identifiers and keywords
    """,
    re.VERBOSE | re.DOTALL,
)
_BOOLEANS = frozenset({"TRUE", "FALSE"})
_IN_LIST = re.compile(r"\b(IN\s*)\(\s*\?(?:\s*,\s*\?)+\s*\)", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_MAX_TEXT = 4096
# Only this much of a statement is read: a bulk INSERT with inlined literals can be megabytes long, and its
# tail would only be cut from db.query.text anyway (a literal cut open is masked to the end: safe).
MAX_SQL = 2 * _MAX_TEXT
_MAX_SUMMARY = 255

_NAME = r'(?:"(?:[^"]|"")*"|[A-Za-z_][\w$]*)'
_TOKEN = re.compile(rf"(?P<name>{_NAME}(?:\s*\.\s*{_NAME})*)|(?P<punct>[(),;])")
_DML = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
_DDL = frozenset({"CREATE", "ALTER", "DROP"})
_LEADING = _DDL | {"TRUNCATE", "COPY", "CALL"}  # statements that name their target first
_DDL_OBJECTS = frozenset(
    {"TABLE", "INDEX", "VIEW", "SEQUENCE", "SCHEMA", "TYPE", "FUNCTION", "PROCEDURE", "TRIGGER", "EXTENSION",
     "DATABASE", "ROLE", "DOMAIN", "POLICY", "MATERIALIZED"}
)  # fmt: skip
_BEFORE_TARGET = frozenset(
    {"ONLY", "LATERAL", "TABLE", "IF", "NOT", "EXISTS", "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "OR", "REPLACE",
     "CONCURRENTLY", "VIEW", "GLOBAL", "LOCAL"}
)  # fmt: skip
# Words after which UPDATE/DELETE/INSERT are clauses of the current statement, not statements of their own.
_CLAUSE_LEADERS = frozenset({"DO", "FOR", "KEY", "THEN", "ON", "BEFORE", "AFTER", "OF", "GRANT", "REVOKE", "INSTEAD"})
_NOT_A_TARGET = frozenset({"SELECT", "VALUES", "DEFAULT", "WHERE", "SET", "WITH"})
_ENDS_FROM_LIST = frozenset(
    {"WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET", "HAVING", "WINDOW", "SET", "VALUES", "RETURNING", "ON", "UNION",
     "INTERSECT", "EXCEPT", "FETCH", "FOR", "WHEN", "USING"}
)  # fmt: skip


class StatementShape:
    """What the SQL text tells about a statement, independent of its parameters and literals."""

    __slots__ = ("collection", "sql_hash", "summary", "text")

    def __init__(self, collection: str | None, text: str, summary: str | None) -> None:
        self.collection = collection
        self.text = text
        self.summary = summary
        # Hash of the masked text: groups statements that differ only in literals, reveals none of them.
        self.sql_hash = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _mask(match: "re.Match[str]") -> str:
    kind = match.lastgroup
    if kind == "literal":
        return "?"
    if kind == "comment":
        return " "
    word = match.group()
    return "?" if word.upper() in _BOOLEANS else word


def mask_literals(sql: str) -> str:
    """Replace literals with ``?`` and drop comments; placeholders (``$1``, ``%s``, ``:name``) stay.

    Args:
        sql: The statement as sent to the driver.

    Returns:
        The sanitised text the conventions allow in ``db.query.text`` (``IN`` lists of literals collapse to
        ``IN (?)``), whitespace-normalised and cut at 4096 characters.

    """
    masked = _LEXER.sub(_mask, sql)
    masked = _IN_LIST.sub(r"\1(?)", masked)
    masked = _SPACES.sub(" ", masked).strip()
    return masked[:_MAX_TEXT]


def _summarize(text: str) -> tuple[list[str], list[str]]:  # noqa: C901, PLR0912, PLR0915 - one small state machine
    """Return the operations and targets of a masked statement in order, and the collections among them."""
    parts: list[str] = []
    collections: list[str] = []
    # Per parenthesis level: [a statement keyword was seen here, we are in a FROM list].
    levels: list[list[bool]] = [[False, False]]
    # What the next name is: "table" (after INTO, UPDATE, TABLE...), "from" (after FROM, JOIN or a comma in a
    # FROM list; a "(" right after it makes it a function), "object" (an index, view, procedure: not a collection).
    expect: str | None = None
    ddl_pending = False
    last_from_target = False
    previous = ""
    for match in _TOKEN.finditer(text):
        punct = match.group("punct")
        level = levels[-1]
        if punct is not None:
            if punct == "(":
                if last_from_target:  # FROM generate_series(...): a function, not a collection
                    parts.pop()
                    collections.pop()
                levels.append([False, False])
            elif punct == ")":
                if len(levels) > 1:
                    levels.pop()
            elif punct == ",":
                if level[1]:
                    expect = "from"
            else:  # ";": the next statement starts afresh
                levels = [[False, False]]
                ddl_pending = False
            if punct != ",":
                expect = None
            last_from_target = False
            previous = punct
            continue
        name = match.group("name")
        upper = name.upper() if name[0] != '"' else ""
        last_from_target = False
        if ddl_pending:
            if upper in _DDL_OBJECTS:
                parts[-1] += f" {upper}"
                if upper != "MATERIALIZED":
                    ddl_pending = False
                    expect = "table" if upper == "TABLE" else "object"
                previous = upper
                continue
            if upper not in _BEFORE_TARGET:
                ddl_pending = False
                expect = "object"
        if expect is not None and upper not in _NOT_A_TARGET:
            if upper in _BEFORE_TARGET:
                previous = upper
                continue
            if '"' not in name:  # `public . items` -> `public.items`; quoted names stay as written
                name = _SPACES.sub("", name)
            parts.append(name)
            if expect != "object":
                collections.append(name)
            last_from_target = expect == "from"
            expect = None
            previous = upper
            continue
        expect = None
        if upper in _DML and previous not in _CLAUSE_LEADERS:
            parts.append(upper)
            level[0] = True
            level[1] = False
            if upper == "UPDATE":
                expect = "table"
        elif upper in _LEADING and len(levels) == 1 and not level[0]:
            parts.append(upper)
            level[0] = True
            if upper in _DDL:
                ddl_pending = True
            else:
                expect = "object" if upper == "CALL" else "table"
        elif upper in {"FROM", "JOIN"} and level[0] and previous != "DISTINCT":
            expect = "from"
            level[1] = True
        elif upper == "INTO" and level[0]:
            expect = "table"
        elif upper in _ENDS_FROM_LIST:
            level[1] = False
            if upper == "USING" and parts and parts[0] in {"MERGE", "DELETE"} and len(levels) == 1:
                expect = "from"
                level[1] = True
        previous = upper
    return parts, collections


def _join_summary(parts: list[str]) -> str:
    summary = ""
    for part in parts:
        candidate = f"{summary} {part}" if summary else part
        if len(candidate) > _MAX_SUMMARY:
            break
        summary = candidate
    return summary


def shape_of(sql: str) -> StatementShape:
    """Return the masked text, the summary and the single collection (if any) of a statement.

    Args:
        sql: The statement as sent to the driver; only its first ``MAX_SQL`` characters are read.

    Returns:
        Its shape; callers cache it per distinct SQL text (cut to ``MAX_SQL`` characters).

    """
    text = mask_literals(sql[:MAX_SQL])
    parts, collections = _summarize(text)
    summary = _join_summary(parts) if parts else None
    if summary is None:
        first = text.split(" ", 1)[0].upper()
        summary = first if first.isalpha() and len(first) <= 20 else None  # noqa: PLR2004 - a keyword, not data
    # The conventions want db.collection.name only for statements on a single collection.
    collection = collections[0] if collections and all(name == collections[0] for name in collections) else None
    return StatementShape(collection, text, summary)


def span_name_and_attributes(shape: StatementShape, operation: str, target: PoolTarget) -> tuple[str, dict[str, Any]]:
    """Build a statement span's name and its static attributes.

    Args:
        shape: The statement's shape.
        operation: SQLSpec's operation type (``SELECT``, ``INSERT``, ``DDL``...).
        target: Where the pool points.

    Returns:
        The span name and a fresh attribute dict (passed to every span of this statement; never mutated).

    """
    attributes: dict[str, Any] = {"db.system.name": target.db_system, "db.operation.name": operation}
    if target.database:
        attributes["db.namespace"] = target.database
    if shape.collection:
        attributes["db.collection.name"] = shape.collection
    if shape.summary:
        attributes["db.query.summary"] = shape.summary
    attributes["db.query.text"] = shape.text
    if target.server is not None:
        attributes["server.address"] = target.host or "localhost"
        attributes["server.port"] = target.port or 5432
    if shape.summary:
        name = shape.summary
    elif shape.collection:
        name = f"{operation} {shape.collection}"
    else:
        name = operation
    return name, attributes


# SQLSpec's mapped exceptions say "PostgreSQL database error [22012]: ..." when the driver's error is gone.
_SQLSTATE_PREFIX = re.compile(r"^[\w ]{0,40}?error \[([0-9A-Z]{5})\]")


def error_details(exc: BaseException) -> tuple[str, str | None]:
    """Return ``(error.type, db.response.status_code)`` for a failed statement.

    Args:
        exc: What SQLSpec's ``on_error`` hook received (usually a ``sqlspec.exceptions`` error wrapping the
            driver's).

    Returns:
        The status code is the SQLSTATE (psycopg, asyncpg), the MySQL error number (asyncmy) or SQLite's error
        name found on the exception or on the driver error it wraps; ``error.type`` is that code when known,
        else the class of the most specific exception. Both have a bounded set of values, so they are safe as
        metric labels; the exception's message (which can quote row values) is never used beyond SQLSpec's
        ``[SQLSTATE]`` prefix.

    """
    code: str | None = None
    innermost = exc
    current: BaseException | None = exc
    for _ in range(5):
        if current is None:
            break
        innermost = current
        # MySQL's errors carry a SQLSTATE too, but its conventions (and operators) use the error number
        candidate = (
            mysql_error_number(current)
            or getattr(current, "sqlstate", None)
            or getattr(current, "sqlite_errorname", None)
        )
        if isinstance(candidate, str) and candidate:
            code = candidate
            break
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    if code is None:
        match = _SQLSTATE_PREFIX.match(str(exc))
        code = match.group(1) if match else None
    if code is not None:
        return code, code
    klass = type(innermost)
    name = klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"
    return name, None


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
