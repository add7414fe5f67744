"""The Prometheus alert rules are valid, well-formed and unit-tested with promtool (fires / stays silent)."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.dashboards import ALERTS_PATH, ALERTS_TEST_PATH, alert_rules
from tests.test_dashboards import SELECTOR, exported_names

EXPECTED_ALERTS = {
    "SQLSpecOpsPoolSaturated",
    "SQLSpecOpsAcquireTimeouts",
    "SQLSpecOpsPendingRequests",
    "SQLSpecOpsDatabaseDown",
    "SQLSpecOpsConnectionBudgetExceeded",
    "SQLSpecOpsSlowQueries",
}


def promtool() -> str:
    """Return promtool's path (Debian's prometheus package; scripts/test installs it)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install prometheus (scripts/test does)")
    return path


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run promtool and return its result."""
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def unit_tests() -> list[dict[str, Any]]:
    """Return every alert_rule_test case of alerts.test.yml."""
    data = yaml.safe_load(ALERTS_TEST_PATH.read_text(encoding="utf-8"))
    return [case for test in data["tests"] for case in test.get("alert_rule_test", [])]


def test_promtool_check_rules() -> None:
    """The rule file passes `promtool check rules` (syntax, PromQL, templates)."""
    result = run_promtool("check", "rules", ALERTS_PATH.name, cwd=ALERTS_PATH.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """Every promtool unit test of the alerts passes (alerts fire with the expected labels and annotations)."""
    result = run_promtool("test", "rules", ALERTS_TEST_PATH.name, cwd=ALERTS_TEST_PATH.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation makes `promtool test rules` fail, so the test above proves something."""
    shutil.copy(ALERTS_PATH, tmp_path / ALERTS_PATH.name)
    data = yaml.safe_load(ALERTS_TEST_PATH.read_text(encoding="utf-8"))
    case = next(case for test in data["tests"] for case in test["alert_rule_test"] if case["exp_alerts"])
    case["exp_alerts"][0]["exp_labels"]["severity"] = "info"
    (tmp_path / ALERTS_TEST_PATH.name).write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run_promtool("test", "rules", ALERTS_TEST_PATH.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_the_expected_alerts_exist() -> None:
    """alerts.yml has the six alerts the issue asks for."""
    assert {rule["alert"] for rule in alert_rules()} == EXPECTED_ALERTS


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """Each alert has at least one unit test where it fires and one where it must stay silent."""
    cases = unit_tests()
    for name in EXPECTED_ALERTS:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no firing case"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no silent case"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_shape(rule: dict[str, Any]) -> None:
    """An alert waits (for), has a severity, and its summary and description name the pool or the server."""
    assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
    assert rule["labels"]["severity"] in {"warning", "critical"}
    subject = "server" if "sqlspec_ops_connection_" in rule["expr"] else "db_client_connection_pool_name"
    for key in ("summary", "description"):
        assert f"$labels.{subject}" in rule["annotations"][key], f"{key} does not name the {subject}"
    assert re.search(rf"by \([^)]*\b{subject}\b", rule["expr"]), f"the expression drops {subject}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alerts_use_exported_metrics(rule: dict[str, Any]) -> None:
    """Every series an alert reads is exported by the package, with the labels it matches on."""
    exported = exported_names()
    expr = rule["expr"]
    bare = re.sub(r"\b(by|on|without|ignoring)\s*\([^)]*\)|\{[^}]*\}", "", expr)  # leave metric names only
    names = re.findall(r"\b(?:db_client|sqlspec_ops)_\w+", bare)
    assert names
    for name in names:
        assert name in exported, f"{name} is not exported by sqlspec_ops._metrics"
    for name, matchers in SELECTOR.findall(expr):
        used = {matcher.split("=")[0].rstrip("!~").strip() for matcher in matchers.split(",")}
        assert used <= exported[name], f"{name} has no label {used - exported[name]}"
