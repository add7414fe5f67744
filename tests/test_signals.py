"""Signals that never lie: pool counts during an outage, all-or-nothing ``instrument()``, stable pool labels.

psycopg pools against a stopped real PostgreSQL; plain Starlette apps on real PostgreSQL; in-memory aiosqlite
labels across instances and processes.
"""

import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.adapters.psycopg import PsycopgAsyncConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sqlspec_ops import SQLSpecOps
from sqlspec_ops._adapters.proxy import InstrumentedPool
from tests.support.asgi import serving
from tests.support.paths import ROOT
from tests.support.postgres import PostgresServer
from tests.support.statements import duration_counts
from tests.support.waiting import eventually

COUNT = "db_client_connection_count"


def gauge(registry: CollectorRegistry, state: str, pool: str = "main") -> float | None:
    """Read ``db_client_connection_count`` for one pool and state."""
    return registry.get_sample_value(
        COUNT, {"db_client_connection_pool_name": pool, "db_client_connection_state": state}
    )


async def test_psycopg_pool_of_a_stopped_database_reports_no_phantom_used_connections(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Database stopped, nothing borrowed, psycopg_pool retrying: used is 0 in the gauge, /ops/pools and the timeout."""
    with PostgresServer() as server:
        spec = SQLSpec()
        config = spec.add_config(
            PsycopgAsyncConfig(
                connection_config={"conninfo": server.conninfo(), "min_size": 2, "max_size": 2}, bind_key="main"
            )
        )
        ops = SQLSpecOps(spec, registry=registry, acquire_timeout=0.5, health_timeout=0.5, health_cache_ttl=0.0)
        app = FastAPI()

        async def session() -> AsyncIterator[Any]:
            async with spec.provide_session(config) as db:
                yield db

        @app.get("/one")
        async def one(db: Annotated[Any, Depends(session)]) -> int:
            return int(await db.select_value("SELECT 1"))

        ops.instrument(app)
        async with serving(app, raise_app_exceptions=False) as client:
            assert (await client.get("/one")).json() == 1
            (healthy,) = (await client.get("/ops/pools")).json()["pools"]
            assert (healthy["used"], healthy["idle"], healthy["opening"]) == (0, 2, 0)
            pool = config.connection_instance
            assert isinstance(pool, InstrumentedPool)
            server.stop()
            for _ in range(2):  # hand out the broken connections so psycopg_pool discards them and reconnects
                await client.get("/one")
            stats = pool.inner.get_stats

            def retrying() -> bool:
                s = stats()
                # the outage this test is about: psycopg_pool counts connections it is still trying to make
                # (nothing is borrowed: every request above has finished)
                return s.get("pool_size", 0) > s.get("pool_available", 0)

            await eventually(retrying, timeout=10, what="psycopg_pool retrying with nothing borrowed")
            assert gauge(registry, "used") == 0
            assert gauge(registry, "idle") == 0
            (entry,) = (await client.get("/ops/pools")).json()["pools"]
            assert (entry["used"], entry["idle"]) == (0, 0)
            assert entry["opening"] >= 1, "the connections psycopg_pool is still trying to make, under their own name"

            caplog.set_level(logging.WARNING, logger="sqlspec_ops")
            caplog.clear()  # the broken-connection requests above may have timed out too
            response = await client.get("/one")
            assert response.status_code == 503
            (message,) = [r.getMessage() for r in caplog.records if "timed out after" in r.getMessage()]
            assert "max_size=2, 0 in use" in message, message
            assert "event-loop lag recently up to" in message, message


async def test_plain_starlette_app_is_served_and_measured(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """instrument() on a plain Starlette app: the /ops endpoints answer, statements are counted, IDs echoed."""
    spec = SQLSpec()
    config = spec.add_config(
        AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 2}, bind_key="main")
    )

    async def one(_request: Request) -> JSONResponse:
        async with spec.provide_session(config) as db:
            return JSONResponse(await db.select_value("SELECT 1"))

    app = Starlette(routes=[Route("/one", one)])
    assert SQLSpecOps(spec, registry=registry).instrument(app) is app
    async with serving(app) as client:
        response = await client.get("/one")
        assert response.json() == 1
        assert response.headers["x-request-id"]
        assert (await client.get("/ops/live")).status_code == 200
        assert (await client.get("/ops/ready")).json()["status"] == "pass"
        assert "db_client_operation_duration_seconds" in (await client.get("/ops/metrics")).text
        assert (await client.get("/ops/pools")).json()["pools"][0]["name"] == "main"
    assert sum(duration_counts(registry).values()) == 1


def _untouched(config: Any) -> tuple[Any, Any]:
    return config.connection_instance, config.observability_config


def _app_parts(app: Starlette) -> tuple[Any, ...]:
    return (
        dict(app.state._state),  # Starlette keeps the state's values here
        app.__dict__.get("build_middleware_stack"),
        app.router.lifespan_context,
        app.middleware_stack,
        dict(app.exception_handlers),
    )


@pytest.mark.parametrize("thing", ["router", "api_router", "function", "object"])
def test_instrument_refuses_a_non_app_before_changing_anything(registry: CollectorRegistry, thing: str) -> None:
    """instrument() of something that is not an app raises TypeError, every time, and changes no config."""
    spec = SQLSpec()
    config = spec.add_config(AiosqliteConfig(connection_config={"database": ":memory:"}, bind_key="main"))
    app = Starlette()
    targets: dict[str, Any] = {
        "router": app.router,
        "api_router": APIRouter(),
        "function": lambda *_asgi: None,
        "object": object(),
    }
    target = targets[thing]
    before_config, before_app = _untouched(config), _app_parts(app)
    before_lifespan = getattr(target, "lifespan_context", None)
    ops = SQLSpecOps(spec, registry=registry)
    for _ in range(2):  # a second call must not pass silently either
        with pytest.raises(TypeError, match="takes a FastAPI or Starlette app"):
            ops.instrument(target)
    assert _untouched(config) == before_config
    assert _app_parts(app) == before_app
    assert getattr(target, "lifespan_context", None) is before_lifespan
    assert ops.instrument(app) is app, "the same SQLSpecOps still instruments a real app afterwards"
    assert config.connection_instance is not None


async def test_instrument_refuses_a_serving_app_and_leaves_it_untouched(registry: CollectorRegistry) -> None:
    """An app that already built its middleware stack: RuntimeError on every call; app and configs unchanged."""
    spec = SQLSpec()
    config = spec.add_config(AiosqliteConfig(connection_config={"database": ":memory:"}, bind_key="main"))
    app = FastAPI()
    app.middleware_stack = app.build_middleware_stack()  # what Starlette does on its first request
    before_config, before_app = _untouched(config), _app_parts(app)
    ops = SQLSpecOps(spec, registry=registry)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="before the app starts serving"):
            ops.instrument(app)
    assert _untouched(config) == before_config
    assert _app_parts(app) == before_app

    other_spec = SQLSpec()
    other = other_spec.add_config(AiosqliteConfig(connection_config={"database": ":memory:"}, bind_key="other"))
    fresh = FastAPI()
    SQLSpecOps(spec, registry=registry).instrument(fresh)
    before_other, before_fresh = _untouched(other), _app_parts(fresh)
    with pytest.raises(RuntimeError, match="already instrumented by another SQLSpecOps"):
        SQLSpecOps(other_spec, registry=CollectorRegistry()).instrument(fresh)
    assert _untouched(other) == before_other
    assert _app_parts(fresh) == before_fresh


_LABEL_SCRIPT = """
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig
from prometheus_client import CollectorRegistry
from sqlspec_ops import SQLSpecOps
spec = SQLSpec()
spec.add_config(AiosqliteConfig(connection_config={"database": ":memory:"}))
print(SQLSpecOps(spec, registry=CollectorRegistry()).databases[0].name)
"""


def _label_in_a_new_process() -> str:
    done = subprocess.run(
        [sys.executable, "-c", _LABEL_SCRIPT], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60
    )
    return done.stdout.strip()


async def test_in_memory_aiosqlite_label_is_the_same_in_every_instance_and_process() -> None:
    """An in-memory aiosqlite config without bind_key is labelled ':memory:' in two instances and two processes."""
    labels: list[str] = []
    for _ in range(2):
        spec = SQLSpec()
        config = spec.add_config(AiosqliteConfig(connection_config={"database": ":memory:"}))
        assert "memory_" in str(config.connection_config["database"]), "SQLSpec rewrote the path (the trap)"
        registry = CollectorRegistry()
        ops = SQLSpecOps(spec, registry=registry)
        app = FastAPI()
        ops.instrument(app)
        async with serving(app) as client:
            (entry,) = (await client.get("/ops/pools")).json()["pools"]
            labels.append(entry["name"])
            metrics = (await client.get("/ops/metrics")).text
            assert 'db_client_connection_pool_name=":memory:"' in metrics
    labels.extend([_label_in_a_new_process(), _label_in_a_new_process()])
    assert labels == [":memory:"] * 4
