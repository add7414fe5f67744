"""Several workers: a real ``uvicorn --workers 2`` with ``PROMETHEUS_MULTIPROC_DIR`` reports all workers' totals.

The app (``tests/apps/multiworker.py``) stamps each response with the worker's PID, so the test knows which
worker answered a scrape, and reports per worker how many acquires its startup made. Every acquire is then
accounted for: startup acquires of each worker plus one per ``/work`` request, nothing for scrapes.
"""

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.multiworker import MAX_SIZE, MIN_SIZE, WORKERS, from_each_worker, pool_totals, worker_env
from tests.support.paths import ROOT
from tests.support.postgres import APP_PASSWORD, PostgresServer
from tests.support.processes import ServerProcess, running_server
from tests.support.waiting import eventually


@contextmanager
def uvicorn_workers(dsn: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """Start the app under ``uvicorn --workers 2`` on a free loopback port with a fresh multiprocess dir."""
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    env = worker_env(dict(os.environ), dsn)
    env.update(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "uvicorn", "tests.apps.multiworker:app", "--workers", str(WORKERS)]
    command += ["--host", "127.0.0.1", "--port", "{port}", "--log-level", "info"]
    with running_server(command, env, log=tmp_path / "uvicorn.log", stop_timeout=30) as server:
        yield server, metrics_dir


@pytest.mark.slow
async def test_any_worker_reports_the_totals_of_all_live_workers(pg: PostgresServer, tmp_path: Path) -> None:
    """Scrapes of either worker sum both workers' pools and count every acquire; a killed worker drops out."""
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request spreads them over workers
    with uvicorn_workers(pg.dsn, tmp_path) as (server, metrics_dir):
        base = server.base_url
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            first = await from_each_worker(client, f"{base}/ops/live", within=60, process=server.process)

            served: Counter[int] = Counter()
            while len(served) < WORKERS or sum(served.values()) < 40:
                assert sum(served.values()) < 400, f"requests never reached both workers: {served}"
                batch = await asyncio.gather(*(client.get(f"{base}/work") for _ in range(10)))
                for response in batch:
                    assert response.status_code == 200, response.text
                    served[response.json()["pid"]] += 1
            assert set(served) == set(first)

            stats = {pid: r.json() for pid, r in (await from_each_worker(client, f"{base}/stats")).items()}
            for pid, worker in stats.items():
                assert worker["acquires"] == worker["startup_acquires"] + served[pid], worker
            acquires = sum(served.values()) + sum(w["startup_acquires"] for w in stats.values())

            scrapes = await from_each_worker(client, f"{base}/ops/metrics")
            assert set(scrapes) == set(first)
            for pid, scrape in scrapes.items():
                totals = pool_totals(scrape.text)
                assert totals["max"] == WORKERS * MAX_SIZE, (pid, totals)
                assert totals["idle_min"] == WORKERS * MIN_SIZE, (pid, totals)
                assert totals["waits"] == acquires, (pid, totals, acquires)
                assert totals["holds"] == acquires, (pid, totals, acquires)
                assert totals["pending"] == 0
                assert totals["timeouts"] == 0
                assert totals["idle"] == sum(w["idle"] for w in stats.values())
                assert (totals["idle"] or 0) + (totals["used"] or 0) == sum(w["size"] for w in stats.values())

            victim = min(first)
            os.kill(victim, signal.SIGKILL)  # a worker we started, by its PID; uvicorn starts a replacement
            survivor = max(first)
            live: dict[int, httpx.Response] = {}

            async def replaced() -> bool:
                live.update(await from_each_worker(client, f"{base}/ops/live", exclude=frozenset({victim})))
                return survivor in live and len(live) == WORKERS

            await eventually(replaced, timeout=60, what=lambda: f"a replacement worker (answering: {sorted(live)})")
            stats = {pid: r.json() for pid, r in (await from_each_worker(client, f"{base}/stats")).items()}
            (replacement,) = set(stats) - {survivor}
            acquires += stats[replacement]["startup_acquires"]
            scrapes = await from_each_worker(client, f"{base}/ops/metrics", exclude=frozenset({victim}))
            for pid, scrape in scrapes.items():
                totals = pool_totals(scrape.text)
                # the killed worker's live gauges are gone (reaped by its replacement); its counts stay
                assert totals["max"] == WORKERS * MAX_SIZE, (pid, totals)
                assert totals["idle_min"] == WORKERS * MIN_SIZE, (pid, totals)
                assert totals["waits"] == acquires, (pid, totals, acquires)
            assert not list(metrics_dir.glob(f"gauge_live*_{victim}.db"))

        assert server.stop(timeout=30) == 0
        assert not list(metrics_dir.glob("gauge_live*.db")), "workers left live gauges behind at exit"
        log = server.output()
        assert "Traceback" not in log, log[-3000:]
        assert APP_PASSWORD not in log
