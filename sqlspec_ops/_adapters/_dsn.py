"""Parse host, port and database out of connection URLs and libpq key=value strings (never user or password)."""

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ("as_port", "first", "parse_conninfo", "parse_url")


def parse_url(url: str) -> tuple[str | None, int | None, str | None]:
    """Return host, port and database of a ``scheme://user:password@host:port/database?...`` URL."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    head = netloc.split(",", 1)[0]  # multi-host DSNs: report the first host
    host, _, port_text = head.rpartition(":") if head.count(":") == 1 else (head, "", "")
    if head.startswith("["):  # IPv6 literal
        host, _, port_text = head[1:].partition("]")
        port_text = port_text.lstrip(":")
    database = unquote(parts.path.lstrip("/")) or None
    # libpq also takes host, port and dbname as query parameters (Unix sockets: ?host=/run/postgresql)
    query = parse_qs(parts.query)
    host = host or query.get("host", [""])[0]
    port_text = port_text or query.get("port", [""])[0]
    database = database or query.get("dbname", [None])[0]
    return (unquote(host) or None), as_port(port_text, None), database


def parse_conninfo(conninfo: str) -> tuple[str | None, int | None, str | None]:
    """Return host, port and dbname of a libpq ``key=value`` string."""
    values: dict[str, Any] = {}
    try:  # libpq's own parser handles quoting (a quoted password may contain "host=")
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - psycopg is optional

        values = conninfo_to_dict(conninfo)
    except Exception:  # psycopg missing or a malformed string: never report its text, only fall back
        for token in conninfo.split():
            key, sep, value = token.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip("'")
    host, dbname = values.get("host"), values.get("dbname")
    return (str(host) if host else None), as_port(values.get("port"), None), (str(dbname) if dbname else None)


def first(value: Any, fallback: str | None) -> str | None:
    """Return the value (the first of a list of hosts) as text, else the fallback."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return str(value) if value else fallback


def as_port(value: Any, fallback: int | None) -> int | None:
    """Return the value (the first of a list of ports) as a port number, else the fallback."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return int(value) if value not in (None, "") else fallback
    except (TypeError, ValueError):
        return fallback
