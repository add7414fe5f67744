"""The database's own view of this app (pg_stat_activity), against a real PostgreSQL through asyncpg and psycopg.

Each test names its connections with a fresh ``application_name`` and compares what sqlspec-ops publishes in
``/ops/pools`` ``server`` and in the ``sqlspec_ops_server_*`` gauges with what the test reads from
``pg_stat_activity`` itself over a superuser connection.
"""

import asyncio
import logging
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.adapters.psycopg import PsycopgAsyncConfig

from sqlspec_ops import SQLSpecOps
from sqlspec_ops._server_view import default_application_name
from tests.support.asgi import serving
from tests.support.paths import ROOT
from tests.support.postgres import PostgresServer
from tests.support.processes import clean_env
from tests.support.statements import create_table
from tests.support.waiting import eventually

POOL = "main"
INTERVAL = 0.2


def make_spec(adapter: str, dsn: str, conninfo: str, *, max_size: int = 3) -> tuple[SQLSpec, Any]:
    """Return a SQLSpec with one pool named ``main`` (no application_name of its own)."""
    spec = SQLSpec()
    if adapter == "asyncpg":
        config: Any = AsyncpgConfig(connection_config={"dsn": dsn, "min_size": 2, "max_size": max_size}, bind_key=POOL)
    else:
        config = PsycopgAsyncConfig(
            connection_config={"conninfo": conninfo, "min_size": 2, "max_size": max_size}, bind_key=POOL
        )
    return spec, spec.add_config(config)


async def server_of(client: Any) -> dict[str, Any]:
    """Return the ``server`` entry of pool ``main`` (empty until the first sample)."""
    body = (await client.get("/ops/pools")).json()
    (entry,) = [p for p in body["pools"] if p["name"] == POOL]
    server: dict[str, Any] = entry.get("server") or {}
    return server


async def activity(superuser: asyncpg.Connection, name: str) -> list[asyncpg.Record]:
    """Read this app's backends from pg_stat_activity independently."""
    rows: list[asyncpg.Record] = await superuser.fetch(
        "SELECT state, extract(epoch FROM now() - xact_start)::float8 AS age, wait_event_type "
        "FROM pg_stat_activity WHERE application_name = $1",
        name,
    )
    return rows


def gauge(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """Return one sample of a server gauge of pool ``main``."""
    return registry.get_sample_value(name, {"db_client_connection_pool_name": POOL, **labels})


@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_idle_in_transaction_and_oldest_transaction_match_pg_stat_activity(
    adapter: str, pg: PostgresServer, registry: CollectorRegistry, superuser: asyncpg.Connection
) -> None:
    """A request sleeping inside a transaction after an UPDATE shows as idle in transaction with its age."""
    table = await create_table(pg)
    name = f"view-{uuid.uuid4().hex[:8]}"
    spec, config = make_spec(adapter, pg.dsn, pg.conninfo())
    app = FastAPI()
    done = asyncio.Event()

    @app.post("/orders/{order_id}")
    async def update(order_id: int) -> None:
        async with spec.provide_session(config) as session:
            await session.begin()
            await session.execute(f"UPDATE {table} SET qty = qty WHERE id = 1")
            await done.wait()
            await session.rollback()

    SQLSpecOps(spec, registry=registry, application_name=name, server_stats_interval=INTERVAL).instrument(app)
    async with serving(app) as client:
        request = asyncio.create_task(client.post("/orders/1"))
        await asyncio.sleep(1.0)

        async def aged() -> bool:
            view = await server_of(client)
            return view.get("idle_in_transaction", 0) >= 1 and (view.get("oldest_transaction_s") or 0) >= 1.0

        await eventually(aged, timeout=5, what="an idle-in-transaction backend at least 1 s old")
        view = await server_of(client)
        rows = await activity(superuser, name)
        independent = [r for r in rows if r["state"] == "idle in transaction"]
        assert len(independent) == view["idle_in_transaction"] == 1
        assert view["oldest_transaction_s"] <= independent[0]["age"]  # sampled earlier than the test's read
        assert view["this_app"].get("idle in transaction") == 1
        assert sum(view["this_app"].values()) == len(rows)
        assert view["waiting_on_lock"] == 0
        assert "error" not in view
        assert view["application_name"] == name
        assert gauge(registry, "sqlspec_ops_server_connections", state="idle in transaction") == 1
        assert (gauge(registry, "sqlspec_ops_server_oldest_transaction_seconds") or 0) >= 1.0
        holders = (await client.get("/ops/pools")).json()["pools"][0]["holders"]
        assert [h["state"] for h in holders] == ["idle in transaction"]
        done.set()
        assert (await request).status_code == 200


async def test_second_transaction_waiting_on_the_same_row_counts_one_lock_wait(
    pg: PostgresServer, registry: CollectorRegistry, superuser: asyncpg.Connection
) -> None:
    """Two requests updating one row in two transactions: waiting_on_lock is 1 while the second waits."""
    table = await create_table(pg)
    setup = await asyncpg.connect(pg.dsn)
    try:
        await setup.execute(f"INSERT INTO {table} (name, qty) VALUES ('a', 1)")
    finally:
        await setup.close()
    name = f"lock-{uuid.uuid4().hex[:8]}"
    spec, config = make_spec("asyncpg", pg.dsn, pg.conninfo(), max_size=4)
    app = FastAPI()
    done = asyncio.Event()

    @app.post("/bump")
    async def bump() -> None:
        async with spec.provide_session(config) as session:
            await session.begin()
            await session.execute(f"UPDATE {table} SET qty = qty + 1 WHERE id = 1")
            await done.wait()
            await session.commit()

    SQLSpecOps(spec, registry=registry, application_name=name, server_stats_interval=INTERVAL).instrument(app)
    async with serving(app) as client:
        first = asyncio.create_task(client.post("/bump"))
        await eventually(lambda: _holder_count(client, 1), timeout=5, what="the first holder")
        second = asyncio.create_task(client.post("/bump"))

        async def waiting() -> bool:
            return (await server_of(client)).get("waiting_on_lock") == 1

        await eventually(waiting, timeout=5, what="one backend waiting on a lock")
        rows = await activity(superuser, name)
        assert sum(1 for r in rows if r["wait_event_type"] == "Lock") == 1
        assert gauge(registry, "sqlspec_ops_server_lock_waits") == 1
        done.set()
        assert (await first).status_code == 200
        assert (await second).status_code == 200

        async def cleared() -> bool:
            return (await server_of(client)).get("waiting_on_lock") == 0

        await eventually(cleared, timeout=5, what="no lock wait any more")


async def _holder_count(client: Any, n: int) -> bool:
    body = (await client.get("/ops/pools")).json()
    return len(body["pools"][0]["holders"]) == n


async def test_other_application_counts_under_other_clients_not_this_app(
    pg: PostgresServer, registry: CollectorRegistry, superuser: asyncpg.Connection
) -> None:
    """A connection with another application_name counts under other_clients; this app's backends stay this app's."""
    name = f"mine-{uuid.uuid4().hex[:8]}"
    spec, _config = make_spec("psycopg", pg.dsn, pg.conninfo())
    app = FastAPI()
    SQLSpecOps(spec, registry=registry, application_name=name, server_stats_interval=INTERVAL).instrument(app)
    async with serving(app) as client:
        await eventually(lambda: server_of(client), timeout=5, what="a first sample")
        before = (await server_of(client))["other_clients"]
        mine_before = sum((await server_of(client))["this_app"].values())
        others = [await asyncpg.connect(pg.dsn, server_settings={"application_name": "someone-else"}) for _ in range(3)]
        try:

            async def seen() -> bool:
                return bool((await server_of(client)).get("other_clients") == before + 3)

            await eventually(seen, timeout=5, what="three more other clients")
            view = await server_of(client)
            mine = len(await activity(superuser, name))
            assert sum(view["this_app"].values()) == mine_before == mine  # unchanged by the other clients
            assert view["fleet"] == {"backends": mine, "client_addresses": 1}
            assert gauge(registry, "sqlspec_ops_server_other_connections") == before + 3
        finally:
            for connection in others:
                await connection.close()


async def test_role_without_pg_read_all_stats_reports_the_missing_privilege(
    pg: PostgresServer, registry: CollectorRegistry, superuser: asyncpg.Connection
) -> None:
    """A role that cannot read other sessions gets an error naming pg_read_all_stats; the app keeps serving."""
    role = f"nostats_{uuid.uuid4().hex[:8]}"
    await superuser.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
    await superuser.execute(f"GRANT CONNECT ON DATABASE appdb TO {role}")
    dsn = f"postgresql://{role}:pw-{role}@{pg.host}:{pg.port}/appdb"
    spec, config = make_spec("asyncpg", dsn, "")
    app = FastAPI()

    @app.get("/one")
    async def one() -> int:
        async with spec.provide_session(config) as session:
            value: int = await session.select_value("SELECT 1")
            return value

    SQLSpecOps(spec, registry=registry, server_stats_interval=INTERVAL).instrument(app)
    async with serving(app) as client:
        await eventually(lambda: server_of(client), timeout=5, what="a first sample")
        view = await server_of(client)
        assert "pg_read_all_stats" in view["error"]
        assert sum(view["this_app"].values()) >= 1  # what it can see: its own sessions
        assert (await client.get("/one")).json() == 1
        assert f"pw-{role}" not in str(view)


async def test_application_name_defaults_and_the_config_wins(
    pg: PostgresServer, registry: CollectorRegistry, superuser: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections announce OTEL_SERVICE_NAME (else the title); an application_name in the config wins."""
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    assert default_application_name(None, "FastAPI") == "sqlspec-ops"
    assert default_application_name(None, "Billing API") == "Billing API"
    assert default_application_name("billing", "Billing API") == "billing"
    service = f"svc-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    spec, _ = make_spec("asyncpg", pg.dsn, pg.conninfo())
    own = f"own-{uuid.uuid4().hex[:8]}"
    spec.add_config(
        PsycopgAsyncConfig(
            connection_config={"conninfo": f"{pg.conninfo()} application_name={own}", "min_size": 1},
            bind_key="other",
        )
    )
    app = FastAPI(title="Billing API")
    SQLSpecOps(spec, registry=registry, server_stats_interval=None).instrument(app)
    async with serving(app):
        names = {
            r["application_name"]
            for r in await superuser.fetch("SELECT application_name FROM pg_stat_activity WHERE usename = 'app'")
        }
    assert service in names
    assert own in names


async def test_budget_subtracts_other_clients_seen_at_startup(
    pg20: PostgresServer, registry: CollectorRegistry
) -> None:
    """Three connections of another application at startup lower the budget by three, and the verdict says so."""
    others = [await asyncpg.connect(pg20.dsn, server_settings={"application_name": "batch-job"}) for _ in range(3)]
    try:
        spec, _ = make_spec("asyncpg", pg20.dsn, pg20.conninfo())
        app = FastAPI()
        SQLSpecOps(spec, registry=registry, server_stats_interval=None).instrument(app)
        async with serving(app) as client:
            verdict = (await client.get("/ops/pools")).json()["pools"][0]["budget"]
    finally:
        for connection in others:
            await connection.close()
    assert verdict["budget"] == 20 - 3 - 3  # max_connections - superuser_reserved_connections - other clients
    assert "other clients' connections 3" in verdict["budget_from"]


async def test_budget_without_other_clients_is_the_whole_server(
    pg20: PostgresServer, registry: CollectorRegistry
) -> None:
    """Negative control: with no other client connected, nothing is subtracted beyond the reserved slots."""
    spec, _ = make_spec("asyncpg", pg20.dsn, pg20.conninfo())
    app = FastAPI()
    SQLSpecOps(spec, registry=registry, server_stats_interval=None).instrument(app)
    async with serving(app) as client:
        verdict = (await client.get("/ops/pools")).json()["pools"][0]["budget"]
    assert verdict["budget"] == 20 - 3
    assert "other clients" not in verdict["budget_from"]


@pytest.mark.parametrize("replicas", [1, 2])
async def test_fleet_seen_by_the_server_is_compared_with_replicas_once(
    replicas: int, pg: PostgresServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A second host with this application_name warns once when replicas=1, and not at all when replicas=2."""
    caplog.set_level(logging.WARNING, logger="sqlspec_ops.pools")
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    spec, _ = make_spec("asyncpg", pg.dsn, pg.conninfo())
    app = FastAPI()
    ops = SQLSpecOps(spec, registry=registry, application_name=name, server_stats_interval=INTERVAL, replicas=replicas)
    ops.instrument(app)
    # "Another replica": the same application_name from another client address (the Unix socket shows as local).
    replica = await asyncpg.connect(
        host=str(pg.sockets),
        port=pg.port,
        user="postgres",
        database="appdb",
        server_settings={"application_name": name},
    )
    try:
        async with serving(app) as client:

            async def two_hosts() -> bool:
                fleet = (await server_of(client)).get("fleet") or {}
                return bool(fleet.get("client_addresses") == 2)

            await eventually(two_hosts, timeout=5, what="two client addresses")
            await asyncio.sleep(3 * INTERVAL)  # more samples: still one warning at most
    finally:
        await replica.close()
    warnings = [r for r in caplog.records if r.name == "sqlspec_ops.pools" and "client addresses" in r.getMessage()]
    assert len(warnings) == (1 if replicas == 1 else 0)


async def test_cli_budget_subtracts_other_clients_and_says_so(pg20: PostgresServer) -> None:
    """`sqlspec-ops check` on the instrumented example app counts two other clients' connections against the budget."""
    others = [await asyncpg.connect(pg20.dsn, server_settings={"application_name": "psql"}) for _ in range(2)]
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [str(Path(sys.executable).parent / "sqlspec-ops"), "check", "examples.app:app", "--workers", "1"],
            check=False,
            cwd=ROOT,
            env=clean_env(LOG_FORMAT="off", DATABASE_URL=pg20.dsn, POOL_MAX_SIZE="5"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for connection in others:
            await connection.close()
    assert result.returncode == 0, result.stderr
    expected = (
        "budget:   15 = max_connections 20 - superuser_reserved_connections 3 - "
        "other clients' connections 2 (seen in pg_stat_activity)"
    )
    assert expected in result.stdout, result.stdout
