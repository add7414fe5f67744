"""The operation name of a statement the driver is about to run, the way SQLSpec names it.

Adapters that time statements on the driver's own extension point (asyncpg's ``connection_class``, psycopg's
``cursor_factory``) see only the SQL text SQLSpec sends, not SQLSpec's parsed statement, so they classify it from
its leading keyword, cached per text. Transaction control is not an app statement (SQLSpec's hooks never see it):
its operation is None and it is not counted.
"""

__all__ = ("operation_of",)

# Leading keyword -> SQLSpec's operation type (sqlspec.core.compiler.OPERATION_TYPE_MAP, by statement kind).
_OPERATIONS = {
    "SELECT": "SELECT",
    "VALUES": "SELECT",
    "TABLE": "SELECT",
    "INSERT": "INSERT",
    "UPDATE": "UPDATE",
    "DELETE": "DELETE",
    "MERGE": "MERGE",
    "CREATE": "DDL",
    "DROP": "DDL",
    "ALTER": "DDL",
    "TRUNCATE": "DDL",
    "GRANT": "DDL",
    "REVOKE": "DDL",
    "COMMENT": "DDL",
    "EXECUTE": "EXECUTE",
    "COPY": "COPY",
}
# Transaction control: sent by asyncpg's Transaction and SQLSpec's begin/commit/rollback, never seen by the hooks.
_NOT_COUNTED = frozenset({"BEGIN", "START", "COMMIT", "ROLLBACK", "END", "ABORT", "SAVEPOINT", "RELEASE"})
_WITH_BODIES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
_OPERATION_CACHE_SIZE = 4096
_operations: dict[str, str | None] = {}


def _words(sql: str) -> list[str]:  # noqa: C901, PLR0912 - one small scanner, no regex per statement
    """Return the upper-cased words outside parentheses, quotes and comments (enough to classify a statement)."""
    words: list[str] = []
    depth = 0
    index = 0
    length = len(sql)
    current: list[str] = []
    while index < length:
        char = sql[index]
        if char.isalpha() or char == "_" or (current and char.isalnum()):
            if depth == 0:
                current.append(char)
            index += 1
            continue
        if current:
            words.append("".join(current).upper())
            current = []
            if len(words) > 64:  # noqa: PLR2004 - a WITH list this long is classified by what was seen
                break
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char in "'\"":
            end = sql.find(char, index + 1)
            index = length if end < 0 else end
        elif sql.startswith("--", index):
            end = sql.find("\n", index)
            index = length if end < 0 else end
        elif sql.startswith("/*", index):
            end = sql.find("*/", index + 2)
            index = length if end < 0 else end + 1
        elif char == "$" and depth == 0 and not current:  # dollar quoting ($$...$$ or $tag$...$tag$)
            close = sql.find("$", index + 1)
            tag = sql[index : close + 1] if close > 0 else ""
            if tag and (tag == "$$" or tag[1:-1].isidentifier()):
                end = sql.find(tag, close + 1)
                index = length if end < 0 else end + len(tag) - 1
        index += 1
    if current:
        words.append("".join(current).upper())
    return words


def _classify(sql: str) -> str | None:  # noqa: PLR0911 - one return per statement kind
    stripped = sql.lstrip()
    if stripped.startswith("("):  # (SELECT ...) UNION (SELECT ...): the first statement inside says what it is
        return _classify(stripped[1:])
    words = _words(sql)
    if not words:
        return "COMMAND"
    first = words[0]
    if first in _NOT_COUNTED:
        return None
    if first == "COPY":  # SQLSpec names the direction: COPY ... FROM is COPY_FROM, COPY ... TO is COPY_TO
        return "COPY_FROM" if "FROM" in words else "COPY_TO" if "TO" in words else "COPY"
    if first == "WITH":
        for word in words[1:]:
            if word in _WITH_BODIES:
                return word
        return "SELECT"
    return _OPERATIONS.get(first, "COMMAND")


def operation_of(sql: str) -> str | None:
    """Return the operation name SQLSpec would give a statement (None: transaction control, not counted).

    Classified from the statement's leading keyword (past a ``WITH`` list, its main statement), cached per text.
    """
    try:
        return _operations[sql]
    except KeyError:
        pass
    operation = _classify(sql)
    if len(_operations) >= _OPERATION_CACHE_SIZE:  # bounded: SQL with inlined literals never repeats
        _operations.clear()
    _operations[sql] = operation
    return operation
