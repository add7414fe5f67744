"""Under ``uvicorn --workers 2`` with ``PROMETHEUS_MULTIPROC_DIR``, the server gauges are one reading, not a sum.

Both workers read the same ``pg_stat_activity`` and each publishes what it saw; a scrape of either worker must
show each server gauge once per pool with the value the server reports (both workers' backends: four), never
the two workers' readings added up (eight).
"""

import os
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.multiworker import WORKERS, from_each_worker
from tests.support.paths import ROOT
from tests.support.postgres import PostgresServer
from tests.support.processes import running_server
from tests.support.promql import parse_samples
from tests.support.waiting import eventually

SERVER_GAUGES = (
    "sqlspec_ops_server_connections",
    "sqlspec_ops_server_other_connections",
    "sqlspec_ops_server_oldest_transaction_seconds",
    "sqlspec_ops_server_lock_waits",
)


@pytest.mark.slow
async def test_server_gauges_are_not_summed_across_workers(pg: PostgresServer, tmp_path: Path) -> None:
    """A scrape shows this app's four backends (two workers x min_size 2) once, not doubled to eight."""
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SQLSPEC_OPS_TOKEN", "WEB_CONCURRENCY")}
    env.update(SQLSPEC_OPS_TEST_DSN=pg.dsn, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "uvicorn", "tests.apps.server_view_workers:app", "--workers", str(WORKERS)]
    command += ["--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    limits = httpx.Limits(max_keepalive_connections=0)
    with running_server(command, env, log=tmp_path / "uvicorn.log", stop_timeout=30) as server:
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            await from_each_worker(client, f"{server.base_url}/ops/live", within=60, process=server.process)
            superuser = await asyncpg.connect(pg.superuser_dsn)
            try:
                backends = await superuser.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'server-view-workers'"
                )
            finally:
                await superuser.close()
            assert backends == WORKERS * 2

            async def scraped_total() -> bool:
                text = (await client.get(f"{server.base_url}/ops/metrics")).text
                samples = [(n, labels, v) for n, labels, v in parse_samples(text) if n.startswith(SERVER_GAUGES)]
                idle = [
                    v for n, labels, v in samples if n == "sqlspec_ops_server_connections" and labels["state"] == "idle"
                ]
                return idle == [float(backends)]

            await eventually(scraped_total, timeout=20, what="one idle gauge equal to the server's count")
            text = (await client.get(f"{server.base_url}/ops/metrics")).text
    for name in SERVER_GAUGES:
        series = [labels for n, labels, _ in parse_samples(text) if n == name]
        assert series, name
        keys = [tuple(sorted(labels.items())) for labels in series]
        assert len(keys) == len(set(keys)), (name, series)  # once per pool (and state), not once per worker
