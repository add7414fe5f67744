"""The example app (examples/app.py) works as documented, on PostgreSQL (asyncpg) and on SQLite (aiosqlite)."""

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from examples.app import create_app
from tests.support.asgi import response_headers, serving, websocket_session
from tests.support.postgres import PostgresServer


@pytest.fixture
def postgres_env(pg: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the example at the test server with small pools (the server is shared)."""
    monkeypatch.setenv("DATABASE_URL", pg.dsn)
    monkeypatch.delenv("ANALYTICS_DATABASE_URL", raising=False)
    monkeypatch.setenv("POOL_MIN_SIZE", "1")
    monkeypatch.setenv("POOL_MAX_SIZE", "3")
    monkeypatch.setenv("LOG_FORMAT", "json")


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the example on SQLite files in a temporary directory."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("ANALYTICS_DATABASE_URL", raising=False)
    monkeypatch.setenv("SQLITE_DIR", str(tmp_path))
    monkeypatch.setenv("LOG_FORMAT", "json")
    return tmp_path


@pytest.fixture
async def analytics_database(
    pg: PostgresServer, superuser: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """A second database on the test server, used as the example's ``analytics`` database."""
    name = f"analytics_{uuid.uuid4().hex[:12]}"
    await superuser.execute(f'CREATE DATABASE "{name}" OWNER app')
    monkeypatch.setenv("ANALYTICS_DATABASE_URL", pg.dsn.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield name
    finally:
        await superuser.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _email() -> str:
    return f"{uuid.uuid4().hex}@example.test"


async def _crud(client: httpx.AsyncClient) -> None:
    email = _email()
    created = await client.post("/users", json={"name": "Ada", "email": email})
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["name"] == "Ada"
    assert user["email"] == email
    user_id = user["id"]

    assert (await client.get(f"/users/{user_id}")).json() == user
    assert user in (await client.get("/users", params={"limit": 1000})).json()
    assert (await client.post("/users", json={"name": "Twin", "email": email})).status_code == 409

    replaced = await client.put(f"/users/{user_id}", json={"name": "Ada L.", "email": email})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "Ada L."
    other = (await client.post("/users", json={"name": "Bob", "email": _email()})).json()
    taken = await client.put(f"/users/{other['id']}", json={"name": "Bob", "email": email})
    assert taken.status_code == 409
    assert (await client.get(f"/users/{other['id']}")).json() == other  # the refused update changed nothing

    assert (await client.delete(f"/users/{user_id}")).status_code == 204
    assert (await client.get(f"/users/{user_id}")).status_code == 404
    assert (await client.delete(f"/users/{user_id}")).status_code == 404
    assert (await client.put(f"/users/{user_id}", json={"name": "x", "email": _email()})).status_code == 404


@pytest.mark.usefixtures("postgres_env")
async def test_users_crud_on_postgres() -> None:
    """On asyncpg, users CRUD answers with the right status codes and commits what it reports."""
    async with serving(create_app()) as client:
        await _crud(client)
        live = await client.get("/ops/live")
        assert live.status_code == 200
        assert (await client.get("/ping")).json()["pong"] is True


@pytest.mark.usefixtures("postgres_env")
async def test_dashboard_reads_two_databases_and_background_task_writes_audit(
    pg: PostgresServer, analytics_database: str
) -> None:
    """The background task writes its audit row into the analytics database, tagged with the request's ID."""
    request_id = f"audit-{uuid.uuid4().hex}"
    async with serving(create_app()) as client:
        created = await client.post(
            "/users", json={"name": "Eve", "email": _email()}, headers={"X-Request-ID": request_id}
        )
        assert created.status_code == 201
        assert created.headers["x-request-id"] == request_id
        dashboard = (await client.get("/dashboard")).json()
        ready = await client.get("/ops/ready")

    assert dashboard["users"] >= 1
    assert dashboard["audit_events"] == 1
    [row] = dashboard["recent_audit"]
    assert row["action"] == "user.created"
    assert row["user_id"] == created.json()["id"]
    assert row["request_id"] == request_id
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"primary:connections", "analytics:connections"}
    # The two configs really are two databases: the audit table lives only in the analytics one.
    analytics = await asyncpg.connect(pg.dsn.rsplit("/", 1)[0] + f"/{analytics_database}")
    try:
        assert await analytics.fetchval("SELECT to_regclass('public.users')") is None
        assert await analytics.fetchval("SELECT count(*) FROM audit_log WHERE request_id = $1", request_id) == 1
    finally:
        await analytics.close()


async def test_users_crud_and_files_on_sqlite(sqlite_env: Path) -> None:
    """Without DATABASE_URL the example runs on two SQLite files, CRUD and audit included."""
    request_id = "sqlite-req-1"
    async with serving(create_app()) as client:
        await _crud(client)
        created = await client.post(
            "/users", json={"name": "Sam", "email": _email()}, headers={"X-Request-ID": request_id}
        )
        dashboard = (await client.get("/dashboard")).json()
        assert (await client.get("/ops/ready")).status_code == 200
    assert created.status_code == 201
    assert set(await asyncio.to_thread(os.listdir, sqlite_env)) >= {"primary.db", "analytics.db"}
    assert dashboard["recent_audit"][0]["request_id"] == request_id
    assert dashboard["recent_audit"][0]["user_id"] == created.json()["id"]


@pytest.mark.usefixtures("postgres_env")
async def test_demo_routes() -> None:
    """/demo/fail answers 500 (with a request ID) after a failed statement; /demo/slow holds a connection."""
    async with serving(create_app()) as client:
        slow = await client.get("/demo/slow", params={"seconds": 0.05})
        assert slow.json() == {"slept": 0.05}

    async with serving(create_app(), raise_app_exceptions=False) as client:
        failed = await client.get("/demo/fail", headers={"X-Request-ID": "demo-fail-1"})
    assert failed.status_code == 500
    assert failed.headers["x-request-id"] == "demo-fail-1"


@pytest.mark.usefixtures("postgres_env")
async def test_websocket_echoes_with_a_database_read() -> None:
    """The WebSocket echoes each message with a database read and the connection's request ID."""
    async with LifespanManager(create_app()) as manager:
        sent = await websocket_session(manager.app, "/ws", ["hello", "again"], [(b"x-request-id", b"ws-example-1")])
    assert (b"x-request-id", b"ws-example-1") in response_headers(sent)
    replies = [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]
    assert [reply["echo"] for reply in replies] == ["hello", "again"]
    assert all(isinstance(reply["users"], int) for reply in replies)
    assert {reply["request_id"] for reply in replies} == {"ws-example-1"}


def test_invalid_environment_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad pool sizes and log formats fail at create_app() with a message naming the variable."""
    monkeypatch.setenv("POOL_MAX_SIZE", "lots")
    with pytest.raises(ValueError, match="POOL_MAX_SIZE must be an integer"):
        create_app()
    monkeypatch.setenv("POOL_MAX_SIZE", "2")
    monkeypatch.setenv("POOL_MIN_SIZE", "3")
    with pytest.raises(ValueError, match="POOL_MIN_SIZE <= POOL_MAX_SIZE"):
        create_app()
    monkeypatch.delenv("POOL_MIN_SIZE")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="LOG_FORMAT must be"):
        create_app()
