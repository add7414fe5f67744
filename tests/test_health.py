"""Readiness and liveness under faults: a stopped server, a silent server, a saturated pool, a probe storm.

Each fault test runs its own PostgreSQL (the session-wide one is never stopped) and measures every answer:
``/ops/ready`` must answer within ``health_timeout + 0.5 s`` whatever the database does, ``/ops/live`` must
never touch a database, and ``/ops/metrics`` must keep being served.
"""

import asyncio
import time
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
from sqlspec_ops._adapters.proxy import InstrumentedPool
from tests.support.asgi import serving
from tests.support.network import silent_server
from tests.support.postgres import PostgresServer, free_port
from tests.support.waiting import eventually

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


def no_pool_touched(pool: InstrumentedPool, ops: SQLSpecOps) -> tuple[int, int, int]:
    """What a request that touched a database would change: the pool's acquires and waiters, the health runs."""
    return pool.acquires, pool.pending, ops.health.runs


def instrumented(config: Any) -> InstrumentedPool:
    """Return the config's pool proxy (sqlspec-ops installed it at startup)."""
    pool = config.connection_instance
    assert isinstance(pool, InstrumentedPool)
    return pool


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_stopped_database_fails_readiness_fast_and_recovers_without_restarting_the_app(
    adapter: str, registry: CollectorRegistry
) -> None:
    """Stop PostgreSQL: ready 503 in time, live touches no pool, metrics served; start it again: ready 200 again."""
    with PostgresServer() as server:
        spec = SQLSpec()
        config = spec.add_config(pg_config(adapter, server.dsn, server.conninfo()))
        ops = SQLSpecOps(spec, registry=registry, health_timeout=HEALTH_TIMEOUT, health_cache_ttl=0.5)
        app = FastAPI()
        ops.instrument(app)
        async with serving(app) as client:
            response = await client.get("/ops/ready")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "pass"
            assert registry.get_sample_value(UP, {"db_client_connection_pool_name": "main"}) == 1

            server.stop()
            answers: list[httpx.Response] = []

            async def ready_fails() -> bool:
                response, took = await timed_get(client, "/ops/ready")
                assert took < HEALTH_TIMEOUT + SLACK, f"/ops/ready took {took:.2f}s with the server down"
                answers.append(response)
                return response.status_code == 503

            # the cached pass expires after cache_ttl, then one ping fails within health_timeout
            await eventually(ready_fails, timeout=ops.health.cache_ttl + HEALTH_TIMEOUT + SLACK, what="ready 503")
            response = answers[-1]
            body = response.json()
            assert response.headers["content-type"].startswith("application/health+json")
            assert body["status"] == "fail"
            (check,) = body["checks"]["main:connections"]
            assert check["status"] == "fail"
            assert check["output"]  # the error class, never the driver's message
            assert registry.get_sample_value(UP, {"db_client_connection_pool_name": "main"}) == 0

            pool = instrumented(config)
            before = no_pool_touched(pool, ops)
            for _ in range(5):
                live = await client.get("/ops/live")
                assert live.status_code == 200
            assert no_pool_touched(pool, ops) == before, "/ops/live touched the pool or ran a health check"
            metrics = await client.get("/ops/metrics")
            assert metrics.status_code == 200
            assert "sqlspec_ops_database_up" in metrics.text
            assert (await client.get("/ops/pools")).status_code == 200

            server.start()

            async def ready_passes() -> bool:
                response, took = await timed_get(client, "/ops/ready")
                assert took < HEALTH_TIMEOUT + SLACK, f"/ops/ready took {took:.2f}s while the server restarts"
                answers.append(response)
                return response.status_code == 200

            # psycopg_pool backs off its reconnection attempts: ~10-13 s
            await eventually(ready_passes, timeout=40, interval=0.25, what=f"{adapter} to recover")
            assert answers[-1].json()["status"] == "pass"
            assert registry.get_sample_value(UP, {"db_client_connection_pool_name": "main"}) == 1


@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_silent_server_bounds_startup_and_readiness(adapter: str, registry: CollectorRegistry) -> None:
    """A server that accepts TCP and never answers: startup is bounded and /ops/ready answers 503 in time."""
    with silent_server() as port:
        dsn = f"postgresql://app:s3cr3t-PW@127.0.0.1:{port}/appdb"
        conninfo = f"host=127.0.0.1 port={port} dbname=appdb user=app password=s3cr3t-PW"
        spec = SQLSpec()
        config = spec.add_config(pg_config(adapter, dsn, conninfo))
        # no cached results: each probe below joins the ping in flight or starts one against the hanging server
        ops = SQLSpecOps(
            spec, registry=registry, health_timeout=HEALTH_TIMEOUT, startup_timeout=1.0, health_cache_ttl=0.0
        )
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
            runs = ops.health.runs
            storm = await asyncio.gather(*(timed_get(client, "/ops/ready") for _ in range(100)))
            assert {r.status_code for r, _ in storm} == {503}
            assert max(took for _, took in storm) < HEALTH_TIMEOUT + SLACK + 0.5
            assert ops.health.runs - runs <= 2, "a probe storm against a hanging server must share pings"
            pool = instrumented(config)
            before = no_pool_touched(pool, ops)
            live = await client.get("/ops/live")
            assert live.status_code == 200
            assert no_pool_touched(pool, ops) == before, "/ops/live touched the pool or ran a health check"


async def test_live_borrows_nothing_while_every_connection_is_busy(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """With SQLSpecPlugin (a connection per request) and a full pool, live and metrics borrow none; ready answers."""
    spec = SQLSpec()
    config = spec.add_config(pg_config("asyncpg", pg.dsn, pg.conninfo(), min_size=2))
    # no cached results: the startup ping's pass must not answer the probes below
    ops = SQLSpecOps(spec, registry=registry, health_timeout=0.5, health_cache_ttl=0.0)
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
        busy_requests = [asyncio.create_task(client.get("/busy")) for _ in range(2)]
        for _ in busy_requests:
            await entered.acquire()
        pool = instrumented(config)
        assert pool.inner.get_idle_size() == 0
        # With every connection held until `release`, a route that borrowed one would wait here for ever.
        before = no_pool_touched(pool, ops)
        async with asyncio.timeout(30):
            for _ in range(10):
                live = await client.get("/ops/live")
                assert live.status_code == 200
            metrics = await client.get("/ops/metrics")
        assert metrics.status_code == 200
        assert no_pool_touched(pool, ops) == before, "/ops/live or /ops/metrics touched the pool"
        ready, took = await timed_get(client, "/ops/ready")
        assert ready.status_code == 503  # no connection within health_timeout: not ready for more traffic
        assert took < 0.5 + SLACK
        assert ready.json()["checks"]["main:connections"][0]["output"] == "TimeoutError"
        release.set()
        assert [(await r).status_code for r in busy_requests] == [200, 200]
        assert (await client.get("/ops/ready")).status_code == 200


async def test_probe_storm_costs_a_handful_of_pings(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """500 concurrent /ops/ready calls are answered by at most a few coalesced, cached pings."""
    spec = SQLSpec()
    config = spec.add_config(pg_config("asyncpg", pg.dsn, pg.conninfo()))
    ops = SQLSpecOps(spec, registry=registry, health_cache_ttl=0.2)
    app = FastAPI()
    ops.instrument(app)
    async with serving(app) as client:
        await asyncio.sleep(ops.health.cache_ttl)  # the startup ping's result has expired: the storm must ping
        pool = instrumented(config)
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
