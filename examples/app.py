"""The app from SQLSpec's FastAPI guide, for real, instrumented with one ``SQLSpecOps(spec).instrument(app)``.

Run it on embedded SQLite (no server needed)::

    python examples/app.py

or on PostgreSQL through asyncpg, with several workers::

    DATABASE_URL=postgresql://app:secret@127.0.0.1:5432/appdb uvicorn examples.app:app --workers 4

or on MySQL/MariaDB through asyncmy (``pip install 'sqlspec-ops[asyncmy]'``)::

    DATABASE_URL=mysql://app:secret@127.0.0.1:3306/appdb uvicorn examples.app:app --workers 4

What it shows: users CRUD with explicit ``begin/commit/rollback`` through a dependency around
``spec.provide_session(config)``; ``/dashboard`` reading two databases (bind keys ``primary`` and
``analytics``); a background task that opens its own session to write an audit row; a WebSocket at ``/ws``;
``/ping`` (no database). ``/demo/slow``, ``/demo/hold``, ``/demo/transaction``, ``/demo/block`` and
``/demo/fail`` are demo routes for dashboards and load tests (a statement that holds a connection, a connection
held while nothing runs on it, a transaction left open, a blocked event loop, a statement that fails).

Environment:
    DATABASE_URL: ``postgresql://`` (asyncpg) or ``mysql://`` (asyncmy) URL of the ``primary`` database; unset:
        SQLite files in ``SQLITE_DIR``.
    ANALYTICS_DATABASE_URL: URL of the ``analytics`` database, same kind (default: ``DATABASE_URL``).
    SQLITE_DIR: where the SQLite files live (default ``examples/.data``, else a temporary directory).
    POOL_MIN_SIZE, POOL_MAX_SIZE: pool sizes of each database (default 1 and 10).
    ACQUIRE_TIMEOUT: seconds a pool acquire may wait before failing (default: wait).
    LEAK_THRESHOLD: seconds a connection may be held before it is reported as a possible leak (default: off).
    SERVER_STATS_INTERVAL: seconds between reads of the database's own view of the app (default 15).
    HOST, PORT: where ``python examples/app.py`` listens (default 127.0.0.1:8000).
    LOG_FORMAT: ``json``, ``console`` or ``off`` (leave logging alone); default JSON unless stdout is a TTY.
    LOG_LEVEL: root log level (default INFO).
    PRINT_SQL: ``1`` logs every statement through SQLSpec's ``sqlspec.sql`` logger (without parameters).
    SQLSPEC_OPS_TOKEN: the token required by ``/ops/metrics``, ``/ops/pools`` and the status page ``/ops/``.
"""

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.driver import AsyncDriverAdapterBase
from sqlspec.exceptions import UniqueViolationError
from sqlspec.observability import ObservabilityConfig

from sqlspec_ops import SQLSpecOps, configure_logging, get_request_id

__all__ = ("Databases", "User", "UserIn", "app", "create_app", "main", "spec")

Session = AsyncDriverAdapterBase

_SCHEMA_LOCK = 72_707  # any constant: serialises CREATE TABLE IF NOT EXISTS across workers on PostgreSQL
_POSTGRES_SCHEMA = {
    "primary": "CREATE TABLE IF NOT EXISTS users (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "name TEXT NOT NULL, email TEXT NOT NULL UNIQUE)",
    "analytics": "CREATE TABLE IF NOT EXISTS audit_log (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "action TEXT NOT NULL, user_id BIGINT, request_id TEXT, created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
}
_MYSQL_SCHEMA = {  # TEXT cannot be UNIQUE in MySQL: VARCHAR with the lengths UserIn allows
    "primary": "CREATE TABLE IF NOT EXISTS users (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
    "name VARCHAR(200) NOT NULL, email VARCHAR(320) NOT NULL UNIQUE)",
    "analytics": "CREATE TABLE IF NOT EXISTS audit_log (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
    "action VARCHAR(100) NOT NULL, user_id BIGINT, request_id VARCHAR(128), "
    "created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
}
_MYSQL_SCHEMES = ("mysql://", "mariadb://")
_SQLITE_SCHEMA = {
    "primary": "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, "
    "name TEXT NOT NULL, email TEXT NOT NULL UNIQUE)",
    "analytics": "CREATE TABLE IF NOT EXISTS audit_log (id INTEGER PRIMARY KEY, action TEXT NOT NULL, "
    "user_id INTEGER, request_id TEXT, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
}

# Both kinds of logger end up in one pipeline (configure_logging): stdlib for the audit task, structlog elsewhere.
audit_logger = logging.getLogger("examples.app.audit")
log = structlog.get_logger("examples.app")


class UserIn(BaseModel):
    """What a client sends to create or replace a user."""

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320)


class User(UserIn):
    """A stored user."""

    id: int


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        msg = f"{name} must be an integer, got {raw!r}"
        raise ValueError(msg) from None


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw)
    except ValueError:
        msg = f"{name} must be a number of seconds, got {raw!r}"
        raise ValueError(msg) from None


def _sqlite_dir() -> Path:
    configured = os.environ.get("SQLITE_DIR")
    candidates = [Path(configured)] if configured else [Path(__file__).resolve().parent / ".data"]
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            if configured:
                raise
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    return Path(tempfile.mkdtemp(prefix="sqlspec-ops-example-"))


def _configs(min_size: int, max_size: int) -> tuple[Any, Any, str]:
    """Return the ``primary`` and ``analytics`` configs and where they point (no password)."""
    primary_url = os.environ.get("DATABASE_URL")
    if primary_url and primary_url.startswith(_MYSQL_SCHEMES):
        try:
            from sqlspec.adapters.asyncmy import AsyncmyConfig  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            msg = "a mysql:// DATABASE_URL needs asyncmy: pip install 'sqlspec-ops[asyncmy]'"
            raise RuntimeError(msg) from exc
        analytics_url = os.environ.get("ANALYTICS_DATABASE_URL") or primary_url
        sizes = {"minsize": min_size, "maxsize": max_size}  # asyncmy's names for the pool sizes
        parts = urlsplit(primary_url)
        return (
            AsyncmyConfig(connection_config={"dsn": primary_url, **sizes}, bind_key="primary"),
            AsyncmyConfig(connection_config={"dsn": analytics_url, **sizes}, bind_key="analytics"),
            f"MySQL at {parts.hostname}:{parts.port or 3306}{parts.path}",
        )
    if primary_url:
        analytics_url = os.environ.get("ANALYTICS_DATABASE_URL") or primary_url
        sizes = {"min_size": min_size, "max_size": max_size}
        parts = urlsplit(primary_url)
        return (
            AsyncpgConfig(connection_config={"dsn": primary_url, **sizes}, bind_key="primary"),
            AsyncpgConfig(connection_config={"dsn": analytics_url, **sizes}, bind_key="analytics"),
            f"PostgreSQL at {parts.hostname}:{parts.port or 5432}{parts.path}",
        )
    try:
        from sqlspec.adapters.aiosqlite import AiosqliteConfig  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        msg = "DATABASE_URL is not set and aiosqlite is missing: pip install 'sqlspec-ops[aiosqlite]'"
        raise RuntimeError(msg) from exc
    directory = _sqlite_dir()
    # aiosqlite's size key is pool_size: SQLSpec would pass max_size through to sqlite3.connect and break.
    sizes = {"min_size": min_size, "pool_size": max_size}
    return (
        AiosqliteConfig(connection_config={"database": str(directory / "primary.db"), **sizes}, bind_key="primary"),
        AiosqliteConfig(connection_config={"database": str(directory / "analytics.db"), **sizes}, bind_key="analytics"),
        f"SQLite in {directory}",
    )


class Databases:
    """The app's ``SQLSpec``, its two configs and the session dependencies built on them."""

    def __init__(self, spec: SQLSpec, primary: Any, analytics: Any) -> None:
        self.spec = spec
        self.primary = primary
        self.analytics = analytics
        self.postgres = isinstance(primary, AsyncpgConfig)
        self.mysql = type(primary).__name__ == "AsyncmyConfig"

    def session(self, config: Any) -> Callable[[], AsyncIterator[Session]]:
        """Return a dependency yielding a session of ``config`` (the pattern of SQLSpec's FastAPI guide)."""

        async def provide_session() -> AsyncIterator[Session]:
            async with self.spec.provide_session(config) as db:
                yield db

        return provide_session

    @asynccontextmanager
    async def transaction_of(self, config: Any) -> AsyncIterator[Session]:
        """Open a session of ``config`` in a transaction: commit on success, roll back on any exception."""
        async with self.spec.provide_session(config) as db:
            await db.begin()
            try:
                yield db
            except BaseException:
                await db.rollback()
                raise
            await db.commit()

    async def transaction(self) -> AsyncIterator[Session]:
        """Dependency: a primary session in a transaction (rolled back when the route raises)."""
        async with self.transaction_of(self.primary) as db:
            yield db

    async def create_tables(self) -> None:
        """Create the tables if they do not exist (safe with several workers starting at once)."""
        schema = _POSTGRES_SCHEMA if self.postgres else _MYSQL_SCHEMA if self.mysql else _SQLITE_SCHEMA
        for config in (self.primary, self.analytics):
            async with self.transaction_of(config) as db:
                if self.postgres:
                    await db.execute("SELECT pg_advisory_xact_lock(:key)", {"key": _SCHEMA_LOCK})
                await db.execute(schema[config.bind_key])

    async def record_audit(self, action: str, user_id: int) -> None:
        """Background task: its own session (the request's is closed by now), still the request's ID."""
        # An explicit transaction: aiosqlite does not autocommit, the row would be rolled back on release.
        async with self.transaction_of(self.analytics) as db:
            await db.execute(
                "INSERT INTO audit_log (action, user_id, request_id) VALUES (:action, :user_id, :request_id)",
                {"action": action, "user_id": user_id, "request_id": get_request_id()},
            )
        audit_logger.info("audit %s for user %s written", action, user_id)


async def _ensure_email_free(db: Session, email: str, user_id: int) -> None:
    taken = await db.select_value_or_none(
        "SELECT id FROM users WHERE email = :email AND id <> :id", {"email": email, "id": user_id}
    )
    if taken is not None:
        raise HTTPException(status_code=409, detail="a user with this email exists")


def _users_router(dbs: Databases) -> APIRouter:  # noqa: C901 - counts the five route closures as one
    router = APIRouter(prefix="/users", tags=["users"])
    primary_session = Annotated[Session, Depends(dbs.session(dbs.primary))]
    transaction = Annotated[Session, Depends(dbs.transaction)]

    @router.get("")
    async def list_users(db: primary_session, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[User]:
        rows = await db.select("SELECT id, name, email FROM users ORDER BY id LIMIT :limit", {"limit": limit})
        return [User(**row) for row in rows]

    @router.post("", status_code=201)
    async def create_user(user: UserIn, db: transaction, background: BackgroundTasks) -> User:
        if dbs.mysql:  # no RETURNING in MySQL; a taken email fails with error 1062, counted in the metrics
            try:
                result = await db.execute("INSERT INTO users (name, email) VALUES (:name, :email)", user.model_dump())
            except UniqueViolationError:
                raise HTTPException(status_code=409, detail="a user with this email exists") from None
            created = User(id=int(result.last_inserted_id or 0), **user.model_dump())
            log.info("user.created", user_id=created.id)
            background.add_task(dbs.record_audit, "user.created", created.id)
            return created
        # ON CONFLICT instead of catching the unique violation: SQLSpec 0.69's aiosqlite driver can crash the
        # process (segfault) after a failed statement that had named parameters.
        row = await db.select_one_or_none(
            "INSERT INTO users (name, email) VALUES (:name, :email) ON CONFLICT (email) DO NOTHING "
            "RETURNING id, name, email",
            user.model_dump(),
        )
        if row is None:
            raise HTTPException(status_code=409, detail="a user with this email exists")
        created = User(**row)
        log.info("user.created", user_id=created.id)
        background.add_task(dbs.record_audit, "user.created", created.id)
        return created

    @router.get("/{user_id}")
    async def get_user(user_id: int, db: primary_session) -> User:
        row = await db.select_one_or_none("SELECT id, name, email FROM users WHERE id = :id", {"id": user_id})
        log.info("user.read", user_id=user_id, found=row is not None)
        if row is None:
            raise HTTPException(status_code=404, detail="no such user")
        return User(**row)

    @router.put("/{user_id}")
    async def replace_user(user_id: int, user: UserIn, db: transaction, background: BackgroundTasks) -> User:
        await _ensure_email_free(db, user.email, user_id)
        values = {"id": user_id, **user.model_dump()}
        try:
            if dbs.mysql:  # no UPDATE ... RETURNING; and MySQL counts changed rows, not matched ones
                await db.execute("UPDATE users SET name = :name, email = :email WHERE id = :id", values)
                row = await db.select_one_or_none("SELECT id, name, email FROM users WHERE id = :id", {"id": user_id})
            else:
                row = await db.select_one_or_none(
                    "UPDATE users SET name = :name, email = :email WHERE id = :id RETURNING id, name, email", values
                )
        except UniqueViolationError:  # a concurrent request took the email after the check above
            raise HTTPException(status_code=409, detail="a user with this email exists") from None
        if row is None:
            raise HTTPException(status_code=404, detail="no such user")
        log.info("user.updated", user_id=user_id)
        background.add_task(dbs.record_audit, "user.updated", user_id)
        return User(**row)

    @router.delete("/{user_id}", status_code=204)
    async def delete_user(user_id: int, db: transaction, background: BackgroundTasks) -> Response:
        result = await db.execute("DELETE FROM users WHERE id = :id", {"id": user_id})
        if not result.rows_affected:
            raise HTTPException(status_code=404, detail="no such user")
        log.info("user.deleted", user_id=user_id)
        background.add_task(dbs.record_audit, "user.deleted", user_id)
        return Response(status_code=204)

    return router


def _other_router(dbs: Databases) -> APIRouter:
    router = APIRouter()
    primary_session = Annotated[Session, Depends(dbs.session(dbs.primary))]
    analytics_session = Annotated[Session, Depends(dbs.session(dbs.analytics))]

    @router.get("/ping")
    async def ping() -> dict[str, Any]:
        return {"pong": True, "request_id": get_request_id()}

    @router.get("/dashboard")
    async def dashboard(db: primary_session, analytics_db: analytics_session) -> dict[str, Any]:
        users = await db.select_value("SELECT count(*) FROM users")
        events = await analytics_db.select_value("SELECT count(*) FROM audit_log")
        recent = await analytics_db.select(
            "SELECT action, user_id, request_id, created_at FROM audit_log ORDER BY id DESC LIMIT 10"
        )
        return {"users": users, "audit_events": events, "recent_audit": recent}

    @router.websocket("/ws")
    async def websocket(socket: WebSocket) -> None:
        """Echo each text message with the user count, read through a session per message."""
        await socket.accept()
        try:
            while True:
                text = await socket.receive_text()
                async with dbs.spec.provide_session(dbs.primary) as db:
                    users = await db.select_value("SELECT count(*) FROM users")
                log.info("ws.message", users=users)
                await socket.send_json({"echo": text, "users": users, "request_id": get_request_id()})
        except WebSocketDisconnect:
            log.info("ws.closed")

    return router


def _demo_router(dbs: Databases) -> APIRouter:
    """Routes that make every dashboard panel and alert show something under load."""
    router = APIRouter(prefix="/demo")
    primary_session = Annotated[Session, Depends(dbs.session(dbs.primary))]

    @router.get("/slow")
    async def demo_slow(db: primary_session, seconds: Annotated[float, Query(ge=0, le=10)] = 0.25) -> dict[str, Any]:
        """Demo: hold a primary connection for ``seconds`` (a slow statement on PostgreSQL)."""
        if dbs.postgres:
            await db.execute("SELECT pg_sleep(:seconds)", {"seconds": seconds})
        elif dbs.mysql:
            await db.execute("SELECT SLEEP(:seconds)", {"seconds": seconds})
        else:  # SQLite has no sleep function: hold the connection instead
            await db.select_value("SELECT 1")
            await asyncio.sleep(seconds)
        return {"slept": seconds}

    @router.get("/hold")
    async def demo_hold(db: primary_session, seconds: Annotated[float, Query(ge=0, le=10)] = 1.0) -> dict[str, Any]:
        """Demo: keep the connection across a slow call that is not the database's (held but idle; a leak)."""
        await db.select_value("SELECT 1")
        await asyncio.sleep(seconds)  # an external API call, say, while the session stays open
        return {"held": seconds}

    @router.get("/transaction")
    async def demo_transaction(
        db: primary_session, seconds: Annotated[float, Query(ge=0, le=10)] = 1.0
    ) -> dict[str, Any]:
        """Demo: an open transaction that waits (idle in transaction; a second one waits for its row lock)."""
        await db.begin()
        try:
            await db.execute("UPDATE users SET name = name WHERE id = (SELECT min(id) FROM users)")
            await asyncio.sleep(seconds)
        finally:
            await db.rollback()
        return {"held": seconds}

    @router.get("/block")
    async def demo_block(seconds: Annotated[float, Query(ge=0, le=2)] = 0.3) -> dict[str, Any]:
        """Demo: block the event loop with a synchronous call (loop lag, which is not a slow database)."""
        time.sleep(seconds)  # noqa: ASYNC251 - the blocking call is the point of this route
        return {"blocked": seconds}

    @router.get("/fail")
    async def demo_fail(db: primary_session) -> dict[str, Any]:
        """Demo: a statement that fails (unknown table), left unhandled so the client gets a 500."""
        return {"count": await db.select_value("SELECT count(*) FROM demo_missing_table")}

    return router


def create_app() -> FastAPI:
    """Build the example app, its two databases and its ops endpoints from the environment.

    Returns:
        The instrumented app; ``app.state.sqlspec_ops.spec`` is its ``SQLSpec``.

    Raises:
        ValueError: On an invalid environment variable.

    """
    min_size, max_size = _env_int("POOL_MIN_SIZE", 1), _env_int("POOL_MAX_SIZE", 10)
    if not 0 <= min_size <= max_size or max_size < 1:
        msg = f"need 0 <= POOL_MIN_SIZE <= POOL_MAX_SIZE and POOL_MAX_SIZE >= 1, got {min_size} and {max_size}"
        raise ValueError(msg)
    log_format, log_level = _log_settings()
    print_sql = os.environ.get("PRINT_SQL", "").strip().lower() in {"1", "true", "yes", "on"}

    spec = SQLSpec(observability_config=ObservabilityConfig(print_sql=True) if print_sql else None)
    primary, analytics, database = _configs(min_size, max_size)
    dbs = Databases(spec, spec.add_config(primary), spec.add_config(analytics))

    # Logging is set up here, not in the lifespan: SQLSpecOps' startup (budget and pool warnings) runs first.
    _configure_logs(log_format, log_level)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(15):
                await dbs.create_tables()
        except Exception as exc:
            # A database that is down must not stop the app: /ops/ready reports it until it is back.
            log.warning("schema.create_failed", error=type(exc).__name__)
        try:
            yield
        finally:
            await spec.close_all_pools()

    app = FastAPI(title="sqlspec-ops example", lifespan=lifespan)
    app.state.database = database
    app.include_router(_users_router(dbs))
    app.include_router(_other_router(dbs))
    app.include_router(_demo_router(dbs))
    stats_interval = _env_float("SERVER_STATS_INTERVAL")
    return SQLSpecOps(
        spec,
        acquire_timeout=_env_float("ACQUIRE_TIMEOUT"),
        leak_threshold=_env_float("LEAK_THRESHOLD"),
        server_stats_interval=15.0 if stats_interval is None else stats_interval,
    ).instrument(app)


def _log_settings() -> tuple[str, str]:
    log_format = os.environ.get("LOG_FORMAT", "").strip().lower()
    if log_format not in {"", "json", "console", "off"}:
        msg = f"LOG_FORMAT must be json, console or off, got {log_format!r}"
        raise ValueError(msg)
    return log_format, os.environ.get("LOG_LEVEL", "INFO").upper()


def _configure_logs(log_format: str, level: str) -> None:
    if log_format != "off":
        configure_logging(json=log_format == "json" if log_format else None, level=level)


app = create_app()
spec: SQLSpec = app.state.sqlspec_ops.spec


def main() -> None:
    """Serve the app with uvicorn after printing its URLs."""
    import uvicorn  # noqa: PLC0415 - only the script needs the server

    host = os.environ.get("HOST", "127.0.0.1")
    port = _env_int("PORT", 8000)
    base = f"http://{host}:{port}"
    ops = f"{base}{app.state.sqlspec_ops.prefix}"
    print(f"sqlspec-ops example app ({app.state.database})", flush=True)
    print(f"  app:     {base}/users  {base}/dashboard  ws://{host}:{port}/ws", flush=True)
    print(f"  live:    {ops}/live", flush=True)
    print(f"  ready:   {ops}/ready", flush=True)
    print(f"  metrics: {ops}/metrics", flush=True)
    print(f"  pools:   {ops}/pools", flush=True)
    # uvicorn's own log config would take its loggers out of the app's pipeline: log_config=None keeps them in.
    uvicorn.run(app, host=host, port=port, log_config=None)


if __name__ == "__main__":
    main()
