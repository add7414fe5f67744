"""What SQLSpecOps does around the requests: exhausted pools answer 503, readiness refreshes in the background."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig, AsyncpgDriver

from sqlspec_ops import SQLSpecOps
from tests.support.asgi import serving
from tests.support.postgres import PostgresServer
from tests.support.waiting import eventually


def _app(
    dsn: str, registry: CollectorRegistry, *, holding: asyncio.Event | None = None, **options: object
) -> tuple[FastAPI, SQLSpecOps, asyncio.Event]:
    """Build an app whose ``/hold`` route holds its connection until the returned event is set.

    ``holding`` (when given) is set once the route has its connection.
    """
    release = asyncio.Event()
    spec = SQLSpec()
    config = spec.add_config(
        AsyncpgConfig(connection_config={"dsn": dsn, "min_size": 1, "max_size": 1}, bind_key="primary")
    )
    app = FastAPI()

    async def session() -> AsyncIterator[AsyncpgDriver]:
        async with spec.provide_session(config) as db:
            yield db

    @app.get("/hold")
    async def hold(db: Annotated[AsyncpgDriver, Depends(session)]) -> dict[str, int]:
        await db.select_value("SELECT 1")
        if holding is not None:
            holding.set()
        await release.wait()
        return {"held": 1}

    ops = SQLSpecOps(spec, registry=registry, **options)  # type: ignore[arg-type]
    return ops.instrument(app), ops, release


async def test_exhausted_pool_answers_503_with_retry_after(
    pg: PostgresServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A request that cannot get a connection within acquire_timeout gets 503 + Retry-After, logged once."""
    holding = asyncio.Event()
    app, _, release = _app(pg.dsn, registry, holding=holding, acquire_timeout=0.2, health_interval=None)
    async with serving(app) as client:
        holder = asyncio.create_task(client.get("/hold"))
        await holding.wait()  # the only connection is now held, until `release` is set
        # Generous: the holder never lets go meanwhile, so only acquire_timeout can end this request.
        async with asyncio.timeout(10):
            response = await client.get("/hold", headers={"X-Request-ID": "starved-1"})
        release.set()
        assert (await holder).status_code == 200
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-request-id"] == "starved-1"
    warnings = [r for r in caplog.records if r.name == "sqlspec_ops" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "pool 'primary'" in warnings[0].getMessage()
    assert warnings[0].exc_info is None
    assert (
        registry.get_sample_value("db_client_connection_timeouts_total", {"db_client_connection_pool_name": "primary"})
        == 1
    )


async def test_app_handler_for_pool_timeout_is_kept(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """An app that handles PoolAcquireTimeout itself keeps its own answer."""
    from fastapi.responses import PlainTextResponse  # noqa: PLC0415

    from sqlspec_ops import PoolAcquireTimeout  # noqa: PLC0415

    spec = SQLSpec()
    spec.add_config(AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 1}))
    app = FastAPI()

    async def own(_request: object, _exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("busy", status_code=429)

    app.add_exception_handler(PoolAcquireTimeout, own)
    SQLSpecOps(spec, registry=registry, health_interval=None).instrument(app)
    assert app.exception_handlers[PoolAcquireTimeout] is own


async def test_readiness_refreshes_without_probes_and_budget_follows() -> None:
    """With no /ops/ready calls, database_up follows the database, and a budget unknown at startup gets computed."""
    server = PostgresServer(max_connections=20)
    server.start()
    server.stop()  # down at startup
    registry = CollectorRegistry()
    try:
        app, ops, _ = _app(server.dsn, registry, health_interval=0.3, health_timeout=0.5, workers=3)
        labels = {"db_client_connection_pool_name": "primary"}

        def up() -> float | None:
            return registry.get_sample_value("sqlspec_ops_database_up", labels)

        async with serving(app):
            assert up() == 0
            assert ops.budget is not None
            assert ops.budget.errors
            server.start()
            await eventually(lambda: up() == 1, timeout=15, what="database_up to become 1")
            await eventually(
                lambda: ops.budget is not None and not ops.budget.errors, timeout=5, what="the budget to be computed"
            )
            assert ops.budget is not None
            assert ops.budget.servers[0].verdict == "within budget"  # 3 x 1 <= 17
            assert ops.health.runs >= 2
            server.stop()
            await eventually(lambda: up() == 0, timeout=5, what="database_up to become 0")
    finally:
        server.cleanup()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prefix": "ops"}, "prefix must start with '/'"),
        ({"prefix": "/ops/"}, "prefix must start with '/'"),
        ({"health_timeout": 0}, "health_timeout must be a positive number"),
        ({"startup_timeout": -1}, "startup_timeout must be a positive number"),
        ({"acquire_timeout": 0}, "acquire_timeout must be a positive number of seconds or None"),
        ({"health_interval": 0}, "health_interval must be a positive number of seconds or None"),
        ({"replicas": 0}, "replicas must be a positive integer"),
        ({"workers": 0}, "workers must be a positive integer"),
        ({"token": "  "}, "token must be a non-empty string"),
    ],
)
def test_invalid_options_raise_a_clear_error(options: dict[str, object], message: str) -> None:
    """Each invalid option is refused at construction with a message that names it."""
    with pytest.raises(ValueError, match=message):
        SQLSpecOps(SQLSpec(), registry=CollectorRegistry(), **options)  # type: ignore[arg-type]
