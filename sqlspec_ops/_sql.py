"""What a statement's SQL text says, without its literals: masked text, summary, single collection, hash.

One pass of a small lexer over the text masks every literal (strings, numbers, booleans, dollar quoting) and
drops comments (SQLCommenter puts trace IDs there); a small state machine over the masked text finds the
operations and their targets for ``db.query.summary`` (``SELECT items``, ``INSERT orders SELECT carts``) and
``db.collection.name``. Callers cache the result per distinct statement, so nothing here runs per execution.
"""

import hashlib
import re

__all__ = ("MAX_SQL", "StatementShape", "cache_key", "mask_literals", "shape_of")

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


def cache_key(sql: str) -> str:
    """Return the part of a statement its shape depends on (the key callers cache shapes by).

    SQLCommenter appends a comment that differs per request (traceparent): the key is the statement before it.
    The shape depends on the first ``MAX_SQL`` characters only; a longer key would just pin memory.
    """
    if sql.endswith("*/"):
        start = sql.rfind("/*")
        if start > 0:
            sql = sql[:start]
    return sql if len(sql) <= MAX_SQL else sql[:MAX_SQL]
