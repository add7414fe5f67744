"""The budget check at app startup: the warnings, the gauges, /ops/pools, and a database that is down."""

import logging

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig

from sqlspec_ops import SQLSpecOps
from tests.support.asgi import serving
from tests.support.network import silent_server
from tests.support.postgres import APP_PASSWORD, PostgresServer


def _app(dsn: str, registry: CollectorRegistry, *, min_size: int = 1, **options: object) -> tuple[FastAPI, SQLSpecOps]:
    spec = SQLSpec()
    spec.add_config(
        AsyncpgConfig(connection_config={"dsn": dsn, "max_size": 10, "min_size": min_size}, bind_key="primary")
    )
    app = FastAPI()
    ops = SQLSpecOps(spec, registry=registry, **options)  # type: ignore[arg-type]
    return ops.instrument(app), ops


def _budget_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sqlspec_ops.budget" and r.levelno == logging.WARNING]


def _our_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Warnings sqlspec-ops logged (the drivers' own retry warnings are theirs, not ours)."""
    return [r for r in caplog.records if r.name.startswith("sqlspec_ops") and r.levelno >= logging.WARNING]


async def test_oversubscribed_startup_warns_once_and_publishes(
    pg20: PostgresServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Three workers x max_size 10 against budget 17: one structured warning, the gauges, the /ops/pools verdict."""
    server = f"{pg20.host}:{pg20.port}"
    app, ops = _app(pg20.dsn, registry, workers=3)
    caplog.set_level(logging.INFO)
    async with serving(app) as client:
        (record,) = _budget_warnings(caplog)
        message = record.getMessage()
        assert f"connection budget exceeded on {server}: demand 30" in message
        assert "3 workers (option)" in message
        assert "budget 17 (max_connections 20 - superuser_reserved_connections 3)" in message
        assert "set max_size to at most 5 per pool" in message
        fields = record.extra_fields  # type: ignore[attr-defined]
        assert fields["server"] == server
        assert fields["pools"] == ["primary"]
        assert (fields["demand"], fields["budget"], fields["suggested_max_size"]) == (30, 17, 5)
        assert (fields["workers"], fields["workers_source"], fields["replicas"]) == (3, "option", 1)

        assert registry.get_sample_value("sqlspec_ops_connection_demand", {"server": server}) == 30
        assert registry.get_sample_value("sqlspec_ops_connection_budget", {"server": server}) == 17
        assert registry.get_sample_value("sqlspec_ops_workers") == 3
        metrics = (await client.get("/ops/metrics")).text
        assert f'sqlspec_ops_connection_demand{{server="{server}"}} 30.0' in metrics

        body = (await client.get("/ops/pools")).json()
        (pool,) = body["pools"]
        assert pool["budget"]["verdict"] == "oversubscribed"
        assert (pool["budget"]["demand"], pool["budget"]["budget"], pool["budget"]["max_size_that_fits"]) == (30, 17, 5)
        assert body["budget"]["oversubscribed"] is True
        assert APP_PASSWORD not in str(body)

        await ops.lifecycle._check_budget()  # computed once per process: a second call neither reads nor warns again
        assert len(_budget_warnings(caplog)) == 1


async def test_fitting_startup_does_not_warn(
    pg20: PostgresServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """One worker x max_size 10 against budget 17: no budget warning, verdict "within budget"."""
    server = f"{pg20.host}:{pg20.port}"
    app, _ = _app(pg20.dsn, registry, workers=1)
    async with serving(app) as client:
        assert _budget_warnings(caplog) == []
        assert registry.get_sample_value("sqlspec_ops_connection_demand", {"server": server}) == 10
        assert registry.get_sample_value("sqlspec_ops_connection_budget", {"server": server}) == 17
        body = (await client.get("/ops/pools")).json()
        assert body["pools"][0]["budget"]["verdict"] == "within budget"


async def test_min_size_demand_gets_its_own_warning(
    pg20: PostgresServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Three workers opening min_size 7 (21 > 17) get a separate "deploy will fail at startup" warning."""
    app, _ = _app(pg20.dsn, registry, min_size=7, workers=3)
    async with serving(app):
        exceeded, min_size = _budget_warnings(caplog)
        assert "connection budget exceeded" in exceeded.getMessage()
        assert "the deploy will fail at startup" in min_size.getMessage()
        assert "21 = 1 replica x 3 workers (option) x min_size 7 (pool primary) > budget 17" in min_size.getMessage()
        assert min_size.extra_fields["deploy_fails_at_startup"] is True  # type: ignore[attr-defined]


async def test_override_and_replicas_are_used(
    pg20: PostgresServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """The max_connections option is the budget as given and replicas multiply the demand."""
    server = f"{pg20.host}:{pg20.port}"
    app, _ = _app(pg20.dsn, registry, workers=2, replicas=3, max_connections=50)
    async with serving(app):
        (record,) = _budget_warnings(caplog)
        assert "demand 60 = 3 replicas x 2 workers (option)" in record.getMessage()
        assert "max_connections override 50" in record.getMessage()
        assert registry.get_sample_value("sqlspec_ops_connection_budget", {"server": server}) == 50


async def test_database_down_at_startup(registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    """A stopped PostgreSQL does not stop startup: one clear warning, /ops/ready fails, /ops/live passes."""
    stopped = PostgresServer(max_connections=20)
    stopped.start()
    stopped.stop()
    try:
        server = f"{stopped.host}:{stopped.port}"
        app, ops = _app(stopped.dsn, registry, workers=2, health_timeout=1.0)
        caplog.set_level(logging.INFO)
        async with serving(app) as client:
            (record,) = _our_warnings(caplog)
            assert record.getMessage() == (
                "readiness check of pool primary failing (ConnectionRefusedError): /ops/ready answers 503 until "
                "it passes; the app keeps serving and retries on use"
            )
            assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.WARNING)
            assert all(APP_PASSWORD not in r.getMessage() for r in caplog.records)
            assert ops.budget is not None
            assert ops.budget.exit_code == 2

            ready = await client.get("/ops/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "fail"
            assert (await client.get("/ops/live")).status_code == 200
            pools = (await client.get("/ops/pools")).json()
            assert pools["pools"][0]["budget"]["verdict"] == "unknown"
            assert registry.get_sample_value("sqlspec_ops_connection_demand", {"server": server}) == 20
            assert registry.get_sample_value("sqlspec_ops_connection_budget", {"server": server}) is None
    finally:
        stopped.cleanup()


@pytest.mark.parametrize(
    ("options", "verdict", "message"),
    [
        ({}, "unknown", "startup checks did not finish within startup_timeout=1.0s; serving anyway"),
        ({"max_connections": 10}, "oversubscribed", "demand 20 = 1 replica x 2 workers (option)"),
    ],
)
async def test_silent_database_at_startup(
    options: dict[str, int],
    verdict: str,
    message: str,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that accepts TCP and never answers: startup ends after startup_timeout with a budget verdict."""
    with silent_server() as port:
        server = f"127.0.0.1:{port}"
        dsn = f"postgresql://app:{APP_PASSWORD}@{server}/appdb"
        app, ops = _app(dsn, registry, workers=2, startup_timeout=1.0, health_timeout=0.5, **options)
        async with serving(app) as client:
            records = _our_warnings(caplog)
            assert any(message in r.getMessage() for r in records), [r.getMessage() for r in records]
            assert len(records) == (1 if verdict == "unknown" else 2)  # + the oversubscription finding
            assert ops.budget is not None
            assert ops.budget.servers[0].verdict == verdict
            assert registry.get_sample_value("sqlspec_ops_connection_demand", {"server": server}) == 20
            assert (await client.get("/ops/live")).status_code == 200
            assert (await client.get("/ops/pools")).json()["pools"][0]["budget"]["verdict"] == verdict
