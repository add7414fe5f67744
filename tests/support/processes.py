"""Server processes for tests: start, wait until they answer, read their output, stop them by PID.

``running_server`` starts uvicorn, gunicorn, Prometheus or a shell line, never finds or stops anything by
name. Every process runs in a session of its own, so stopping it means SIGTERM to its PID (a master stops its
workers), then SIGKILL to that session's process group if it does not exit in time.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.paths import ROOT
from tests.support.postgres import free_port
from tests.support.waiting import eventually_blocking

__all__ = ("ServerProcess", "clean_env", "run_module", "running_server", "stop_process")

_WORKER_VARIABLES = ("WEB_CONCURRENCY", "UVICORN_WORKERS", "GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR")
_OUR_PROGRAMS = {"uvicorn", "gunicorn", "sqlspec-ops"}  # run from this virtualenv, whatever PATH says


def stop_process(process: "subprocess.Popen[bytes]", *, timeout: float = 20.0, whole_group: bool = False) -> int:
    """Stop a process we started with ``start_new_session=True``: SIGTERM, then SIGKILL of its process group.

    Args:
        process: The process.
        timeout: Seconds to wait after each signal.
        whole_group: Send the SIGTERM to the whole group too (a shell and the program it started).

    Returns:
        The process's exit code.

    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the session we created for it, nothing else
            process.wait(timeout=timeout)
    return process.returncode


def clean_env(**extra: str) -> dict[str, str]:
    """Return this environment without anything that sets a worker count, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _WORKER_VARIABLES}
    env.update(extra)
    return env


def run_module(module: str, *args: str, timeout: float = 600.0) -> "subprocess.CompletedProcess[str]":
    """Run ``python -m module args...`` in the repository root; fail with its stderr when it exits non-zero.

    Returns:
        The finished process (its output captured as text).

    """
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"python -m {module} exited with {done.returncode}:\n{done.stderr[-3000:]}"
    return done


class ServerProcess:
    """A started server: its process, port and URL, its output so far, and ways to wait for it."""

    def __init__(self, process: "subprocess.Popen[bytes]", port: int, log: Path, *, stop_group: bool = False) -> None:
        self.process = process
        self.stop_group = stop_group
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        """Return everything the server (all its workers) wrote so far."""
        return self.log.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """Return the output lines that are JSON objects (the apps log through configure_logging(json=True))."""
        lines = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    lines.append(value)
        return lines

    def running(self) -> bool:
        """Return True while the process runs; fail with its output once it has exited."""
        if self.process.poll() is not None:
            msg = f"the server exited with {self.process.returncode}:\n{self.output()[-4000:]}"
            raise AssertionError(msg)
        return True

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = 90.0) -> None:
        """Poll ``predicate`` until it holds; fail at once if the server exits, with its output if time runs out."""
        eventually_blocking(
            lambda: self.running() and predicate(),
            timeout=timeout,
            what=lambda: f"{what}; the server wrote:\n{self.output()[-4000:]}",
        )

    def wait_until_answers(self, url: str, timeout: float = 90.0, *, status: int = 200) -> None:
        """Wait until GET ``url`` (a path on this server, or a whole URL) answers with ``status``."""

        def answers() -> bool:
            return self.get(url).status_code == status

        eventually_blocking(
            lambda: self.running() and answers(),
            timeout=timeout,
            ignore=(httpx.TransportError,),
            what=lambda: f"{url} to answer {status}; the server wrote:\n{self.output()[-4000:]}",
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET a path or URL (a fresh connection each time, so requests spread over the workers)."""
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            return client.get(path, headers={"Connection": "close"}, **kwargs)

    def stop(self, timeout: float = 20.0) -> int:
        """Stop the server by its PID (its process group if it hangs); return its exit code."""
        return stop_process(self.process, timeout=timeout, whole_group=self.stop_group)


@contextlib.contextmanager
def running_server(
    command: Sequence[str] | str,
    env: Mapping[str, str],
    *,
    port: int | None = None,
    cwd: Path = ROOT,
    ready: str | None = None,
    ready_timeout: float = 90.0,
    log: Path | None = None,
    stop_timeout: float = 20.0,
    stop_group: bool | None = None,
) -> Iterator[ServerProcess]:
    """Start a server, wait until it answers, yield it, stop it by its PID when the block ends.

    Args:
        command: The argv (``uvicorn``, ``gunicorn`` and ``sqlspec-ops`` run from this virtualenv), or a shell
            line run with ``bash -c``. ``{port}`` is replaced by the port.
        env: The server's whole environment.
        port: The port (a free one when None).
        cwd: The working directory (the repository root when not given).
        ready: A path on the server, or a whole URL, that must answer 200 before the block starts.
        ready_timeout: Seconds the server has to get ready.
        log: Where its output goes (a temporary file when None).
        stop_timeout: Seconds to wait after each stop signal.
        stop_group: SIGTERM the whole session (bash and what it started), not only the PID. Default: True for
            a shell line (pass False when the line ``exec``s its server: then the PID is the server).

    Yields:
        The running server.

    """
    port = free_port() if port is None else port
    if stop_group is None:
        stop_group = isinstance(command, str)
    if isinstance(command, str):
        argv = ["bash", "-c", command.replace("{port}", str(port))]
    else:
        argv = [arg.replace("{port}", str(port)) for arg in command]
        if argv[0] in _OUR_PROGRAMS:
            argv[0] = str(Path(sys.executable).parent / argv[0])
    with contextlib.ExitStack() as stack:
        if log is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sqlspec-ops-serve-"))) / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                argv, cwd=cwd, env=dict(env), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = ServerProcess(process, port, log, stop_group=stop_group)
        try:
            if ready is not None:
                server.wait_until_answers(ready, ready_timeout)
            yield server
        finally:
            server.stop(stop_timeout)
