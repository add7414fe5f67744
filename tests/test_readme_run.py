"""The README's Run command, executed as written in a fresh copy of the repository, serves the example app."""

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import free_port
from tests.support.processes import stop_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
_SKIP = {".venv", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "__pycache__", ".data"}
_INSTALL_TIMEOUT = 900.0


def readme_section(title: str) -> str:
    """Return the text of the README section ``## title`` (up to the next level-2 heading)."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    if match is None:
        msg = f"README.md has no '## {title}' section"
        raise AssertionError(msg)
    return match[1]


def run_command() -> str:
    """Return the one-line command of the README's Run section."""
    blocks: list[str] = re.findall(r"```bash\n(.*?)```", readme_section("Run"), flags=re.DOTALL)
    [block] = blocks
    [command] = block.strip().splitlines()
    return command


def _project_files() -> list[Path]:
    """The files a fresh clone would have (plus new, not yet committed ones that are not ignored)."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout.decode()
        return [Path(name) for name in listed.split("\0") if name and (ROOT / name).is_file()]
    files = []
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if path.is_file() and not _SKIP & set(relative.parts):
            files.append(relative)
    return files


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    """A copy of the repository without its virtualenv, caches or local databases."""
    copy = tmp_path / "sqlspec-ops"
    for relative in _project_files():
        target = copy / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    assert not (copy / ".venv").exists()
    return copy


@contextlib.contextmanager
def _shell(command: str, cwd: Path, env: dict[str, str], log: Path) -> Iterator["subprocess.Popen[bytes]"]:
    """Run ``command`` with bash in its own session; stop that session's processes on exit."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop_process(process, whole_group=True)  # bash and the app it started (same session, our child)


def _wait_for_url(process: "subprocess.Popen[bytes]", log: Path, label: str) -> str:
    deadline = time.monotonic() + _INSTALL_TIMEOUT
    pattern = re.compile(rf"^\s*{label}:\s+(http://\S+)", flags=re.MULTILINE)
    while time.monotonic() < deadline:
        output = log.read_text(errors="replace")
        match = pattern.search(output)
        if match:
            return match[1]
        if process.poll() is not None:
            msg = f"the Run command exited with {process.returncode}:\n{output[-4000:]}"
            raise AssertionError(msg)
        time.sleep(0.5)
    msg = f"the Run command printed no {label} URL in time:\n{log.read_text(errors='replace')[-4000:]}"
    raise AssertionError(msg)


def test_readme_run_command_serves_the_example_on_sqlite(fresh_copy: Path, tmp_path: Path) -> None:
    """The Run command, as written, installs the project, prints the URLs and serves /ops/live and /users."""
    command = run_command()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "ANALYTICS_DATABASE_URL", "SQLITE_DIR"}}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env["PORT"] = str(port)
    log = tmp_path / "run.log"
    with _shell(command, fresh_copy, env, log) as process:
        live_url = _wait_for_url(process, log, "live")
        assert live_url == f"http://127.0.0.1:{port}/ops/live"
        output = log.read_text()
        for label in ("ready", "metrics", "pools"):
            assert re.search(rf"{label}:\s+http://127\.0\.0\.1:{port}/ops/{label}", output), output[-2000:]
        assert f"http://127.0.0.1:{port}/users" in output
        assert "SQLite in" in output

        deadline = time.monotonic() + 60
        while True:
            try:
                live = httpx.get(live_url, timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        assert live.status_code == 200
        assert live.json() == {"status": "pass"}
        users = httpx.get(f"http://127.0.0.1:{port}/users", timeout=10)
        assert users.status_code == 200
        assert users.json() == []
        assert users.headers["x-request-id"]
    assert (fresh_copy / ".venv" / "bin" / "python").exists()
    assert (fresh_copy / "examples" / ".data" / "primary.db").exists()
