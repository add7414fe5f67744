"""What asyncpg and psycopg share: PostgreSQL's defaults, its connection limits and its error codes."""

import json
import re
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from sqlspec_ops._adapters.base import Adapter, ServerRead

__all__ = ("PRIVILEGE_ERROR", "PostgresAdapter", "dsn_application_name")

# One bounded round trip over pg_stat_activity, aggregated on the server (one row comes back). Client backends
# only; the sampler's own backend is left out of every count and added back as one idle connection of this app
# (it is a pool connection that is idle but for this query). Without pg_read_all_stats (or superuser) the
# server hides other roles' state, xact_start and wait events: the last column says whether the view is whole.
# Never reads query text or client ports. ``{p}`` is the driver's placeholder for the application_name.
_VIEW_SQL = """
WITH a AS (
  SELECT application_name = {p} AS mine, state, xact_start, wait_event_type = 'Lock' AS lock_wait,
         coalesce(host(client_addr), 'local') AS addr
    FROM pg_catalog.pg_stat_activity
   WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
)
SELECT (SELECT coalesce(json_object_agg(s, n), '{{}}')::text
          FROM (SELECT coalesce(state, 'unknown') AS s, count(*) AS n FROM a WHERE mine GROUP BY 1) t),
       (count(*) FILTER (WHERE NOT mine))::int,
       (count(*) FILTER (WHERE mine AND state IN ('idle in transaction', 'idle in transaction (aborted)')))::int,
       (extract(epoch FROM max(now() - xact_start) FILTER (WHERE mine)))::float8,
       (count(*) FILTER (WHERE mine AND lock_wait))::int,
       (count(DISTINCT addr) FILTER (WHERE mine))::int,
       pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')
  FROM a
"""
PRIVILEGE_ERROR = (
    "the role cannot see other roles' sessions (state, transactions, lock waits): "
    "GRANT pg_read_all_stats TO the app's role; the counts shown cover only what it can see"
)
_CONNINFO_NAME = re.compile(r"(?:^|\s)application_name\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def dsn_application_name(text: Any) -> str | None:
    """Return the ``application_name`` a DSN (URL or libpq ``key=value``) sets, else None."""
    if not isinstance(text, str) or "application_name" not in text:
        return None
    if "://" in text:
        values = parse_qs(urlsplit(text).query).get("application_name")
        return values[0] if values else None
    match = _CONNINFO_NAME.search(text)
    return match.group(1).strip("'") if match else None


# One round trip; every value is read as text (``SHOW``/``current_setting`` return text) and parsed here.
# ``current_setting(name, true)`` gives NULL instead of an error for ``reserved_connections`` before PG16.
_LIMITS_SQL = """
SELECT current_setting('max_connections'),
       current_setting('superuser_reserved_connections'),
       current_setting('reserved_connections', true),
       current_user::text,
       (SELECT rolconnlimit FROM pg_catalog.pg_roles WHERE rolname = current_user)::text,
       current_database()::text,
       (SELECT datconnlimit FROM pg_catalog.pg_database WHERE datname = current_database())::text,
       CASE WHEN current_setting('application_name') <> '' THEN
         (SELECT count(*) FROM pg_catalog.pg_stat_activity
           WHERE backend_type = 'client backend'
             AND application_name IS DISTINCT FROM current_setting('application_name'))::text
       END
"""


def _limit(raw: Any) -> int | None:
    """PostgreSQL writes "no limit" as -1."""
    value = int(raw) if raw not in (None, "") else -1
    return value if value >= 0 else None


class PostgresAdapter(Adapter):
    """PostgreSQL through any driver: libpq's default host and port, SQLSTATE codes, the server's limits."""

    db_system = "postgresql"
    default_host = "localhost"
    default_port = 5432
    has_server_view = True
    placeholder: ClassVar[str] = "$1"

    async def fetch_one(self, connection: Any, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """Run a parametrised query and return its first row (driver-specific)."""
        raise NotImplementedError

    async def server_view(
        self, connection: Any, application_name: str | None, *, pooled: bool = True
    ) -> dict[str, Any]:
        """Return this app's backends by state, other clients', idle in transaction, oldest transaction, lock waits.

        "This app" is every backend announcing the same ``application_name`` (every worker and replica).
        ``fleet`` is what the server sees of it: backends and distinct client addresses. The connection running
        the query is not counted, except as one idle connection of this app when it is a ``pooled`` one.
        """
        sql = _VIEW_SQL.format(p=self.placeholder)
        row = await self.fetch_one(connection, sql, (application_name,))
        states_text, other, idle_tx, oldest, waiting, addresses, privileged = row
        this_app: dict[str, int] = {str(k): int(v) for k, v in json.loads(states_text).items()}
        if pooled:  # the sampler's own pool connection, idle but for this query (see _VIEW_SQL)
            this_app["idle"] = this_app.get("idle", 0) + 1
        view: dict[str, Any] = {
            "application_name": application_name,
            "this_app": this_app,
            "other_clients": int(other),
            "idle_in_transaction": int(idle_tx),
            "oldest_transaction_s": round(float(oldest), 3) if oldest is not None else None,
            "waiting_on_lock": int(waiting),
            "fleet": {"backends": sum(this_app.values()), "client_addresses": max(1, int(addresses))},
        }
        if not privileged:
            view["error"] = PRIVILEGE_ERROR
        return view

    async def read_limits(self, connection: Any) -> ServerRead:
        """Read ``max_connections``, the reserved slots and the role's and database's connection limits."""
        row = await self.fetch_row(connection, _LIMITS_SQL)
        mc, su, reserved, role, role_limit, database, database_limit, others = row
        slots = [("superuser_reserved_connections", int(su))]
        if reserved not in (None, ""):  # PostgreSQL 16+
            slots.append(("reserved_connections", int(reserved)))
        return ServerRead(
            max_connections=int(mc),
            reserved=tuple(slots),
            role=str(role),
            role_limit=_limit(role_limit),
            database=str(database),
            database_limit=_limit(database_limit),
            other_clients=int(others) if others not in (None, "") else None,
        )

    def error_code(self, exc: BaseException) -> str | None:
        """Return the SQLSTATE both drivers keep on their errors."""
        code = getattr(exc, "sqlstate", None)
        return code if isinstance(code, str) and code else None
