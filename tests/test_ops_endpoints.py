"""The /ops endpoints: token, exposition formats, /ops/pools, unsupported adapters, and reads that open nothing."""

import logging
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.adapters.sqlite import SqliteConfig
from sqlspec.extensions.fastapi import SQLSpecPlugin

from sqlspec_ops import SQLSpecOps
from sqlspec_ops._adapters.proxy import InstrumentedPool
from sqlspec_ops._adapters.registry import adapter_for
from tests.support.asgi import serving
from tests.support.postgres import APP_PASSWORD, PostgresServer
from tests.support.promql import parse_samples, sample_value

TOKEN = "ops-t0ken-for-tests"  # noqa: S105 - a test credential

POOL_FAMILIES = (
    "db_client_connection_count",
    "db_client_connection_max",
    "db_client_connection_idle_min",
    "db_client_connection_pending_requests",
    "db_client_connection_timeouts_total",
    "db_client_connection_wait_time_seconds_count",
    "db_client_connection_use_time_seconds_count",
)


def asyncpg_app(pg: PostgresServer, registry: CollectorRegistry, **options: Any) -> tuple[FastAPI, SQLSpecOps, Any]:
    """Build an instrumented app with one asyncpg pool named ``main``."""
    spec = SQLSpec()
    config = spec.add_config(
        AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 3}, bind_key="main")
    )
    ops = SQLSpecOps(spec, registry=registry, **options)
    app = FastAPI()
    ops.instrument(app)
    return app, ops, config


@pytest.mark.parametrize("source", ["option", "environment"])
async def test_token_guards_metrics_and_pools_but_not_the_probes(
    source: str, pg: PostgresServer, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the bearer token (or with a wrong one) /metrics and /pools answer 401; /live and /ready stay open."""
    if source == "environment":
        monkeypatch.setenv("SQLSPEC_OPS_TOKEN", TOKEN)
        app, _, _ = asyncpg_app(pg, registry)
    else:
        monkeypatch.delenv("SQLSPEC_OPS_TOKEN", raising=False)
        app, _, _ = asyncpg_app(pg, registry, token=TOKEN)
    async with serving(app) as client:
        wrong = [
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
        ]
        for path in ("/ops/metrics", "/ops/pools"):
            for headers in wrong:
                response = await client.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert TOKEN not in response.text
                assert "db_client" not in response.text
            ok = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200
            ok = await client.get(path, headers={"Authorization": f"bearer  {TOKEN}"})
            assert ok.status_code == 200
        assert (await client.get("/ops/live")).status_code == 200
        assert (await client.get("/ops/ready")).status_code == 200
        assert (await client.get("/ops/health")).status_code == 200


async def test_metrics_speak_prometheus_text_and_openmetrics(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """The exposition is Prometheus text by default and OpenMetrics when the scraper asks for it."""
    app, _, _ = asyncpg_app(pg, registry)
    async with serving(app) as client:
        plain = await client.get("/ops/metrics")
        assert plain.status_code == 200
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = parse_samples(plain.text)
        names = {name for name, labels, _ in samples if labels.get("db_client_connection_pool_name") == "main"}
        assert set(POOL_FAMILIES) <= names, set(POOL_FAMILIES) - names
        assert sample_value(samples, "db_client_connection_max", db_client_connection_pool_name="main") == 3
        assert sample_value(samples, "db_client_connection_idle_min", db_client_connection_pool_name="main") == 1
        assert sample_value(samples, "sqlspec_ops_database_up", db_client_connection_pool_name="main") == 1
        states = {
            labels["db_client_connection_state"] for name, labels, _ in samples if name == "db_client_connection_count"
        }
        assert states == {"idle", "used"}

        scraper_accept = (
            "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
            "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
        )
        openmetrics = await client.get("/ops/metrics", headers={"Accept": scraper_accept})
        assert openmetrics.status_code == 200
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.endswith("# EOF\n")
        assert "# TYPE db_client_connection_timeouts counter" in openmetrics.text
        assert 'db_client_connection_timeouts_total{db_client_connection_pool_name="main"} 0.0' in openmetrics.text


async def test_pools_report_describes_each_pool_without_credentials(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """/ops/pools names each pool, its target, sizes, live state, percentiles, timeouts and budget verdict."""
    spec = SQLSpec()
    config = spec.add_config(AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 3}))
    ops = SQLSpecOps(spec, registry=registry)
    app = FastAPI()
    ops.instrument(app)

    @app.get("/work")
    async def work() -> dict[str, int]:
        async with spec.provide_session(config) as db:
            return {"one": await db.select_value("SELECT 1")}

    async with serving(app) as client:
        for _ in range(4):
            assert (await client.get("/work")).status_code == 200
        response = await client.get("/ops/pools")
        assert response.status_code == 200
        body = response.json()
        (entry,) = body["pools"]
        target = f"127.0.0.1:{pg.port}/appdb"
        assert entry["name"] == target  # no bind_key: host:port/database, as the conventions say
        assert entry["target"] == target
        assert entry["adapter"] == "asyncpg"
        assert entry["supported"] is True
        assert (entry["min_size"], entry["max_size"]) == (1, 3)
        assert entry["size"] == entry["idle"] + entry["used"]
        assert entry["used"] == 0
        assert entry["pending"] == 0
        assert entry["timeouts"] == 0
        assert entry["acquires"] >= 4
        for key in ("acquire_wait_ms", "hold_time_ms"):
            assert set(entry[key]) >= {"p50", "p95", "p99"}
            assert entry[key]["p50"] <= entry[key]["p95"] <= entry[key]["p99"]
        assert entry["budget"]  # the connection-budget verdict for this server
        assert APP_PASSWORD not in response.text
        assert "app:" not in response.text
        gauge = registry.get_sample_value(
            "db_client_connection_count",
            {"db_client_connection_pool_name": target, "db_client_connection_state": "idle"},
        )
        assert gauge == entry["idle"]


async def test_reading_metrics_and_pools_never_creates_a_pool(
    pg: PostgresServer, superuser: asyncpg.Connection, registry: CollectorRegistry
) -> None:
    """Scraping an app whose pools were never used (startup not run) leaves the pool uncreated."""
    spec = SQLSpec()
    config = spec.add_config(
        AsyncpgConfig(
            connection_config={
                "dsn": pg.dsn,
                "min_size": 2,
                "max_size": 2,
                "server_settings": {"application_name": "never-opened"},
            },
            bind_key="main",
        )
    )
    ops = SQLSpecOps(spec, registry=registry)
    app = FastAPI()
    SQLSpecPlugin(spec, app)  # its per-request connection middleware must not run for /ops paths
    ops.instrument(app)
    proxy = config.connection_instance
    assert isinstance(proxy, InstrumentedPool)
    transport = httpx.ASGITransport(app=app)  # no lifespan: nothing has opened the pool
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for path in ("/ops/metrics", "/ops/pools", "/ops/live", "/ops/metrics"):
            assert (await client.get(path)).status_code == 200
        assert config.connection_instance is proxy
        assert not proxy.is_open
        assert proxy.inner is None
        count = await superuser.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'never-opened'"
        )
        assert count == 0
        pools = (await client.get("/ops/pools")).json()["pools"]
        assert pools[0]["open"] is False
        assert pools[0]["size"] == 0


def test_each_supported_config_class_finds_the_adapter_that_names_it() -> None:
    """The registry's class paths match the configs SQLSpec has and the adapter each module declares for them."""
    from sqlspec.adapters.asyncmy import AsyncmyConfig  # noqa: PLC0415
    from sqlspec.adapters.psycopg import PsycopgAsyncConfig  # noqa: PLC0415

    for config_class, name in (
        (AsyncpgConfig, "asyncpg"),
        (PsycopgAsyncConfig, "psycopg"),
        (AsyncmyConfig, "asyncmy"),
        (AiosqliteConfig, "aiosqlite"),
    ):
        adapter = adapter_for(config_class(connection_config={}))
        assert adapter is not None, config_class
        assert adapter.name == name
        assert adapter.config_class == f"{config_class.__module__}.{config_class.__qualname__}"
    assert adapter_for(SqliteConfig(connection_config={})) is None


async def test_unsupported_adapter_is_reported_by_name_and_nothing_breaks(
    pg: PostgresServer, registry: CollectorRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLSpec's sync SqliteConfig appears in /ops/pools as unsupported and /ops/ready says it was not checked."""
    spec = SQLSpec()
    spec.add_config(AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 2}, bind_key="main"))
    lite = spec.add_config(SqliteConfig(connection_config={"database": str(tmp_path / "sync.db")}, bind_key="lite"))
    ops = SQLSpecOps(spec, registry=registry)
    app = FastAPI()
    ops.instrument(app)

    @app.get("/lite")
    def use_sqlite() -> dict[str, int]:
        with spec.provide_session(lite) as db:
            return {"one": db.select_value("SELECT 1")}

    caplog.set_level(logging.WARNING)
    async with serving(app) as client:
        assert any("does not support SqliteConfig" in r.getMessage() for r in caplog.records)
        assert (await client.get("/lite")).json() == {"one": 1}
        pools = {p["name"]: p for p in (await client.get("/ops/pools")).json()["pools"]}
        assert pools["lite"]["supported"] is False
        assert pools["lite"]["adapter"] == "SqliteConfig"
        assert "not support" in pools["lite"]["note"]
        assert pools["main"]["supported"] is True
        ready = await client.get("/ops/ready")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "warn"
        assert body["checks"]["main:connections"][0]["status"] == "pass"
        assert body["checks"]["lite:connections"][0]["status"] == "warn"
        assert "SqliteConfig" in body["checks"]["lite:connections"][0]["output"]
        metrics = await client.get("/ops/metrics")
        assert metrics.status_code == 200
        assert 'db_client_connection_pool_name="lite"' not in metrics.text
        assert registry.get_sample_value("sqlspec_ops_database_up", {"db_client_connection_pool_name": "lite"}) is None


async def test_aiosqlite_max_size_is_called_out(
    registry: CollectorRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An aiosqlite config sized with max_size (which SQLSpec passes to sqlite3.connect) is reported clearly."""
    spec = SQLSpec()
    spec.add_config(
        AiosqliteConfig(connection_config={"database": str(tmp_path / "a.db"), "max_size": 3}, bind_key="lite")
    )
    ops = SQLSpecOps(spec, registry=registry, health_timeout=0.5, startup_timeout=1.0)
    app = FastAPI()
    ops.instrument(app)
    caplog.set_level(logging.WARNING)
    async with serving(app) as client:
        warnings = [r.getMessage() for r in caplog.records if "pool_size" in r.getMessage()]
        assert warnings, [r.getMessage() for r in caplog.records]
        assert "max_size" in warnings[0]
        assert "lite" in warnings[0]
        (entry,) = (await client.get("/ops/pools")).json()["pools"]
        assert any("'pool_size', not 'max_size'" in problem for problem in entry["problems"])
        assert entry["sizes_from"]["max_size"] == "driver default"
        started = time.perf_counter()
        ready = await client.get("/ops/ready")
        assert time.perf_counter() - started < 0.5 + 0.5
        assert ready.status_code == 503


@pytest.mark.parametrize(
    "names",
    [
        ("app_requests", "route"),  # the legacy character set: the fast OpenMetrics path
        ("app.requests", "route"),  # a dotted metric name: the negotiated escaping is used
        ("app_requests", "z.route"),  # a dotted label name after a legacy one
    ],
)
def test_openmetrics_render_matches_prometheus_client(names: tuple[str, str]) -> None:
    """/ops/metrics' OpenMetrics body is byte for byte what prometheus_client's negotiated encoder writes."""
    from prometheus_client import Counter  # noqa: PLC0415
    from prometheus_client.exposition import choose_encoder  # noqa: PLC0415

    from sqlspec_ops._metrics import metrics_for, render  # noqa: PLC0415

    registry = CollectorRegistry()
    metrics = metrics_for(registry)
    metrics.operation_duration.labels("postgresql", "SELECT", "main", "").observe(0.002)
    metric, label = names
    Counter(metric, "An app metric.", ["a", label], registry=registry).labels("x", 'v"1,"').inc()
    accept = "application/openmetrics-text; version=1.0.0"
    encoder, content_type = choose_encoder(accept)
    assert render(registry, accept) == (encoder(registry), content_type)
