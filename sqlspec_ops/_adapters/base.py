"""What sqlspec-ops needs to know about one SQLSpec adapter, behind one small interface.

Each supported driver is one module of this package: an :class:`Adapter` subclass (naming, sizes, counts, pings,
server limits, error codes) and the pool-proxy class with that driver's borrow API. Nothing outside this package
names a driver. Configs are recognised by their class path (see ``registry``), so a missing optional driver is
never imported.

Targets are parsed from the config's ``connection_config`` because SQLSpec has no public accessor for them; the
parsers return host, port and database only, never the user or the password.
"""

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from sqlspec_ops._adapters._dsn import as_port, first, parse_conninfo, parse_url

__all__ = ("Adapter", "PoolCounts", "PoolSizes", "PoolTarget", "ServerRead", "failure_name")

SizeSource = Literal["config", "driver default"]


@dataclass(frozen=True, slots=True)
class PoolTarget:
    """Where a config points: safe to show (no user, no password)."""

    adapter: str
    db_system: str
    host: str | None = None
    port: int | None = None
    database: str | None = None
    default_host: str | None = None
    default_port: int | None = None

    @property
    def address(self) -> str | None:
        """The server's host as the client resolves it (the driver's default host when the config has none)."""
        return self.host or self.default_host

    @property
    def port_or_default(self) -> int | None:
        """The server's port (the driver's default port when the config has none)."""
        return self.port or self.default_port

    @property
    def server(self) -> str | None:
        """``host:port`` of a database server, None for embedded databases (and unsupported ones without a host)."""
        host = self.address
        if host is None:
            return None
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        port = self.port_or_default
        return host if port is None else f"{host}:{port}"

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

    def source(self, which: Literal["max", "min"]) -> SizeSource:
        """Say where ``max_size`` or ``min_size`` came from."""
        explicit = self.max_explicit if which == "max" else self.min_explicit
        return "config" if explicit else "driver default"


@dataclass(frozen=True, slots=True)
class PoolCounts:
    """Connections a driver pool holds: open in total, and idle (ready to be handed out)."""

    open: int
    idle: int


@dataclass(frozen=True, slots=True)
class ServerRead:
    """What one connection learned about its server's connection limits."""

    max_connections: int
    reserved: tuple[tuple[str, int], ...] = ()
    """Slots subtracted from ``max_connections`` for everyone but superusers: (setting name, value)."""
    role: str | None = None
    role_limit: int | None = None
    database: str | None = None
    database_limit: int | None = None
    note: str | None = None
    """Anything the budget's explanation must add (how a server's own reserve is counted)."""
    other_clients: int | None = None
    """Connections of other clients the server showed (not this app's ``application_name``); None: not known."""


class Adapter:
    """Base class: what differs between drivers when observing a pool. Subclasses fill in the class variables."""

    name: ClassVar[str] = "unsupported"
    db_system: ClassVar[str] = "other_sql"
    config_class: ClassVar[str] = ""
    default_host: ClassVar[str | None] = None
    default_port: ClassVar[int | None] = None
    default_max: ClassVar[int] = 10
    default_min: ClassVar[int] = 0
    max_key: ClassVar[str] = "max_size"
    min_key: ClassVar[str] = "min_size"
    # The pool proxy class with this driver's borrow API (``acquire``/``release``, ``connection()``...).
    proxy_class: ClassVar[Any] = None
    # The driver's packages: their frames are trimmed from the acquiring stack of a leak report.
    library_packages: ClassVar[frozenset[str]] = frozenset()
    # Whether a readiness ping that waits on an empty pool tries one direct connection to name the cause: for
    # drivers whose pool only times out (and retries in the background) instead of raising the connect error.
    probes_connect: ClassVar[bool] = False
    # Whether ``counts().open`` also counts connections the pool is still making (or retrying): then
    # open - idle - handed out is shown as ``opening`` in /ops/pools.
    counts_opening: ClassVar[bool] = False
    # Whether the adapter can time statements on the driver's own extension point (then no SQLSpec lifecycle
    # hook is registered for its configs, and SQLSpec stays on its idle execution path).
    times_statements: ClassVar[bool] = False

    def time_statements(self, config: Any) -> bool:  # noqa: ARG002 - per adapter
        """Make the driver's connections time statements (into the telemetry the pool proxy arms them with).

        Called before the driver's pool exists. Returns False when the adapter cannot (SQLSpec's hooks then do it).
        """
        return False

    def describe(self, config: Any) -> PoolTarget:
        """Return the config's target."""
        cc = dict(config.connection_config or {})
        url = cc.get("dsn") or cc.get("url") or cc.get("conninfo") or cc.get("connection_string")
        host: str | None = None
        port: int | None = None
        database: str | None = None
        if isinstance(url, str) and url:
            host, port, database = parse_url(url) if "://" in url else parse_conninfo(url)
        return PoolTarget(
            adapter=self.name,
            db_system=self.db_system,
            host=first(cc.get("host"), host),
            port=as_port(cc.get("port"), port),
            database=first(cc.get("database") or cc.get("dbname") or cc.get("db"), database),
            default_host=self.default_host,
            default_port=self.default_port,
        )

    def sizes(self, config: Any) -> PoolSizes:
        """Return the configured sizes, falling back to the driver's defaults."""
        cc = config.connection_config or {}
        min_raw = cc.get(self.min_key)
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

    def counts(self, pool: Any) -> PoolCounts:
        """Return the open and idle connections of a live driver pool."""
        raise NotImplementedError

    async def ping(self, connection: Any) -> None:
        """Run ``SELECT 1`` on a borrowed connection."""
        raise NotImplementedError

    async def fetch_row(self, connection: Any, sql: str) -> list[Any]:
        """Run a query on a borrowed (or standalone) connection and return its first row as a list."""
        cursor = await connection.execute(sql)  # DB-API style drivers: cursors, tuple or dict rows
        row = await cursor.fetchone()
        if row is None:
            return []
        return list(row.values()) if isinstance(row, Mapping) else list(row)

    async def read_limits(self, connection: Any) -> ServerRead:
        """Read the server's connection limits over a borrowed (or standalone) connection."""
        msg = f"sqlspec-ops cannot read connection limits from {self.name} servers"
        raise NotImplementedError(msg)

    async def close_connection(self, connection: Any) -> None:
        """Close a standalone connection (the budget check opens one when no pool is open)."""
        await connection.close()

    async def connect_failure(self, config: Any) -> str | None:
        """Open one connection of the config's own (no pool slot) and close it; name why it failed (None: it worked).

        Only the error's class is returned (see :meth:`connect_failure_name`), never its message.
        """
        try:
            connection = await config.create_connection()
        except Exception as exc:
            return self.connect_failure_name(exc)
        with contextlib.suppress(Exception):  # it connected, which is all this call asks
            await self.close_connection(connection)
        return None

    def connect_failure_name(self, exc: BaseException) -> str:
        """Name a failed connection attempt (drivers whose errors say little override this)."""
        return failure_name(exc)

    def error_code(self, exc: BaseException) -> str | None:  # noqa: ARG002 - overridden per adapter
        """Return the database's own code for a driver error (SQLSTATE, MySQL error number...), if it has one."""
        return None

    def transaction_state(self, connection: Any) -> bool | None:  # noqa: ARG002 - overridden per adapter
        """Tell whether a borrowed connection has a transaction open, from the driver's own state (no I/O).

        Returns:
            None when the driver does not say.

        """
        return None

    # Whether ``server_view`` is implemented: the sampler asks the server about its clients only then.
    has_server_view: ClassVar[bool] = False

    def application_name(self, config: Any) -> str | None:  # noqa: ARG002 - overridden per adapter
        """Return the ``application_name`` the config's connections announce (None: the driver has none)."""
        return None

    def apply_application_name(self, config: Any, name: str) -> str | None:  # noqa: ARG002 - overridden
        """Make the config's connections announce ``name`` unless the config names them already (no I/O).

        Returns:
            The name the connections will announce (the config's own wins), None when the driver has none.

        """
        return None

    def time_connects(self, config: Any, observe: Callable[[float], None]) -> bool:  # noqa: ARG002 - overridden
        """Have the driver's pool report how long each new connection took to open, through its own hooks.

        Args:
            config: The SQLSpec config (changed before its pool opens; no I/O).
            observe: Called with the seconds each connect took.

        Returns:
            Whether the driver offers such a hook (False: ``db_client_connection_create_time_seconds`` stays empty).

        """
        return False

    def borrow(self, pool: Any, timeout: float) -> Any:
        """Return an async context manager borrowing one connection from the driver's own pool within ``timeout``."""
        msg = f"sqlspec-ops cannot borrow from {self.name} pools directly"
        raise NotImplementedError(msg)

    async def server_view(
        self,
        connection: Any,
        application_name: str | None,
        *,
        pooled: bool = True,
    ) -> dict[str, Any]:
        """Return what the server sees of this app and of other clients (see ``SPEC.md``, the server's view)."""
        msg = f"sqlspec-ops cannot read the server's view from {self.name} servers"
        raise NotImplementedError(msg)

    def acquire_timeout_error(self, exc: BaseException) -> bool:
        """Tell whether the driver raised ``exc`` because no connection became free in time."""
        return isinstance(exc, TimeoutError)

    async def close(self, pool: Any) -> None:
        """Close a driver pool (what SQLSpec's ``close_pool`` ends up calling)."""
        await pool.close()


def failure_name(exc: BaseException) -> str:
    """Name a failure by class only (driver messages can carry hosts, users or row values).

    When SQLSpec wrapped a driver error, the driver's class is named too: ``ConnectionTimeoutError(
    ConnectionDoesNotExistError)`` says more than the wrapper alone.
    """
    cause = exc.__cause__
    if cause is not None and type(exc).__module__.startswith("sqlspec"):
        return f"{type(exc).__name__}({type(cause).__name__})"
    return type(exc).__name__


# SQLSpec's mapped exceptions say "PostgreSQL database error [22012]: ..." when the driver's error is gone.
_CODE_PREFIX = re.compile(r"^[\w ]{0,40}?error \[([0-9A-Z]{4,5})\]")


def error_details(adapter: Adapter | None, exc: BaseException) -> tuple[str, str | None]:
    """Return ``(error.type, db.response.status_code)`` for a failed statement.

    Args:
        adapter: The config's adapter (knows where its driver keeps the error code).
        exc: What SQLSpec's ``on_error`` hook received (usually a ``sqlspec.exceptions`` error wrapping the
            driver's), or the cancellation that cut the statement off.

    Returns:
        The status code is the database's own code found on the exception or on the driver error it wraps;
        ``error.type`` is that code when known, else the class of the most specific exception. Both have a
        bounded set of values, so they are safe as metric labels; the exception's message (which can quote row
        values) is never used beyond SQLSpec's ``[code]`` prefix.

    """
    code: str | None = None
    innermost = exc
    current: BaseException | None = exc
    for _ in range(5):
        if current is None:
            break
        innermost = current
        candidate = adapter.error_code(current) if adapter is not None else None
        if candidate:
            code = candidate
            break
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    if code is None:
        match = _CODE_PREFIX.match(str(exc))
        code = match.group(1) if match else None
    if code is not None:
        return code, code
    klass = type(innermost)
    name = (
        klass.__qualname__
        if klass.__module__ in {"builtins", "asyncio.exceptions"}
        else f"{klass.__module__}.{klass.__qualname__}"
    )
    return name, None
