"""`sqlspec-ops check` (and `python -m sqlspec_ops check`) on the example app: output and exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sqlspec_ops._cli import main
from tests.support.paths import ROOT
from tests.support.postgres import APP_PASSWORD, PostgresServer, free_port
from tests.support.processes import clean_env

SCRIPT = str(Path(sys.executable).parent / "sqlspec-ops")


def _run(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    command = [SCRIPT, *args] if args[0] == "check" else list(args)
    return subprocess.run(
        command,
        check=False,
        cwd=cwd,
        env=clean_env(LOG_FORMAT="off", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_within_budget_exits_0(pg20: PostgresServer) -> None:
    """The example app's two pools of max_size 5 in one worker need 10 of 17 connections: exit 0."""
    result = _run("check", "examples.app:app", "--workers", "1", DATABASE_URL=pg20.dsn, POOL_MAX_SIZE="5")
    assert result.returncode == 0, result.stderr
    assert f"{pg20.host}:{pg20.port}: WITHIN BUDGET" in result.stdout
    assert "pool primary (asyncpg" in result.stdout
    assert "pool analytics (asyncpg" in result.stdout
    assert "demand:   10 = 1 x 10 (sum of max_size)" in result.stdout
    assert "budget:   17 = max_connections 20 - superuser_reserved_connections 3" in result.stdout
    assert APP_PASSWORD not in result.stdout + result.stderr


def test_oversubscribed_exits_1(pg20: PostgresServer) -> None:
    """Three workers x (10 + 10) = 60 against 17: exit 1, with the numbers and the max_size that fits (2)."""
    result = _run("check", "examples.app:app", "--workers", "3", DATABASE_URL=pg20.dsn)
    assert result.returncode == 1, result.stderr
    assert "OVERSUBSCRIBED" in result.stdout
    assert "demand 60 = 1 replica x 3 workers (option) x max_size 20 (pools primary 10 + analytics 10)" in result.stdout
    assert "> budget 17" in result.stdout
    assert "max_size that fits per pool: 2" in result.stdout
    assert APP_PASSWORD not in result.stdout + result.stderr


def test_unreachable_database_exits_2() -> None:
    """A DATABASE_URL nobody listens on: exit 2, the error class, and no password anywhere."""
    dsn = f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{free_port()}/appdb"
    result = _run("check", "examples.app:app", "--workers", "2", DATABASE_URL=dsn)
    assert result.returncode == 2
    assert "UNKNOWN" in result.stdout
    assert "could not read the server's limits (ConnectionRefusedError)" in result.stdout
    assert "demand:   40" in result.stdout
    assert "some servers could not be read" in result.stderr
    assert APP_PASSWORD not in result.stdout + result.stderr


def test_module_form_with_override_needs_no_server() -> None:
    """`python -m sqlspec_ops check` with --max-connections and --replicas judges without connecting."""
    dsn = f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{free_port()}/appdb"
    result = _run(
        sys.executable, "-m", "sqlspec_ops", "check", "examples.app:spec", "--workers", "2", "--replicas", "3",
        "--max-connections", "150", "--json", DATABASE_URL=dsn,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (server,) = report["servers"]
    assert (server["demand"], server["budget"], server["verdict"]) == (120, 150, "within budget")
    assert (report["replicas"], report["workers"]) == (3, {"count": 2, "source": "option"})


def test_factory_and_sqlite(tmp_path: Path) -> None:
    """A factory is called; SQLite pools are listed as having no server limit; exit 0."""
    result = _run("check", "examples.app:create_app", SQLITE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path}/primary.db: no server limit (pool primary, aiosqlite, max_size 10)" in result.stdout
    assert "1 worker (assumed)" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "examples.app"], "expected MODULE:ATTR"),
        (["check", "no_such_module_xyz:app"], "could not import 'no_such_module_xyz'"),
        (["check", "examples.app:nothing"], "has no attribute 'nothing'"),
        (["check", "json:dumps"], "calling the factory json:dumps failed"),
        (["check", "sys:version"], "is a str: expected a SQLSpec"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Targets that are not importable, missing or not an app/spec exit 2 with a message saying what to pass."""
    monkeypatch.setenv("SQLITE_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args", [[], ["check"], ["check", "examples.app:app", "--workers", "0"], ["frobnicate"]])
def test_bad_command_lines_exit_2(args: list[str]) -> None:
    """Malformed command lines are argparse usage errors (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2


def test_import_errors_are_redacted(tmp_path: Path) -> None:
    """A module failing with a DSN in its error message does not make the password appear in the output."""
    (tmp_path / "leaky_app.py").write_text(
        f'raise RuntimeError("cannot reach postgresql://app:{APP_PASSWORD}@db:5432/appdb '
        f'or host=db password={APP_PASSWORD}")\n'
    )
    result = _run("check", "leaky_app:app", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "could not import 'leaky_app': RuntimeError: cannot reach postgresql://app:***@db:5432/appdb" in result.stderr
    )
    assert "password=***" in result.stderr
    assert APP_PASSWORD not in result.stdout + result.stderr


def test_app_options_apply_unless_overridden(tmp_path: Path) -> None:
    """The app's SQLSpecOps workers/replicas/max_connections are used; command-line flags win over them."""
    (tmp_path / "configured_app.py").write_text(
        "from fastapi import FastAPI\n"
        "from sqlspec import SQLSpec\n"
        "from sqlspec.adapters.asyncpg import AsyncpgConfig\n"
        "from sqlspec_ops import SQLSpecOps\n"
        "spec = SQLSpec()\n"
        "spec.add_config(AsyncpgConfig(connection_config={'dsn': 'postgresql://app:pw@10.0.0.9:5432/db', "
        "'max_size': 5}))\n"
        "app = SQLSpecOps(spec, workers=4, replicas=2, max_connections=30).instrument(FastAPI())\n"
    )
    from_app = _run("check", "configured_app:app", cwd=tmp_path)
    assert from_app.returncode == 1, from_app.stderr
    assert "2 replicas x 4 workers (option)" in from_app.stdout
    assert "demand:   40 = 8 x 5 (sum of max_size)" in from_app.stdout
    assert "budget:   30 = max_connections override 30" in from_app.stdout
    overridden = _run("check", "configured_app:app", "--replicas", "1", "--max-connections", "25", cwd=tmp_path)
    assert overridden.returncode == 0, overridden.stderr
    assert "demand:   20 = 4 x 5" in overridden.stdout
    assert "budget:   25" in overridden.stdout
