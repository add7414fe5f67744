"""The README's Run command, executed as written in a fresh copy of the repository, serves the example app."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.paths import ROOT
from tests.support.postgres import free_port
from tests.support.processes import running_server
from tests.support.readme import readme_blocks

pytestmark = pytest.mark.slow

_SKIP = {".venv", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "__pycache__", ".data"}
_INSTALL_TIMEOUT = 900.0


def run_command() -> str:
    """Return the one-line command of the README's Run section."""
    [block] = readme_blocks("Run", "bash")
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


def test_readme_run_command_serves_the_example_on_sqlite(fresh_copy: Path, tmp_path: Path) -> None:
    """The Run command, as written, installs the project, prints the URLs and serves /ops/live and /users."""
    command = run_command()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "ANALYTICS_DATABASE_URL", "SQLITE_DIR"}}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env["PORT"] = str(port)
    # bash and the app it started share a session of their own: stopping signals that session
    with running_server(command, env, port=port, cwd=fresh_copy, log=tmp_path / "run.log") as server:
        printed = re.compile(r"^\s*live:\s+(http://\S+)", flags=re.MULTILINE)
        server.wait_for(lambda: printed.search(server.output()), "the Run command to print its URLs", _INSTALL_TIMEOUT)
        match = printed.search(server.output())
        assert match is not None
        live_url = match[1]
        assert live_url == f"http://127.0.0.1:{port}/ops/live"
        output = server.output()
        for label in ("ready", "metrics", "pools"):
            assert re.search(rf"{label}:\s+http://127\.0\.0\.1:{port}/ops/{label}", output), output[-2000:]
        assert f"http://127.0.0.1:{port}/users" in output
        assert "SQLite in" in output

        server.wait_until_answers(live_url, timeout=60)
        live = httpx.get(live_url, timeout=5)
        assert live.status_code == 200
        assert live.json() == {"status": "pass"}
        users = httpx.get(f"http://127.0.0.1:{port}/users", timeout=10)
        assert users.status_code == 200
        assert users.json() == []
        assert users.headers["x-request-id"]
    assert (fresh_copy / ".venv" / "bin" / "python").exists()
    assert (fresh_copy / "examples" / ".data" / "primary.db").exists()
