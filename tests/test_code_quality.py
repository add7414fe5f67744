"""The code stays as the project's style asks: ruff (all rules, reasoned ignores) and mypy strict."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
        ["mypy", "examples", "benchmarks", "dashboards"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-package-and-tests", "mypy-examples-benchmarks-dashboards"],
)
def test_linters_pass(command: list[str]) -> None:
    """Each linter exits 0 on the whole repository."""
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
