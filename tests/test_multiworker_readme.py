"""The README's "Several workers" gunicorn recipe, run as written apart from the names and the port."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import APP_PASSWORD, PostgresServer, free_port
from tests.test_multiworker import MAX_SIZE, MIN_SIZE, ROOT, WORKERS, from_each_worker, pool_totals

README = ROOT / "README.md"


def recipe() -> tuple[str, str]:
    """Return the README's shell lines and its gunicorn.conf.py."""
    text = README.read_text().split("\n## Several workers\n", 1)[1].split("\n## ", 1)[0]
    (shell,) = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    (conf,) = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    return str(shell), str(conf)


@contextmanager
def run_recipe(preload: bool, dsn: str, tmp_path: Path) -> "Iterator[tuple[subprocess.Popen[bytes], str, Path]]":
    """Run the README's shell lines (names, port and worker count substituted); yield master, URL and dir."""
    shell, conf = recipe()
    (tmp_path / "gunicorn.conf.py").write_text(conf)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_4242.db").write_bytes(b"left over from an earlier deploy")  # unreadable if not wiped
    port = free_port()
    app = "tests.apps.multiworker:app" + (" --preload" if preload else "")
    replacements = {
        "/run/app/prometheus": str(metrics_dir),
        "gunicorn app:app": f"{Path(sys.executable).parent / 'gunicorn'} {app}",
        "-c gunicorn.conf.py": f"-c {tmp_path / 'gunicorn.conf.py'}",
        "-w 4": f"-w {WORKERS}",
        "0.0.0.0:8000": f"127.0.0.1:{port}",
    }
    for old, new in replacements.items():
        assert old in shell, old
        shell = shell.replace(old, new)
    env = {k: v for k, v in os.environ.items() if k not in ("SQLSPEC_OPS_TOKEN", "WEB_CONCURRENCY")}
    env.update(SQLSPEC_OPS_TEST_DSN=dsn, PYTHONPATH=str(ROOT))
    env.update(SQLSPEC_OPS_TEST_MIN_SIZE=str(MIN_SIZE), SQLSPEC_OPS_TEST_MAX_SIZE=str(MAX_SIZE))
    with (tmp_path / "gunicorn.log").open("wb") as out:
        # `exec` in the recipe makes this PID gunicorn's master
        master = subprocess.Popen(
            ["bash", "-c", shell], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield master, f"http://127.0.0.1:{port}", metrics_dir
        finally:
            if master.poll() is None:
                master.send_signal(signal.SIGTERM)
                try:
                    master.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(master.pid, signal.SIGKILL)  # the group we created for it
                    master.wait()


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["fork-after-import", "preload"])
async def test_readme_gunicorn_recipe(preload: bool, pg: PostgresServer, tmp_path: Path) -> None:
    """Gunicorn run by the README's lines: totals of live workers, a killed worker's gauges removed by child_exit."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with run_recipe(preload, pg.dsn, tmp_path) as (master, base, metrics_dir):
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
            deadline = time.monotonic() + 30
            while list(metrics_dir.glob(f"gauge_live*_{victim}.db")):  # child_exit removes them
                assert time.monotonic() < deadline, "the killed worker's live gauges stayed"
                await asyncio.sleep(0.1)
            live = await from_each_worker(client, f"{base}/ops/live", exclude=frozenset({victim}), within=60)
            assert max(first) in live
            scrapes = await from_each_worker(client, f"{base}/ops/metrics", exclude=frozenset({victim}))
            for scrape in scrapes.values():
                assert pool_totals(scrape.text)["max"] == WORKERS * MAX_SIZE
    text = (tmp_path / "gunicorn.log").read_text(errors="replace")
    assert master.returncode == 0, text[-3000:]
    assert not (metrics_dir / "counter_4242.db").exists()
    leftover = {int(path.stem.rsplit("_", 1)[1]) for path in metrics_dir.glob("gauge_live*.db")}
    # with --preload the master imported the app: its files hold only zeros and it never serves
    assert leftover <= {master.pid}, "workers left live gauges behind after a clean shutdown"
    assert "Traceback" not in text, text[-3000:]
    assert APP_PASSWORD not in text
