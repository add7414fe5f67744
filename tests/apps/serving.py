"""Run a real Uvicorn or Gunicorn server as a subprocess for a test, and stop it by its PID afterwards."""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.postgres import free_port
from tests.support.processes import stop_process

__all__ = ("ROOT", "ServerProcess", "clean_env", "running_server")

ROOT = Path(__file__).resolve().parents[2]
_WORKER_VARIABLES = ("WEB_CONCURRENCY", "UVICORN_WORKERS", "GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR")


def clean_env(**extra: str) -> dict[str, str]:
    """Return this environment without anything that sets a worker count, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _WORKER_VARIABLES}
    env.update(extra)
    return env


class ServerProcess:
    """A started server: its port, its output so far, and a client."""

    def __init__(self, process: "subprocess.Popen[bytes]", port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        """Return everything the server (all its workers) wrote so far."""
        return self.log.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """Return the output lines that are JSON objects (the app logs through configure_logging(json=True))."""
        lines = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    lines.append(value)
        return lines

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
        """Poll ``predicate`` until it holds; fail with the server's output when it does not in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.process.poll() is not None:
                msg = f"server exited with {self.process.returncode} before {what}:\n{self.output()[-4000:]}"
                raise AssertionError(msg)
            time.sleep(0.2)
        msg = f"timed out waiting for {what}:\n{self.output()[-4000:]}"
        raise AssertionError(msg)

    def get(self, path: str) -> httpx.Response:
        """GET a path (a fresh connection each time, so requests spread over the workers)."""
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            return client.get(path, headers={"Connection": "close"})


@contextlib.contextmanager
def running_server(command: list[str], env: Mapping[str, str], *, port: int | None = None) -> Iterator[ServerProcess]:
    """Start ``command`` (``{port}`` is replaced by a free port) in the repository root; stop it on exit.

    The server gets its own session, so stopping it means SIGTERM to its PID (the master stops its workers),
    then SIGKILL to that session's process group (its workers included) if it does not exit in time.
    """
    port = free_port() if port is None else port
    argv = [arg.replace("{port}", str(port)) for arg in command]
    if argv[0] in {"uvicorn", "gunicorn", "sqlspec-ops"}:
        argv[0] = str(Path(sys.executable).parent / argv[0])
    with tempfile.TemporaryDirectory(prefix="sqlspec-ops-serve-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=dict(env), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = ServerProcess(process, port, log)
        try:
            yield server
        finally:
            stop_process(process)
