"""Several workers: a real ``uvicorn --workers 2`` with ``PROMETHEUS_MULTIPROC_DIR`` reports all workers' totals.

The app (``tests/apps/multiworker.py``) stamps each response with the worker's PID, so the test knows which
worker answered a scrape, and reports per worker how many acquires its startup made. Every acquire is then
accounted for: startup acquires of each worker plus one per ``/work`` request, nothing for scrapes.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import APP_PASSWORD, PostgresServer, free_port
from tests.support.processes import stop_process
from tests.support.promql import parse_samples, sample_value

ROOT = Path(__file__).resolve().parent.parent
POOL = {"db_client_connection_pool_name": "main"}
WORKERS = 2
MIN_SIZE, MAX_SIZE = 1, 3


class Workers:
    """A running ``uvicorn --workers 2`` process tree."""

    def __init__(self, process: "subprocess.Popen[bytes]", port: int, log: Path, metrics_dir: Path) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.metrics_dir = metrics_dir

    def stop(self) -> int:
        """Stop uvicorn gracefully by its PID (it stops its workers); kill its process group if it hangs."""
        return stop_process(self.process, timeout=30)


@contextmanager
def uvicorn_workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    """Start the app under ``uvicorn --workers 2`` on a free loopback port with a fresh multiprocess dir."""
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SQLSPEC_OPS_TOKEN", "WEB_CONCURRENCY")}
    env.update(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), SQLSPEC_OPS_TEST_DSN=dsn, PYTHONPATH=str(ROOT))
    env.update(SQLSPEC_OPS_TEST_MIN_SIZE=str(MIN_SIZE), SQLSPEC_OPS_TEST_MAX_SIZE=str(MAX_SIZE))
    log = tmp_path / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "tests.apps.multiworker:app", "--workers", str(WORKERS)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        workers = Workers(process, port, log, metrics_dir)
        try:
            yield workers
        finally:
            workers.stop()


async def from_each_worker(
    client: httpx.AsyncClient,
    url: str,
    *,
    exclude: frozenset[int] = frozenset(),
    within: float = 30,
    process: "subprocess.Popen[bytes] | None" = None,
) -> dict[int, httpx.Response]:
    """GET ``url`` on fresh connections until two different live workers answered; return one answer each."""
    answers: dict[int, httpx.Response] = {}
    deadline = time.monotonic() + within
    while len(answers) < WORKERS:
        assert time.monotonic() < deadline, f"only workers {sorted(answers)} answered {url}"
        assert process is None or process.poll() is None, f"the server exited with {process.returncode}"
        try:
            batch = await asyncio.gather(*(client.get(url) for _ in range(4)))
        except httpx.TransportError:
            await asyncio.sleep(0.2)
            continue
        for response in batch:
            pid = int(response.headers["x-worker-pid"])
            if pid not in exclude and response.status_code == 200:
                answers.setdefault(pid, response)
        await asyncio.sleep(0.05)
    return answers


def pool_totals(text: str) -> dict[str, float | None]:
    """Pick the pool families of one scrape."""
    samples = parse_samples(text)

    def value(name: str, **labels: str) -> float | None:
        return sample_value(samples, name, **POOL, **labels)

    return {
        "max": value("db_client_connection_max"),
        "idle_min": value("db_client_connection_idle_min"),
        "idle": value("db_client_connection_count", db_client_connection_state="idle"),
        "used": value("db_client_connection_count", db_client_connection_state="used"),
        "pending": value("db_client_connection_pending_requests"),
        "timeouts": value("db_client_connection_timeouts_total"),
        "waits": value("db_client_connection_wait_time_seconds_count"),
        "holds": value("db_client_connection_use_time_seconds_count"),
    }


@pytest.mark.slow
async def test_any_worker_reports_the_totals_of_all_live_workers(pg: PostgresServer, tmp_path: Path) -> None:
    """Scrapes of either worker sum both workers' pools and count every acquire; a killed worker drops out."""
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request spreads them over workers
    with uvicorn_workers(pg.dsn, tmp_path) as server:
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            first = await from_each_worker(client, f"{server.base}/ops/live", within=60, process=server.process)

            served: Counter[int] = Counter()
            while len(served) < WORKERS or sum(served.values()) < 40:
                assert sum(served.values()) < 400, f"requests never reached both workers: {served}"
                batch = await asyncio.gather(*(client.get(f"{server.base}/work") for _ in range(10)))
                for response in batch:
                    assert response.status_code == 200, response.text
                    served[response.json()["pid"]] += 1
            assert set(served) == set(first)

            stats = {pid: r.json() for pid, r in (await from_each_worker(client, f"{server.base}/stats")).items()}
            for pid, worker in stats.items():
                assert worker["acquires"] == worker["startup_acquires"] + served[pid], worker
            acquires = sum(served.values()) + sum(w["startup_acquires"] for w in stats.values())

            scrapes = await from_each_worker(client, f"{server.base}/ops/metrics")
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
            deadline = time.monotonic() + 60
            while True:
                live = await from_each_worker(client, f"{server.base}/ops/live", exclude=frozenset({victim}))
                if survivor in live and len(live) == WORKERS:
                    break
                assert time.monotonic() < deadline, f"no replacement worker: {sorted(live)}"
            stats = {pid: r.json() for pid, r in (await from_each_worker(client, f"{server.base}/stats")).items()}
            (replacement,) = set(stats) - {survivor}
            acquires += stats[replacement]["startup_acquires"]
            scrapes = await from_each_worker(client, f"{server.base}/ops/metrics", exclude=frozenset({victim}))
            for pid, scrape in scrapes.items():
                totals = pool_totals(scrape.text)
                # the killed worker's live gauges are gone (reaped by its replacement); its counts stay
                assert totals["max"] == WORKERS * MAX_SIZE, (pid, totals)
                assert totals["idle_min"] == WORKERS * MIN_SIZE, (pid, totals)
                assert totals["waits"] == acquires, (pid, totals, acquires)
            assert not list(server.metrics_dir.glob(f"gauge_live*_{victim}.db"))

        assert server.stop() == 0
        assert not list(server.metrics_dir.glob("gauge_live*.db")), "workers left live gauges behind at exit"
        log = server.log.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
        assert APP_PASSWORD not in log
