"""The README's "Connection budget" section: its code and command run as written and print what it shows."""

import contextlib
import io
import logging
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sqlspec_ops._adapters.base import PoolSizes, PoolTarget
from sqlspec_ops._budget import build_report
from sqlspec_ops._budget_model import PoolDemand, ServerLimits
from sqlspec_ops._workers import WorkerCount
from tests.support.paths import ROOT
from tests.support.postgres import PostgresServer
from tests.support.processes import clean_env
from tests.support.readme import readme_blocks


def test_readme_python_example(pg20: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's check_pool_budget code prints demand 30 against budget 17 and exits 1."""
    (code,) = readme_blocks("Connection budget", "python")
    monkeypatch.setenv("DATABASE_URL", pg20.dsn)
    namespace: dict[str, Any] = {"__name__": "readme_connection_budget"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert exited.value.code == 1
    assert "demand:   30 = 3 x 10 (sum of max_size)" in out.getvalue()
    assert "budget:   17 = max_connections 20 - superuser_reserved_connections 3" in out.getvalue()
    assert "max_size that fits per pool: 5" in out.getvalue()


def test_readme_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    """The warning the README quotes is, word for word, what the budget logs for those numbers."""
    quoted = readme_blocks("Connection budget", "text")[0].strip()
    pool = PoolDemand(
        name="primary",
        target=PoolTarget(adapter="asyncpg", db_system="postgresql", host="127.0.0.1", port=5432, database="appdb"),
        sizes=PoolSizes(max_size=10, min_size=1, max_explicit=True, min_explicit=True),
    )
    report = build_report(
        [pool],
        workers=WorkerCount(3, "uvicorn command line"),
        replicas=1,
        limits={"127.0.0.1:5432": ServerLimits(max_connections=20, reserved=(("superuser_reserved_connections", 3),))},
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="sqlspec_ops.budget"):
        report.log_warnings()
    assert [r.getMessage() for r in caplog.records] == [quoted]


def test_readme_pipeline_command(pg20: PostgresServer) -> None:
    """The README's `sqlspec-ops check` command on the example app exits 1 and prints the quoted report."""
    (command,) = [line for line in readme_blocks("Connection budget", "bash")[0].splitlines() if line.strip()]
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).parent / argv[0])
    result = subprocess.run(
        argv, check=False, cwd=ROOT, env=clean_env(DATABASE_URL=pg20.dsn, LOG_FORMAT="off"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    expected = readme_blocks("Connection budget", "text")[1].replace("127.0.0.1:5432", f"{pg20.host}:{pg20.port}")
    assert result.stdout.startswith(expected)
