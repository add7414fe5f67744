"""Every config shape SQLSpec's plugins accept gets its plugin sessions measured under the right pool (real PostgreSQL).

sqlspec-ops maps a session key to its config from the plugin's own config states, so it agrees with SQLSpec on
``extension_config["fastapi"]`` (FastAPI plugin), ``["starlette"]`` (Starlette plugin; ignored by the FastAPI
one), no extension config, custom keys and several configs.
"""

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig, AsyncpgDriver
from sqlspec.extensions.fastapi import SQLSpecPlugin
from sqlspec.extensions.starlette import SQLSpecPlugin as StarlettePlugin
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sqlspec_ops import SQLSpecOps
from tests.support.asgi import serving
from tests.support.postgres import PostgresServer
from tests.support.statements import duration_counts, label_sum


def config(pg: PostgresServer, bind_key: str, extension_config: dict[str, Any] | None = None) -> AsyncpgConfig:
    """An asyncpg config of one connection on the test server."""
    return AsyncpgConfig(
        connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 1},
        bind_key=bind_key,
        extension_config=extension_config or {},
    )


def measured(registry: CollectorRegistry, pool: str) -> float:
    """Statements counted for a pool."""
    return label_sum(duration_counts(registry), db_client_connection_pool_name=pool)


@pytest.mark.parametrize(
    ("extension_config", "key"),
    [
        (None, None),
        (None, "db_session"),
        ({"fastapi": {"session_key": "custom"}}, "custom"),
        # the FastAPI plugin reads only "fastapi": a "starlette" section leaves the key at its default
        ({"starlette": {"session_key": "legacy"}}, "db_session"),
        ({"starlette": {"session_key": "legacy"}}, None),
        ({"fastapi": {"session_key": "api"}, "starlette": {"session_key": "legacy"}}, "api"),
    ],
    ids=[
        "none-default",
        "none-explicit",
        "fastapi-key",
        "starlette-section-default-key",
        "starlette-section-none",
        "both-sections",
    ],
)
async def test_fastapi_plugin_sessions_are_measured_for_every_single_config_shape(
    pg: PostgresServer, registry: CollectorRegistry, extension_config: dict[str, Any] | None, key: str | None
) -> None:
    """One config, whatever its extension_config: the plugin session's statement is counted under its pool."""
    spec = SQLSpec()
    spec.add_config(config(pg, "main", extension_config))
    app = FastAPI()
    plugin = SQLSpecPlugin(spec, app)

    @app.get("/one")
    async def one(db: Annotated[AsyncpgDriver, Depends(plugin.provide_session(key))]) -> int:
        return int(await db.select_value("SELECT 1"))

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/one")).json() == 1
    assert measured(registry, "main") == 1


async def test_fastapi_plugin_with_several_configs_attributes_each_session(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """Three configs (default key, a fastapi key, a starlette-only section): each session counts under its own pool."""
    spec = SQLSpec()
    spec.add_config(config(pg, "primary"))
    spec.add_config(
        config(pg, "reports", {"fastapi": {"session_key": "reports_db", "connection_key": "rc", "pool_key": "rp"}})
    )
    # on the FastAPI plugin its keys come from "fastapi" only, so this config needs distinct ones there too
    spec.add_config(
        config(
            pg,
            "legacy",
            {
                "starlette": {"session_key": "ignored"},
                "fastapi": {"session_key": "legacy_db", "connection_key": "lc", "pool_key": "lp"},
            },
        )
    )
    app = FastAPI()
    plugin = SQLSpecPlugin(spec, app)

    @app.get("/all")
    async def every(
        primary: Annotated[AsyncpgDriver, Depends(plugin.provide_session())],
        reports: Annotated[AsyncpgDriver, Depends(plugin.provide_session("reports_db"))],
        legacy: Annotated[AsyncpgDriver, Depends(plugin.provide_session("legacy_db"))],
    ) -> int:
        total = int(await primary.select_value("SELECT 1"))
        for _ in range(2):
            total += int(await reports.select_value("SELECT 1"))
        for _ in range(3):
            total += int(await legacy.select_value("SELECT 1"))
        return total

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/all")).json() == 6
    assert (measured(registry, "primary"), measured(registry, "reports"), measured(registry, "legacy")) == (1, 2, 3)


@pytest.mark.parametrize("key", [None, "legacy"])
async def test_starlette_plugin_sessions_on_a_plain_starlette_app_are_measured(
    pg: PostgresServer, registry: CollectorRegistry, key: str | None
) -> None:
    """SQLSpec's Starlette plugin (a class with __slots__) on a plain Starlette app: its sessions are counted too."""
    spec = SQLSpec()
    spec.add_config(
        config(pg, "other", {"starlette": {"session_key": "other_db", "connection_key": "oc", "pool_key": "op"}})
    )
    spec.add_config(
        config(pg, "main", {"starlette": {"session_key": "legacy", "connection_key": "mc", "pool_key": "mp"}})
    )
    spec.add_config(config(pg, "main2"))  # not asked for: proves the key picks the right one
    plugin = StarlettePlugin(spec)

    async def one(request: Request) -> JSONResponse:
        db = plugin.get_session(request, key)
        return JSONResponse(await db.select_value("SELECT 1"))

    app = Starlette(routes=[Route("/one", one)])
    plugin.init_app(app)
    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/one")).json() == 1
    pool = "other" if key is None else "main"
    assert measured(registry, pool) == 1
    assert sum(duration_counts(registry).values()) == 1
