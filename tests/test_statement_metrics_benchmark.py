"""The statement-overhead benchmark keeps working: its seconds-long smoke run measures every variant.

Speed itself is judged by the full run (``python -m benchmarks.statement_overhead``), never by a test.
"""

import json
from pathlib import Path

from benchmarks import statement_overhead
from tests.support.processes import run_module

VARIANTS = set(statement_overhead.VARIANTS)


def test_quick_statement_overhead_run_reports_every_variant(tmp_path: Path) -> None:
    """``--quick`` runs every variant against a throwaway PostgreSQL and writes JSON and Markdown results."""
    run_module("benchmarks.statement_overhead", "--quick", "--output", str(tmp_path), timeout=300)
    report = json.loads((tmp_path / "statement_overhead-quick.json").read_text())
    assert set(report["variants"]) == VARIANTS
    for row in report["variants"].values():
        assert row["cpu_us"] > 0
        assert row["wall_us"] > 0
        assert len(row["cpu_us_per_round"]) == report["rounds"]
    assert report["variants"]["bare"]["added_cpu_us"] == 0
    table = (tmp_path / "statement_overhead-quick.md").read_text()
    assert all(f"| {name} |" in table for name in VARIANTS)
