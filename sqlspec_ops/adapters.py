"""Everything sqlspec-ops knows about one SQLSpec adapter, behind one small interface.

Adding an adapter means adding one :class:`Adapter` subclass here; the pool proxy, the metrics, the health
checks, the budget and the router only talk to this interface. Configs are recognised by their class path,
so a missing optional driver (psycopg, aiosqlite) is never imported.

Targets are parsed from the config's ``connection_config`` because SQLSpec has no public accessor for them;
the parsers return host, port and database only, never the user or the password.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = (
    "Adapter",
    "PoolSizes",
    "PoolTarget",
    "adapter_for",
    "describe_config",
    "failure_name",
    "named_configs",
)


_PSYCOPG_CLOSE_TIMEOUT = 1.0  # seconds psycopg_pool waits for its worker tasks when closing


@dataclass(frozen=True, slots=True)
class PoolTarget:
    """Where a config points: safe to show (no user, no password)."""

    adapter: str
    db_system: str
    host: str | None = None
    port: int | None = None
    database: str | None = None

    @property
    def server(self) -> str | None:
        """``host:port`` of a database server, None for embedded databases (and unsupported ones without a host)."""
        host = self.host
        if host is not None and ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        if self.db_system == "postgresql":  # libpq's defaults apply when the config leaves them out
            return f"{host or 'localhost'}:{self.port or 5432}"
        if host is None:
            return None
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def label(self) -> str:
        """``host:port/database`` (the semantic conventions' pool name when a pool has none)."""
        if self.server is None:
            return self.database or self.adapter
        return f"{self.server}/{self.database or ''}"


@dataclass(frozen=True, slots=True)
class PoolSizes:
    """A pool's size limits and whether the config set them or the driver's default applies."""

    max_size: int
    min_size: int
    max_explicit: bool
    min_explicit: bool


class Adapter:
    """Base class: what differs between drivers when observing a pool."""

    name: ClassVar[str] = "unsupported"
    db_system: ClassVar[str] = "other_sql"
    config_class: ClassVar[str] = ""
    default_max: ClassVar[int] = 10
    default_min: ClassVar[int] = 0
    max_key: ClassVar[str] = "max_size"

    def describe(self, config: Any) -> PoolTarget:
        """Return the config's target."""
        cc = dict(config.connection_config or {})
        url = cc.get("dsn") or cc.get("url") or cc.get("conninfo") or cc.get("connection_string")
        host: str | None = None
        port: int | None = None
        database: str | None = None
        if isinstance(url, str) and url:
            host, port, database = _parse_url(url) if "://" in url else _parse_conninfo(url)
        host = _first(cc.get("host"), host)
        port = _as_port(cc.get("port"), port)
        database = _first(cc.get("database") or cc.get("dbname"), database)
        return PoolTarget(adapter=self.name, db_system=self.db_system, host=host, port=port, database=database)

    def sizes(self, config: Any) -> PoolSizes:
        """Return the configured sizes, falling back to the driver's defaults."""
        cc = config.connection_config or {}
        min_raw = cc.get("min_size")
        min_size = int(min_raw) if min_raw is not None else self.default_min
        max_raw = cc.get(self.max_key)
        max_size = int(max_raw) if max_raw else self.default_max_for(min_size)
        return PoolSizes(max_size, min_size, max_explicit=bool(max_raw), min_explicit=min_raw is not None)

    def default_max_for(self, min_size: int) -> int:  # noqa: ARG002 - psycopg overrides
        """Return the driver's default max size given the min size."""
        return self.default_max

    def problems(self, config: Any) -> list[str]:  # noqa: ARG002 - overridden per adapter
        """Return misconfigurations SQLSpec accepts silently but that break the pool."""
        return []

    def read(self, pool: Any) -> tuple[int, int]:
        """Return ``(open connections, idle connections)`` of a live pool."""
        raise NotImplementedError

    async def ping(self, connection: Any) -> None:
        """Run ``SELECT 1`` on a borrowed connection."""
        raise NotImplementedError

    async def fetch_row(self, connection: Any, sql: str) -> list[Any]:
        """Run a query on a borrowed (or standalone) connection and return its first row as a list."""
        cursor = await connection.execute(sql)  # psycopg and aiosqlite: cursors, tuple or dict rows
        row = await cursor.fetchone()
        if row is None:
            return []
        return list(row.values()) if isinstance(row, Mapping) else list(row)

    def acquire_timeout_error(self, exc: BaseException) -> bool:
        """Tell whether the driver raised ``exc`` because no connection became free in time."""
        return isinstance(exc, TimeoutError)

    async def close(self, pool: Any) -> None:
        """Close a driver pool (what SQLSpec's ``close_pool`` ends up calling)."""
        await pool.close()


class AsyncpgAdapter(Adapter):
    """asyncpg's ``Pool``: public size getters; waiters and wait times need the proxy."""

    name = "asyncpg"
    db_system = "postgresql"
    config_class = "sqlspec.adapters.asyncpg.config.AsyncpgConfig"
    default_max = 10
    default_min = 10

    def read(self, pool: Any) -> tuple[int, int]:
        """Return open and idle connection counts."""
        return pool.get_size(), pool.get_idle_size()

    async def ping(self, connection: Any) -> None:
        """Run ``SELECT 1``."""
        await connection.fetchval("SELECT 1")

    async def fetch_row(self, connection: Any, sql: str) -> list[Any]:
        """Return the first row as a list (asyncpg has no cursors outside transactions)."""
        record = await connection.fetchrow(sql)
        return list(record.values()) if record is not None else []


class PsycopgAdapter(Adapter):
    """psycopg_pool's ``AsyncConnectionPool``: connections are borrowed through ``pool.connection()``."""

    name = "psycopg"
    db_system = "postgresql"
    config_class = "sqlspec.adapters.psycopg.config.PsycopgAsyncConfig"
    default_min = 4

    def default_max_for(self, min_size: int) -> int:
        """SQLSpec passes ``max_size=None``, so psycopg_pool makes max equal to min."""
        return min_size

    def read(self, pool: Any) -> tuple[int, int]:
        """Return open and idle connection counts from ``get_stats()`` (not ``pop_stats()``, which resets)."""
        stats = pool.get_stats()
        return stats.get("pool_size", 0), stats.get("pool_available", 0)

    async def ping(self, connection: Any) -> None:
        """Run ``SELECT 1``."""
        await connection.execute("SELECT 1")

    def acquire_timeout_error(self, exc: BaseException) -> bool:
        """psycopg_pool raises its own ``PoolTimeout``."""
        return isinstance(exc, TimeoutError) or type(exc).__name__ == "PoolTimeout"

    async def close(self, pool: Any) -> None:
        """Close without psycopg_pool's 5 s wait for workers stuck connecting to a server that never answers.

        The pool is closed either way (psycopg_pool only logs the stuck workers); 5 s per pool would overrun
        a shutdown's own deadline (asgi-lifespan's is 5 s, Kubernetes' grace period is shared by everything).
        """
        await pool.close(timeout=_PSYCOPG_CLOSE_TIMEOUT)


class AiosqliteAdapter(Adapter):
    """SQLSpec's own aiosqlite pool (sized by ``pool_size``)."""

    name = "aiosqlite"
    db_system = "sqlite"
    config_class = "sqlspec.adapters.aiosqlite.config.AiosqliteConfig"
    default_max = 5
    default_min = 0
    max_key = "pool_size"

    def describe(self, config: Any) -> PoolTarget:
        """Return the database file (or ``:memory:``) as the target."""
        database = (config.connection_config or {}).get("database")
        return PoolTarget(adapter=self.name, db_system=self.db_system, database=str(database or ":memory:"))

    def problems(self, config: Any) -> list[str]:
        """Flag ``max_size``: SQLSpec hands it to ``sqlite3.connect`` and every acquire then times out."""
        if "max_size" in (config.connection_config or {}):
            return [
                (
                    "AiosqliteConfig is sized by 'pool_size', not 'max_size': SQLSpec passes 'max_size' on to "
                    "sqlite3.connect(), which rejects it, so every acquire fails after connect_timeout. "
                    "Rename the key to 'pool_size'."
                )
            ]
        return []

    def read(self, pool: Any) -> tuple[int, int]:
        """Return open and idle connection counts."""
        size = pool.size()
        return size, size - pool.checked_out()

    async def ping(self, connection: Any) -> None:
        """Run ``SELECT 1``."""
        cursor = await connection.execute("SELECT 1")
        try:
            await cursor.fetchone()
        finally:
            await cursor.close()

    def acquire_timeout_error(self, exc: BaseException) -> bool:
        """SQLSpec's pool raises ``AiosqliteConnectTimeoutError`` after ``connect_timeout``."""
        return isinstance(exc, TimeoutError) or type(exc).__name__ == "AiosqliteConnectTimeoutError"


_ADAPTERS: dict[str, Adapter] = {a.config_class: a for a in (AsyncpgAdapter(), PsycopgAdapter(), AiosqliteAdapter())}


def adapter_for(config: Any) -> Adapter | None:
    """Return the adapter support for a config, or None when sqlspec-ops does not support it yet."""
    for klass in type(config).__mro__:
        adapter = _ADAPTERS.get(f"{klass.__module__}.{klass.__qualname__}")
        if adapter is not None:
            return adapter
    return None


def named_configs(configs: Any) -> list[tuple[str, Any]]:
    """Name each config the way metrics label its pool: ``bind_key``, else ``host:port/database``.

    Two configs on one target without a ``bind_key`` get a ``'`` appended so their series stay apart.

    Args:
        configs: A ``SQLSpec`` or an iterable of SQLSpec configs.

    Returns:
        ``(name, config)`` pairs, in the order SQLSpec holds them.

    Raises:
        TypeError: If ``configs`` is neither.

    """
    if hasattr(configs, "configs") and isinstance(configs.configs, Mapping):
        configs = list(configs.configs.values())
    if not isinstance(configs, Iterable):
        msg = f"expected a SQLSpec or an iterable of SQLSpec configs, got {type(configs).__name__}"
        raise TypeError(msg)
    named: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for config in configs:
        name = getattr(config, "bind_key", None) or describe_config(config).label
        while name in seen:
            name += "'"
        seen.add(name)
        named.append((name, config))
    return named


def failure_name(exc: BaseException) -> str:
    """Name a failure by class only (driver messages can carry hosts, users or row values).

    When SQLSpec wrapped a driver error, the driver's class is named too: ``ConnectionTimeoutError(
    ConnectionDoesNotExistError)`` says more than the wrapper alone.
    """
    cause = exc.__cause__
    if cause is not None and type(exc).__module__.startswith("sqlspec"):
        return f"{type(exc).__name__}({type(cause).__name__})"
    return type(exc).__name__


def describe_config(config: Any) -> PoolTarget:
    """Return a config's target, also for unsupported adapters (best effort, never raises)."""
    adapter = adapter_for(config) or Adapter()
    try:
        target = adapter.describe(config)
    except Exception:
        target = PoolTarget(adapter="unknown", db_system="other_sql")
    if adapter.name == "unsupported":
        target = PoolTarget(
            adapter=type(config).__name__,
            db_system=target.db_system,
            host=target.host,
            port=target.port,
            database=target.database,
        )
    return target


def _parse_url(url: str) -> tuple[str | None, int | None, str | None]:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    first = netloc.split(",", 1)[0]  # multi-host DSNs: report the first host
    host, _, port_text = first.rpartition(":") if first.count(":") == 1 else (first, "", "")
    if first.startswith("["):  # IPv6 literal
        host, _, port_text = first[1:].partition("]")
        port_text = port_text.lstrip(":")
    database = unquote(parts.path.lstrip("/")) or None
    # libpq also takes host, port and dbname as query parameters (Unix sockets: ?host=/run/postgresql)
    query = parse_qs(parts.query)
    host = host or query.get("host", [""])[0]
    port_text = port_text or query.get("port", [""])[0]
    database = database or query.get("dbname", [None])[0]
    return (unquote(host) or None), _as_port(port_text, None), database


def _parse_conninfo(conninfo: str) -> tuple[str | None, int | None, str | None]:
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
    return (str(host) if host else None), _as_port(values.get("port"), None), (str(dbname) if dbname else None)


def _first(value: Any, fallback: str | None) -> str | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return str(value) if value else fallback


def _as_port(value: Any, fallback: int | None) -> int | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return int(value) if value not in (None, "") else fallback
    except (TypeError, ValueError):
        return fallback


# Last, because it subclasses Adapter and the parsers above; its own module keeps the driver knowledge together.
from sqlspec_ops.adapters_asyncmy import AsyncmyAdapter  # noqa: E402

_ASYNCMY: Adapter = AsyncmyAdapter()
_ADAPTERS[_ASYNCMY.config_class] = _ASYNCMY
