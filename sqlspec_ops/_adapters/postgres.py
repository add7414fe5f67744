"""What asyncpg and psycopg share: PostgreSQL's defaults, its connection limits and its error codes."""

from typing import Any

from sqlspec_ops._adapters.base import Adapter, ServerRead

__all__ = ("PostgresAdapter",)

# One round trip; every value is read as text (``SHOW``/``current_setting`` return text) and parsed here.
# ``current_setting(name, true)`` gives NULL instead of an error for ``reserved_connections`` before PG16.
_LIMITS_SQL = """
SELECT current_setting('max_connections'),
       current_setting('superuser_reserved_connections'),
       current_setting('reserved_connections', true),
       current_user::text,
       (SELECT rolconnlimit FROM pg_catalog.pg_roles WHERE rolname = current_user)::text,
       current_database()::text,
       (SELECT datconnlimit FROM pg_catalog.pg_database WHERE datname = current_database())::text
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

    async def read_limits(self, connection: Any) -> ServerRead:
        """Read ``max_connections``, the reserved slots and the role's and database's connection limits."""
        mc, su, reserved, role, role_limit, database, database_limit = await self.fetch_row(connection, _LIMITS_SQL)
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
        )

    def error_code(self, exc: BaseException) -> str | None:
        """Return the SQLSTATE both drivers keep on their errors."""
        code = getattr(exc, "sqlstate", None)
        return code if isinstance(code, str) and code else None
