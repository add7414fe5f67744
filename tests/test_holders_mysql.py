"""Holders and the server's view on MariaDB through asyncmy: the same /ops/pools keys as on PostgreSQL.

asyncmy's adapter reads the transaction state from the server status asyncmy keeps (``SERVER_STATUS_IN_TRANS``)
and the server's view from ``information_schema.PROCESSLIST`` joined with ``INNODB_TRX``, sampled by the same
per-worker sampler as PostgreSQL's.
"""

import asyncio
import uuid
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncmy import AsyncmyConfig

from sqlspec_ops import SQLSpecOps
from tests.support.asgi import serving
from tests.support.mariadb import APP_DATABASE, MariaDBServer
from tests.support.waiting import eventually

POOL = "main"


async def pool_entry(client: Any) -> dict[str, Any]:
    """Return pool ``main``'s entry of ``/ops/pools``."""
    body = (await client.get("/ops/pools")).json()
    (entry,) = [p for p in body["pools"] if p["name"] == POOL]
    return dict(entry)


async def test_asyncmy_holder_in_transaction_and_server_view(
    mariadb: MariaDBServer, registry: CollectorRegistry
) -> None:
    """A request waiting after an UPDATE in a transaction is "idle in transaction" as holder and in the server view."""
    table = f"t_{uuid.uuid4().hex[:10]}"
    mariadb.sql(f"CREATE TABLE {APP_DATABASE}.{table} (id INT PRIMARY KEY, qty INT) ENGINE=InnoDB")
    mariadb.sql(f"INSERT INTO {APP_DATABASE}.{table} VALUES (1, 0)")
    spec = SQLSpec()
    config = spec.add_config(
        AsyncmyConfig(connection_config=mariadb.connection_config(minsize=1, maxsize=2), bind_key=POOL)
    )
    app = FastAPI()
    done = asyncio.Event()

    @app.post("/bump")
    async def bump() -> None:
        async with spec.provide_session(config) as session:
            await session.begin()
            await session.execute(f"UPDATE {table} SET qty = qty + 1 WHERE id = 1")
            await done.wait()
            await session.rollback()

    SQLSpecOps(spec, registry=registry, server_stats_interval=0.2, leak_threshold=30).instrument(app)
    async with serving(app) as client:
        request = asyncio.create_task(client.post("/bump"))

        async def in_transaction() -> bool:
            entry = await pool_entry(client)
            holders = entry["holders"]
            server = entry.get("server") or {}
            return bool(
                holders and holders[0]["state"] == "idle in transaction" and server.get("idle_in_transaction", 0) >= 1
            )

        await eventually(in_transaction, timeout=10, what="a holder and a server view idle in transaction")
        entry = await pool_entry(client)
        (holder,) = entry["holders"]
        assert holder["route"] == "/bump"
        assert holder["statements"] >= 1
        assert "test_asyncmy_holder_in_transaction_and_server_view" in holder["acquired_at"]
        assert entry["server"]["this_app"].get("idle in transaction") == 1
        assert entry["server"]["oldest_transaction_s"] is not None
        assert entry["leak_threshold_s"] == 30
        done.set()
        assert (await request).status_code == 200
        assert (await pool_entry(client))["holders"] == []
    assert (
        registry.get_sample_value(
            "sqlspec_ops_server_connections",
            {"db_client_connection_pool_name": POOL, "state": "idle in transaction"},
        )
        is not None
    )
