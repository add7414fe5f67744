"""Readiness that never cascades and never hides the cause (real PostgreSQL, asyncpg and psycopg).

A saturated pool whose connections keep coming back is ``warn`` (200), a stopped database is 503 within
``health_timeout`` + 0.5 s, ``ready_when_saturated=False`` keeps the old 503; psycopg names why it cannot
connect; ``refusing_traffic`` takes an instance out of rotation; ``HEAD`` answers like ``GET`` without a body.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.adapters.psycopg import PsycopgAsyncConfig

import sqlspec_ops._health
from sqlspec_ops import SQLSpecOps
from sqlspec_ops._adapters.proxy import InstrumentedPool
from tests.support.asgi import serving
from tests.support.postgres import APP_PASSWORD, PostgresServer, free_port
from tests.support.waiting import eventually

HEALTH_TIMEOUT = 1.0
SLACK = 0.5
UP = "sqlspec_ops_database_up"


def pg_config(adapter: str, server: PostgresServer) -> Any:
    """Build an asyncpg or psycopg config of max_size 2 for one server."""
    sizes = {"min_size": 1, "max_size": 2}
    if adapter == "asyncpg":
        return AsyncpgConfig(connection_config={"dsn": server.dsn, **sizes}, bind_key="main")
    return PsycopgAsyncConfig(connection_config={"conninfo": server.conninfo(), **sizes}, bind_key="main")


def sleepy_app(spec: SQLSpec, config: Any, ops: SQLSpecOps) -> FastAPI:
    """An app whose ``/sleep/{seconds}`` holds a pool connection for that long inside one statement."""
    app = FastAPI()

    async def session() -> AsyncIterator[Any]:
        async with spec.provide_session(config) as db:
            yield db

    @app.get("/sleep/{seconds}")
    async def sleep(seconds: float, db: Annotated[Any, Depends(session)]) -> int:
        return int(await db.select_value(f"SELECT 1 FROM pg_sleep({seconds})"))

    ops.instrument(app)
    return app


def proxy(config: Any) -> InstrumentedPool:
    """Return the config's pool proxy."""
    pool = config.connection_instance
    assert isinstance(pool, InstrumentedPool)
    return pool


async def saturate(client: httpx.AsyncClient, pool: InstrumentedPool, *, hold: float) -> list["asyncio.Task[Any]"]:
    """Hold both connections with slow statements and leave a third request waiting; return the requests."""
    assert (await client.get("/sleep/0")).status_code == 200  # a connection came back just now
    requests = [asyncio.create_task(client.get(f"/sleep/{hold}")) for _ in range(3)]
    await eventually(lambda: pool.used() == 2 and pool.pending >= 1, timeout=10, what="2 in use and 1 waiting")
    return requests


async def timed_ready(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
    """GET /ops/ready and say how long it took."""
    started = time.perf_counter()
    response = await client.get("/ops/ready")
    return response, time.perf_counter() - started


@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_saturated_pool_that_still_moves_is_ready_with_a_warning(
    pg: PostgresServer, registry: CollectorRegistry, adapter: str
) -> None:
    """Two slow statements hold a pool of 2, a third waits: /ops/ready is 200 with a warn check naming saturation."""
    spec = SQLSpec()
    config = spec.add_config(pg_config(adapter, pg))
    ops = SQLSpecOps(spec, registry=registry, health_timeout=HEALTH_TIMEOUT, health_cache_ttl=0.0)
    app = sleepy_app(spec, config, ops)
    async with serving(app) as client:
        pool = proxy(config)
        requests = await saturate(client, pool, hold=3)
        response, took = await timed_ready(client)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "warn"
        (check,) = body["checks"]["main:connections"]
        assert check["status"] == "warn"
        assert "saturated: 2/2 connections in use, 1 waiting" in check["output"], check["output"]
        assert took < HEALTH_TIMEOUT + SLACK
        assert registry.get_sample_value(UP, {"db_client_connection_pool_name": "main"}) == 1, "saturated is up"
        assert [(await r).status_code for r in requests] == [200, 200, 200]
        after = await client.get("/ops/ready")
        assert after.status_code == 200
        assert after.json()["status"] == "pass", "once the pool drains the warning goes away"


@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_saturated_pool_fails_readiness_when_asked_to(
    pg: PostgresServer, registry: CollectorRegistry, adapter: str
) -> None:
    """With ready_when_saturated=False the same saturated pool answers 503 (the ping's timeout)."""
    spec = SQLSpec()
    config = spec.add_config(pg_config(adapter, pg))
    ops = SQLSpecOps(
        spec, registry=registry, health_timeout=HEALTH_TIMEOUT, health_cache_ttl=0.0, ready_when_saturated=False
    )
    app = sleepy_app(spec, config, ops)
    async with serving(app) as client:
        requests = await saturate(client, proxy(config), hold=3)
        response, took = await timed_ready(client)
        assert response.status_code == 503, response.text
        (check,) = response.json()["checks"]["main:connections"]
        assert check["status"] == "fail"
        assert check["output"] in {"TimeoutError", "PoolAcquireTimeout"}
        assert took < HEALTH_TIMEOUT + SLACK
        await asyncio.gather(*requests)


async def test_saturated_pool_whose_connections_are_stuck_fails(
    pg: PostgresServer, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saturation is not an excuse when no connection came back within the evidence window: 503."""
    monkeypatch.setattr(sqlspec_ops._health, "SATURATION_EVIDENCE_S", 0.2)  # shrink the window
    spec = SQLSpec()
    config = spec.add_config(pg_config("asyncpg", pg))
    ops = SQLSpecOps(spec, registry=registry, health_timeout=HEALTH_TIMEOUT, health_cache_ttl=0.0)
    app = sleepy_app(spec, config, ops)
    async with serving(app) as client:
        requests = await saturate(client, proxy(config), hold=3)
        await asyncio.sleep(0.3)  # past the (shrunk) window: nothing has come back since
        response, _ = await timed_ready(client)
        assert response.status_code == 503, response.text
        assert response.json()["checks"]["main:connections"][0]["output"] == "TimeoutError"
        await asyncio.gather(*requests)


@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_saturated_pool_of_a_stopped_database_fails_in_time(registry: CollectorRegistry, adapter: str) -> None:
    """Saturate the pool, then stop PostgreSQL: /ops/ready is 503 within health_timeout + 0.5 s, not warn."""
    with PostgresServer() as server:
        spec = SQLSpec()
        config = spec.add_config(pg_config(adapter, server))
        ops = SQLSpecOps(spec, registry=registry, health_timeout=HEALTH_TIMEOUT, health_cache_ttl=0.0)
        app = sleepy_app(spec, config, ops)
        async with serving(app, raise_app_exceptions=False) as client:
            pool = proxy(config)
            requests = await saturate(client, pool, hold=30)
            server.stop()
            response, took = await timed_ready(client)
            assert response.status_code == 503, response.text
            (check,) = response.json()["checks"]["main:connections"]
            assert check["status"] == "fail"
            assert took < HEALTH_TIMEOUT + SLACK
            assert registry.get_sample_value(UP, {"db_client_connection_pool_name": "main"}) == 0
            for request in requests:
                request.cancel()
            await asyncio.gather(*requests, return_exceptions=True)


@pytest.mark.parametrize(
    ("case", "expected"),
    [("wrong password", "InvalidPassword"), ("refused", "ConnectionRefusedError")],
)
async def test_psycopg_readiness_names_the_real_cause(
    pg: PostgresServer, registry: CollectorRegistry, case: str, expected: str
) -> None:
    """A psycopg pool only times out; /ops/ready names the auth or connection error class, in time, with no secret."""
    if case == "wrong password":
        conninfo = pg.conninfo().replace(APP_PASSWORD, "wrong-pw-7c1e")
    else:
        conninfo = f"host=127.0.0.1 port={free_port()} dbname=appdb user=app password={APP_PASSWORD}"
    spec = SQLSpec()
    spec.add_config(
        PsycopgAsyncConfig(connection_config={"conninfo": conninfo, "min_size": 1, "max_size": 2}, bind_key="main")
    )
    # the budget check waits on the pool too: bound it below asgi-lifespan's own 5 s startup limit
    ops = SQLSpecOps(spec, registry=registry, health_timeout=HEALTH_TIMEOUT, health_cache_ttl=0.0, startup_timeout=2.0)
    app = FastAPI()
    ops.instrument(app)
    async with serving(app) as client:
        response, took = await timed_ready(client)
        assert response.status_code == 503
        (check,) = response.json()["checks"]["main:connections"]
        assert check["output"] == expected
        assert took < HEALTH_TIMEOUT + SLACK
        for secret in (APP_PASSWORD, "wrong-pw-7c1e", "password", "127.0.0.1"):
            assert secret not in response.text


async def test_refusing_traffic_takes_the_instance_out_of_rotation(registry: CollectorRegistry) -> None:
    """In refusing_traffic (with, async with, nested, concurrent, raising) /ready is 503 with the reasons, /live 200."""
    spec = SQLSpec()
    spec.add_config(AiosqliteConfig(connection_config={"database": ":memory:"}, bind_key="main"))
    ops = SQLSpecOps(spec, registry=registry, health_cache_ttl=0.0)
    app = FastAPI()
    ops.instrument(app)

    async def ready() -> tuple[int, Any]:
        response = await client.get("/ops/ready")
        assert (await client.get("/ops/live")).status_code == 200
        return response.status_code, response.json().get("output")

    async with serving(app) as client:
        assert await ready() == (200, None)
        runs = ops.health.runs
        with ops.refusing_traffic("running migrations"):
            assert await ready() == (503, "running migrations")
            assert ops.health.runs == runs, "a refusal answers without pinging"
            async with ops.refusing_traffic("warming caches"):
                assert await ready() == (503, "running migrations; warming caches")
            assert await ready() == (503, "running migrations")
        assert await ready() == (200, None)

        async def failing_migration() -> None:
            with ops.refusing_traffic("draining"):
                assert await ready() == (503, "draining")
                msg = "migration failed"
                raise RuntimeError(msg)

        with pytest.raises(RuntimeError, match="migration failed"):
            await failing_migration()
        assert await ready() == (200, None)

        # concurrent blocks end in any order, each taking away only its own reason
        first_in = asyncio.Event()
        second_out = asyncio.Event()

        async def first() -> None:
            async with ops.refusing_traffic("first"):
                first_in.set()
                await second_out.wait()
                assert await ready() == (503, "first")

        async def second() -> None:
            await first_in.wait()
            async with ops.refusing_traffic("second"):
                assert await ready() == (503, "first; second")
            second_out.set()

        await asyncio.gather(first(), second())
        assert await ready() == (200, None)
        assert (await client.head("/ops/ready")).status_code == 200
        with ops.refusing_traffic("head too"):
            assert (await client.head("/ops/ready")).status_code == 503
        with pytest.raises(ValueError, match="needs a reason"):
            ops.refusing_traffic("  ")


async def test_status_page_says_the_instance_refuses_traffic_and_why(registry: CollectorRegistry) -> None:
    """While refusing_traffic is held the status page's verdict is /ready's: fail, with the reason; then pass again."""
    spec = SQLSpec()
    spec.add_config(AiosqliteConfig(connection_config={"database": ":memory:"}, bind_key="main"))
    ops = SQLSpecOps(spec, registry=registry, health_cache_ttl=0.0)
    app = FastAPI()
    ops.instrument(app)
    async with serving(app) as client:
        before = (await client.get("/ops/")).text
        with ops.refusing_traffic("running <migrations>"):
            during = (await client.get("/ops/")).text
        after = (await client.get("/ops/")).text
    assert "Refusing traffic" not in before
    assert "Refusing traffic" not in after
    assert "Refusing traffic: running &lt;migrations&gt;" in during  # escaped, like every value on the page
    overall = during.split("Overall:", 1)[1].split("</p>", 1)[0]
    assert "fail" in overall
    assert "pass" in before.split("Overall:", 1)[1].split("</p>", 1)[0]


async def test_head_answers_like_get_without_a_body(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """HEAD on /live, /ready and /health: GET's status (200, and 503 with a database down), no body."""
    spec = SQLSpec()
    spec.add_config(AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 1}, bind_key="main"))
    ops = SQLSpecOps(spec, registry=registry, health_timeout=0.5, health_cache_ttl=0.0)
    app = FastAPI()
    ops.instrument(app)
    async with serving(app) as client:
        for path in ("/ops/live", "/ops/ready", "/ops/health"):
            get, head = await client.get(path), await client.head(path)
            assert (get.status_code, head.status_code) == (200, 200), path
            assert get.content, "GET has a body"
            assert head.content == b"", path
            assert head.headers["content-type"].startswith("application/health+json")

    dead = f"postgresql://app:x@127.0.0.1:{free_port()}/appdb"
    spec = SQLSpec()
    spec.add_config(AsyncpgConfig(connection_config={"dsn": dead, "min_size": 0, "max_size": 1}, bind_key="dead"))
    ops = SQLSpecOps(spec, registry=CollectorRegistry(), health_timeout=0.5, health_cache_ttl=0.0)
    app = FastAPI()
    ops.instrument(app)
    async with serving(app) as client:
        for path in ("/ops/ready", "/ops/health"):
            get, head = await client.get(path), await client.head(path)
            assert (get.status_code, head.status_code) == (503, 503), path
            assert head.content == b""
        assert (await client.head("/ops/live")).status_code == 200
