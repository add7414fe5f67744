"""The README's "Several workers" gunicorn recipe, run as written apart from the names and the port."""

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.multiworker import MAX_SIZE, MIN_SIZE, WORKERS, from_each_worker, pool_totals, worker_env
from tests.support.paths import ROOT
from tests.support.postgres import APP_PASSWORD, PostgresServer
from tests.support.processes import ServerProcess, running_server
from tests.support.readme import readme_blocks
from tests.support.waiting import eventually


@contextmanager
def run_recipe(preload: bool, dsn: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """Run the README's shell lines (names, port and worker count substituted); yield gunicorn and its dir."""
    (shell,) = readme_blocks("Several workers", "bash")
    (conf,) = readme_blocks("Several workers", "python")
    (tmp_path / "gunicorn.conf.py").write_text(conf)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_4242.db").write_bytes(b"left over from an earlier deploy")  # unreadable if not wiped
    app = "tests.apps.multiworker:app" + (" --preload" if preload else "")
    replacements = {
        "/run/app/prometheus": str(metrics_dir),
        "gunicorn app:app": f"{Path(sys.executable).parent / 'gunicorn'} {app}",
        "-c gunicorn.conf.py": f"-c {tmp_path / 'gunicorn.conf.py'}",
        "-w 4": f"-w {WORKERS}",
        "0.0.0.0:8000": "127.0.0.1:{port}",
    }
    for old, new in replacements.items():
        assert old in shell, old
        shell = shell.replace(old, new)
    env = worker_env(dict(os.environ), dsn)
    env.update(PYTHONPATH=str(ROOT))
    # `exec` in the recipe makes the shell's PID gunicorn's master
    with running_server(shell, env, log=tmp_path / "gunicorn.log", stop_timeout=30, stop_group=False) as master:
        yield master, metrics_dir


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["fork-after-import", "preload"])
async def test_readme_gunicorn_recipe(preload: bool, pg: PostgresServer, tmp_path: Path) -> None:
    """Gunicorn run by the README's lines: totals of live workers, a killed worker's gauges removed by child_exit."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with run_recipe(preload, pg.dsn, tmp_path) as (server, metrics_dir):
        master, base = server.process, server.base_url
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            first = await from_each_worker(client, f"{base}/ops/live", within=60, process=master)
            assert master.pid not in first
            for _ in range(4):
                await asyncio.gather(*(client.get(f"{base}/work") for _ in range(10)))
            stats = {pid: r.json() for pid, r in (await from_each_worker(client, f"{base}/stats")).items()}
            acquires = sum(worker["acquires"] for worker in stats.values())
            for scrape in (await from_each_worker(client, f"{base}/ops/metrics")).values():
                totals = pool_totals(scrape.text)
                assert totals["max"] == WORKERS * MAX_SIZE, totals
                assert totals["idle_min"] == WORKERS * MIN_SIZE, totals
                assert totals["waits"] == acquires, (totals, acquires)

            victim = min(first)
            os.kill(victim, signal.SIGKILL)  # a worker of the gunicorn we started
            await eventually(  # child_exit removes them
                lambda: not list(metrics_dir.glob(f"gauge_live*_{victim}.db")),
                timeout=30,
                what="child_exit to remove the killed worker's live gauges",
            )
            live = await from_each_worker(client, f"{base}/ops/live", exclude=frozenset({victim}), within=60)
            assert max(first) in live
            scrapes = await from_each_worker(client, f"{base}/ops/metrics", exclude=frozenset({victim}))
            for scrape in scrapes.values():
                assert pool_totals(scrape.text)["max"] == WORKERS * MAX_SIZE
    text = server.output()
    assert master.returncode == 0, text[-3000:]
    assert not (metrics_dir / "counter_4242.db").exists()
    leftover = {int(path.stem.rsplit("_", 1)[1]) for path in metrics_dir.glob("gauge_live*.db")}
    # with --preload the master imported the app: its files hold only zeros and it never serves
    assert leftover <= {master.pid}, "workers left live gauges behind after a clean shutdown"
    assert "Traceback" not in text, text[-3000:]
    assert APP_PASSWORD not in text
