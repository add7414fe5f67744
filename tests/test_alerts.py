"""The Prometheus alert rules are valid, well-formed and unit-tested with promtool (fires / stays silent)."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.dashboards import ALERTS_PATH, ALERTS_TEST_PATH, alert_rules
from tests.test_dashboards import POOL_LABEL, SELECTOR, exported_names

# What each alert the issues ask for must compute: (expression pattern, `for`). promtool's unit tests pin the
# behaviour; these pin the thresholds and windows the README promises.
REQUIRED_ALERTS = {
    "SQLSpecOpsPoolSaturated": (r"db_client_connection_state=\"used\".*/.*db_client_connection_max.*> 0\.9$", "5m"),
    "SQLSpecOpsAcquireTimeouts": (r"increase\(db_client_connection_timeouts_total\[5m\]\)\) > 0$", "1m"),
    "SQLSpecOpsPendingRequests": (r"avg_over_time\(db_client_connection_pending_requests\[2m\]\)\)\s+>= 1$", "5m"),
    "SQLSpecOpsDatabaseDown": (r"min by \([^)]*\) \(sqlspec_ops_database_up\) == 0$", "1m"),
    "SQLSpecOpsConnectionBudgetExceeded": (r"sqlspec_ops_connection_demand\)\s+> on \(job, server\)", "1m"),
    "SQLSpecOpsSlowQueries": (
        r"histogram_quantile\(0\.99,.*db_client_operation_duration_seconds_bucket.*> 0\.5$",
        "10m",
    ),
    "SQLSpecOpsConnectionLeak": (
        (
            r"increase\(sqlspec_ops_connection_leaks_total\[10m\]\)\) > 0\s+or\s+.*"
            r"sqlspec_ops_connection_leaks_total > 0 unless sqlspec_ops_connection_leaks_total offset 10m"
        ),
        "0m",
    ),
    "SQLSpecOpsLongTransaction": (r"max by \([^)]*\) \(sqlspec_ops_server_oldest_transaction_seconds\) > 300$", "5m"),
    "SQLSpecOpsEventLoopLag": (
        (
            r"histogram_quantile\(0\.99,\s+sum by \(job, instance, le\) "
            r"\(rate\(sqlspec_ops_event_loop_lag_seconds_bucket\[5m\]\)\)\s+\) > 0\.1$"
        ),
        "5m",
    ),
    "SQLSpecOpsServerConnectionsNearBudget": (
        (
            r"max by \([^)]*\) \(\s+sum by \([^)]*\) \(sqlspec_ops_server_connections\)\s+\)\s+\+ on .*"
            r"max by \([^)]*\) \(sqlspec_ops_server_other_connections\).*sqlspec_ops_connection_budget\)\s+> 0\.9$"
        ),
        "10m",
    ),
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


@pytest.mark.parametrize(("name", "shape"), REQUIRED_ALERTS.items(), ids=list(REQUIRED_ALERTS))
def test_required_alert_computes_what_it_promises(name: str, shape: tuple[str, str]) -> None:
    """Each alert the issues ask for exists with its threshold, window and wait (`for`)."""
    pattern, wait = shape
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert name in rules, f"alerts.yml has no {name}"
    assert re.search(pattern, rules[name]["expr"].strip(), re.DOTALL), rules[name]["expr"]
    assert rules[name]["for"] == wait


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """Each alert has a unit test where it fires and one where it stays silent, and every test names a real alert."""
    cases = unit_tests()
    names = {rule["alert"] for rule in alert_rules()}
    assert {case["alertname"] for case in cases} <= names, "a unit test names an alert alerts.yml lacks"
    for name in names:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no firing case"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no silent case"


def firing_labels(name: str) -> set[str]:
    """Return the label names (severity aside) an alert carries in its firing unit tests."""
    return {
        label
        for case in unit_tests()
        if case["alertname"] == name
        for alert in case["exp_alerts"]
        for label in alert["exp_labels"]
        if label != "severity"
    }


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_shape(rule: dict[str, Any]) -> None:
    """An alert waits, has a severity, its description names each label it fires with and its summary the subject."""
    assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
    assert rule["labels"]["severity"] in {"warning", "critical"}
    labels = firing_labels(rule["alert"])
    assert "job" in labels, "alerts keep the job, so one fleet's alert is not another's"
    for label in labels:
        assert f"$labels.{label}" in rule["annotations"]["description"], f"the description does not name {label}"
    subject = next(label for label in (POOL_LABEL, "server", "instance") if label in labels)
    assert f"$labels.{subject}" in rule["annotations"]["summary"], f"the summary does not name the {subject}"


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
