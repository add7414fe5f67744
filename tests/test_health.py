"""Readiness and liveness under faults: a stopped server, a silent server, a saturated pool, a probe storm.

Each fault test runs its own PostgreSQL (the session-wide one is never stopped) and measures every answer:
``/ops/ready`` must answer within ``health_timeout + 0.5 s`` whatever the database does, ``/ops/live`` must
never touch a database, and ``/ops/metrics`` must keep being served.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.adapters.psycopg import PsycopgAsyncConfig
from sqlspec.extensions.fastapi import SQLSpecPlugin

from sqlspec_ops import SQLSpecOps
from sqlspec_ops.pools import InstrumentedPool
from tests.support.asgi import serving
from tests.support.postgres import PostgresServer, free_port

HEALTH_TIMEOUT = 1.0
SLACK = 0.5
UP = "sqlspec_ops_database_up"


def pg_config(adapter: str, dsn: str, conninfo: str, **sizes: int) -> Any:
    """Build an asyncpg or psycopg config for one server."""
    sizes = {"min_size": 1, "max_size": 2, **sizes}
    if adapter == "asyncpg":
        return AsyncpgConfig(connection_config={"dsn": dsn, **sizes}, bind_key="main")
    return PsycopgAsyncConfig(connection_config={"conninfo": conninfo, **sizes}, bind_key="main")


async def timed_get(client: httpx.AsyncClient, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    """GET a path and return the response with how long it took."""
    started = time.perf_counter()
    response = await client.get(path, **kwargs)
    return response, time.perf_counter() - started


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Listen on a loopback port, accept every connection and never send a byte; yield the port."""
    writers: list[asyncio.StreamWriter] = []
    never = asyncio.Event()

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await never.wait()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        never.set()
        with contextlib.suppress(Exception):
            await server.wait_closed()


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_stopped_database_fails_readiness_fast_and_recovers_without_restarting_the_app(
    adapter: str, registry: CollectorRegistry
) -> None:
    """Stop PostgreSQL: ready 503 in time, live instant, metrics served; start it again: ready 200 again."""
    with PostgresServer() as server:
        spec = SQLSpec()
        spec.add_config(pg_config(adapter, server.dsn, server.conninfo()))
        ops = SQLSpecOps(spec, registry=registry, health_timeout=HEALTH_TIMEOUT, health_cache_ttl=0.5)
        app = FastAPI()
        ops.instrument(app)
        async with serving(app) as client:
            response = await client.get("/ops/ready")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "pass"
            assert registry.get_sample_value(UP, {"db_client_connection_pool_name": "main"}) == 1

            server.stop()
            stopped = time.monotonic()
            while True:
                response, took = await timed_get(client, "/ops/ready")
                assert took < HEALTH_TIMEOUT + SLACK, f"/ops/ready took {took:.2f}s with the server down"
                if response.status_code == 503:
                    break
                assert time.monotonic() - stopped < ops.health.cache_ttl + HEALTH_TIMEOUT + SLACK
                await asyncio.sleep(0.05)
            body = response.json()
            assert response.headers["content-type"].startswith("application/health+json")
            assert body["status"] == "fail"
            (check,) = body["checks"]["main:connections"]
            assert check["status"] == "fail"
            assert check["output"]  # the error class, never the driver's message
            assert registry.get_sample_value(UP, {"db_client_connection_pool_name": "main"}) == 0

            for _ in range(5):
                live, took = await timed_get(client, "/ops/live")
                assert live.status_code == 200
                assert took < 0.05, f"/ops/live took {took * 1000:.0f} ms with the server down"
            metrics, took = await timed_get(client, "/ops/metrics")
            assert metrics.status_code == 200
            assert "sqlspec_ops_database_up" in metrics.text
            assert (await client.get("/ops/pools")).status_code == 200

            server.start()
            restarted = time.monotonic()
            while True:  # psycopg_pool backs off its reconnection attempts: ~10-13 s
                response, took = await timed_get(client, "/ops/ready")
                assert took < HEALTH_TIMEOUT + SLACK, f"/ops/ready took {took:.2f}s while the server restarts"
                if response.status_code == 200:
                    break
                assert time.monotonic() - restarted < 40, f"{adapter} never recovered: {response.text}"
                await asyncio.sleep(0.25)
            assert response.json()["status"] == "pass"
            assert registry.get_sample_value(UP, {"db_client_connection_pool_name": "main"}) == 1


@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_silent_server_bounds_startup_and_readiness(adapter: str, registry: CollectorRegistry) -> None:
    """A server that accepts TCP and never answers: startup is bounded and /ops/ready answers 503 in time."""
    async with silent_server() as port:
        dsn = f"postgresql://app:s3cr3t-PW@127.0.0.1:{port}/appdb"
        conninfo = f"host=127.0.0.1 port={port} dbname=appdb user=app password=s3cr3t-PW"
        spec = SQLSpec()
        spec.add_config(pg_config(adapter, dsn, conninfo))
        ops = SQLSpecOps(spec, registry=registry, health_timeout=HEALTH_TIMEOUT, startup_timeout=1.0)
        app = FastAPI()
        ops.instrument(app)
        started = time.perf_counter()
        async with serving(app) as client:
            startup = time.perf_counter() - started
            # opening the pool, reading the budget and the first ping share one startup_timeout
            assert startup < 1.0 + SLACK, f"startup took {startup:.2f}s"
            for _ in range(2):
                response, took = await timed_get(client, "/ops/ready")
                assert response.status_code == 503
                assert took < HEALTH_TIMEOUT + SLACK, f"/ops/ready took {took:.2f}s"
                await asyncio.sleep(ops.health.cache_ttl)
            runs = ops.health.runs
            storm = await asyncio.gather(*(timed_get(client, "/ops/ready") for _ in range(100)))
            assert {r.status_code for r, _ in storm} == {503}
            assert max(took for _, took in storm) < HEALTH_TIMEOUT + SLACK + 0.5
            assert ops.health.runs - runs <= 2, "a probe storm against a hanging server must share pings"
            live, took = await timed_get(client, "/ops/live")
            assert live.status_code == 200
            assert took < 0.05


async def test_live_is_instant_while_every_connection_is_busy(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """With SQLSpecPlugin (a connection per request) and a saturated pool, live stays instant, ready answers."""
    spec = SQLSpec()
    config = spec.add_config(pg_config("asyncpg", pg.dsn, pg.conninfo(), min_size=2))
    ops = SQLSpecOps(spec, registry=registry, health_timeout=0.5)
    app = FastAPI()
    plugin = SQLSpecPlugin(spec, app)
    ops.instrument(app)
    release = asyncio.Event()
    entered = asyncio.Semaphore(0)

    @app.get("/busy")
    async def busy(db: Annotated[Any, Depends(plugin.provide_session())]) -> dict[str, int]:
        value = await db.select_value("SELECT 1")
        entered.release()
        await release.wait()
        return {"value": value}

    async with serving(app) as client:
        await asyncio.sleep(ops.health.cache_ttl)  # let the startup ping's result expire
        busy_requests = [asyncio.create_task(client.get("/busy")) for _ in range(2)]
        for _ in busy_requests:
            await entered.acquire()
        pool = config.connection_instance
        assert isinstance(pool, InstrumentedPool)
        assert pool.inner.get_idle_size() == 0
        for _ in range(10):
            live, took = await timed_get(client, "/ops/live")
            assert live.status_code == 200
            assert took < 0.05, f"/ops/live took {took * 1000:.0f} ms with the pool saturated"
        metrics, took = await timed_get(client, "/ops/metrics")
        assert metrics.status_code == 200
        assert took < 0.5
        ready, took = await timed_get(client, "/ops/ready")
        assert ready.status_code == 503  # no connection within health_timeout: not ready for more traffic
        assert took < 0.5 + SLACK
        assert ready.json()["checks"]["main:connections"][0]["output"] == "TimeoutError"
        release.set()
        assert [(await r).status_code for r in busy_requests] == [200, 200]
        await asyncio.sleep(ops.health.cache_ttl)
        assert (await client.get("/ops/ready")).status_code == 200


async def test_probe_storm_costs_a_handful_of_pings(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """500 concurrent /ops/ready calls are answered by at most a few coalesced, cached pings."""
    spec = SQLSpec()
    config = spec.add_config(pg_config("asyncpg", pg.dsn, pg.conninfo()))
    ops = SQLSpecOps(spec, registry=registry)
    app = FastAPI()
    ops.instrument(app)
    async with serving(app) as client:
        await asyncio.sleep(ops.health.cache_ttl)  # the startup ping's result has expired: the storm must ping
        pool = config.connection_instance
        assert isinstance(pool, InstrumentedPool)
        runs, acquires = ops.health.runs, pool.acquires
        responses = await asyncio.gather(*(client.get("/ops/ready") for _ in range(500)))
        assert [r.status_code for r in responses] == [200] * 500
        pings = pool.acquires - acquires
        assert 1 <= ops.health.runs - runs <= 5
        assert pings == ops.health.runs - runs, "one ping per run and database"


async def test_ready_reports_each_database_and_fails_when_any_fails(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """Two databases, one unreachable: /ops/ready and /ops/health answer 503 with a check for each database."""
    spec = SQLSpec()
    spec.add_config(pg_config("asyncpg", pg.dsn, pg.conninfo()))
    dead = f"postgresql://app:s3cr3t-PW@127.0.0.1:{free_port()}/appdb"
    spec.add_config(AsyncpgConfig(connection_config={"dsn": dead, "min_size": 0, "max_size": 1}, bind_key="dead"))
    ops = SQLSpecOps(spec, registry=registry, health_timeout=0.5)
    app = FastAPI()
    ops.instrument(app)
    async with serving(app) as client:
        for path in ("/ops/ready", "/ops/health"):
            response, took = await timed_get(client, path)
            assert response.status_code == 503
            assert took < 0.5 + SLACK
            checks = response.json()["checks"]
            assert checks["main:connections"][0]["status"] == "pass"
            assert checks["main:connections"][0]["observedUnit"] == "ms"
            assert checks["dead:connections"][0]["status"] == "fail"
            assert checks["dead:connections"][0]["output"] == "ConnectionRefusedError"
        assert registry.get_sample_value(UP, {"db_client_connection_pool_name": "main"}) == 1
        assert registry.get_sample_value(UP, {"db_client_connection_pool_name": "dead"}) == 0
