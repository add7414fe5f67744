"""The acceptance run: a real `uvicorn --workers 3` against PostgreSQL with max_connections=20."""

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.postgres import APP_PASSWORD, PostgresServer
from tests.support.processes import ServerProcess, clean_env, running_server

pytestmark = pytest.mark.slow


def _uvicorn(workers: int) -> list[str]:
    return ["uvicorn", "tests.apps.budget_app:create_app", "--factory", "--host", "127.0.0.1", "--port", "{port}",
            "--workers", str(workers)]  # fmt: skip


def _started(server: ServerProcess, workers: int) -> None:
    def all_started() -> bool:
        done = [line for line in server.json_lines() if line.get("event") == "Application startup complete."]
        return len(done) == workers

    server.wait_for(all_started, f"{workers} workers to complete startup")


def _budget_warnings(server: ServerProcess) -> list[dict[str, Any]]:
    return [
        line
        for line in server.json_lines()
        if line.get("logger") == "sqlspec_ops.budget" and line.get("level") == "warning"
    ]


def _gauges(server: ServerProcess) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(server.get("/ops/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("sqlspec_ops_connection_") or sample.name == "sqlspec_ops_workers":
                values[sample.name] = sample.value
    return values


def test_three_uvicorn_workers_warn_with_the_numbers(pg20: PostgresServer) -> None:
    """Each of the 3 workers logs one warning: demand 30, budget 17, max_size 5, workers from uvicorn's command line."""
    env = clean_env(DATABASE_URL=pg20.dsn, POOL_MIN_SIZE="1", POOL_MAX_SIZE="10")
    with running_server(_uvicorn(3), env) as server:
        _started(server, 3)
        warnings = _budget_warnings(server)
        assert len(warnings) == 3, server.output()[-4000:]  # one per worker process
        for warning in warnings:
            assert "demand 30 = 1 replica x 3 workers (uvicorn command line) x max_size 10" in warning["event"]
            assert "budget 17" in warning["event"]
            assert "set max_size to at most 5 per pool" in warning["event"]
            assert (warning["demand"], warning["budget"], warning["suggested_max_size"]) == (30, 17, 5)
            assert (warning["workers"], warning["workers_source"]) == (3, "uvicorn command line")
            assert warning["server"] == f"{pg20.host}:{pg20.port}"
        gauges = _gauges(server)
        assert gauges["sqlspec_ops_connection_demand"] == 30
        assert gauges["sqlspec_ops_connection_budget"] == 17
        assert gauges["sqlspec_ops_workers"] == 3
        assert APP_PASSWORD not in server.output()


def test_one_uvicorn_worker_does_not_warn(pg20: PostgresServer) -> None:
    """With --workers 1 the demand is 10 of 17: no budget warning."""
    env = clean_env(DATABASE_URL=pg20.dsn, POOL_MIN_SIZE="1", POOL_MAX_SIZE="10")
    with running_server(_uvicorn(1), env) as server:
        _started(server, 1)
        gauges = _gauges(server)
        assert gauges["sqlspec_ops_connection_demand"] == 10
        assert gauges["sqlspec_ops_connection_budget"] == 17
        assert gauges["sqlspec_ops_workers"] == 1
        assert _budget_warnings(server) == []
