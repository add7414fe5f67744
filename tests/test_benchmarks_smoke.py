"""The HTTP and render benchmarks keep working: their seconds-long smoke runs measure every variant.

Speed is judged by the full runs (``python -m benchmarks.throughput`` / ``benchmarks.render``), never by a test.
"""

import json
from pathlib import Path

import pytest

from benchmarks import request_path
from tests.support.processes import run_module


@pytest.mark.slow
def test_quick_throughput_run_measures_every_variant(tmp_path: Path) -> None:
    """``--quick`` serves every variant with uvicorn, drives both endpoints with wrk and reports ratios to bare."""
    run_module("benchmarks.throughput", "--quick", "--output", str(tmp_path))
    data = json.loads((tmp_path / "http-quick.json").read_text())
    summary = data["throughput"]["summary"]
    assert set(summary) == {"bare", "ops", "ops_tracing", "ops_traced", "anchors"}
    for variant, endpoints in summary.items():
        for name in ("users", "ping"):
            assert endpoints[name]["rps"] > 0, (variant, name)
            assert endpoints[name]["non_2xx"] == 0, (variant, name)
            assert endpoints[name]["cpu_us"] > 0, (variant, name)  # the server's own CPU was read over the run
    assert summary["bare"]["users"]["ratio_to_bare"] == 1.0
    assert "| ops |" in (tmp_path / "http-quick.md").read_text()


def test_quick_render_run_times_both_formats(tmp_path: Path) -> None:
    """``--quick`` builds the 8-pool, 50-route app and times /ops/metrics in both exposition formats."""
    run_module("benchmarks.render", "--quick", "--output", str(tmp_path))
    data = json.loads((tmp_path / "render-quick.json").read_text())
    assert (data["pools"], data["routes"]) == (8, 50)
    for mode in ("text", "openmetrics"):
        assert data["results"][mode]["median_ms"] > 0
        assert data["results"][mode]["series"] > 500


def test_quick_request_path_run_measures_every_piece(tmp_path: Path) -> None:
    """``--quick`` drives every in-process variant (pieces of ops, driver-hook prototypes) and reports added CPU."""
    run_module("benchmarks.request_path", "--quick", "--output", str(tmp_path), timeout=300)
    summary = json.loads((tmp_path / "request_path-quick.json").read_text())
    assert set(summary) == set(request_path.VARIANTS)
    assert all(row["cpu_us"] > 0 for row in summary.values())
    assert summary["bare"]["added_cpu_us"] == 0


def test_quick_hot_path_run_times_every_piece() -> None:
    """``--quick`` times every micro-cost (histogram, hook bodies, SQLSpec's emit path, the pool proxy)."""
    result = run_module("benchmarks.hot_path", "--quick", timeout=300)
    lines = [line for line in result.stdout.splitlines() if " µs  " in line]
    assert len(lines) == 7, result.stdout
    assert all(float(line.split()[0]) > 0 for line in lines)
