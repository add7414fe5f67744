"""The committed Grafana dashboards meet Grafana's import requirements and query only what the package exports."""

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from dashboards import generate
from sqlspec_ops._metrics import POOL_LABEL, metrics_for
from tests.support.dashboards import dashboard_files, load_dashboard, panels, targets, variables

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRID_WIDTH = 24
# Grafana's built-in unit ids used here, plus its custom-unit syntax (suffix:, prefix:).
UNITS = {"s", "ms", "percentunit", "percent", "ops", "reqps", "cps", "short", "none"}
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
PARAMS = [pytest.param(path, id=path.name) for path in dashboard_files()]


def exported_names() -> dict[str, set[str]]:
    """Map every series name the package exports to its label names (read from the metric families)."""
    label_names: dict[str, set[str]] = {}
    for metric in vars(metrics_for(CollectorRegistry())).values():
        labels = set(metric._labelnames)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(metric._type, ("",))
        for suffix in suffixes:
            label_names[metric._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return label_names


def test_there_is_a_dashboard() -> None:
    """dashboards/ ships at least one dashboard JSON file."""
    assert dashboard_files(), "no dashboards/*.json"


def test_committed_dashboard_matches_the_generator() -> None:
    """The committed dashboard JSON is exactly what dashboards/generate.py writes (run it after editing)."""
    assert generate.DASHBOARD_PATH.read_text(encoding="utf-8") == generate.render(), (
        "dashboards/sqlspec-ops.json is stale: run python dashboards/generate.py"
    )


@pytest.mark.parametrize("path", PARAMS)
def test_import_requirements(path: Path) -> None:
    """A dashboard declares the DS_PROMETHEUS input, its requirements and a current schema version."""
    dashboard = load_dashboard(path)
    inputs = {item["name"]: item for item in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    requires = {(item["type"], item["id"]) for item in dashboard["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= requires
    used_types = {panel["type"] for panel in panels(dashboard) if panel["type"] != "row"}
    assert {("panel", kind) for kind in used_types} <= requires
    assert dashboard["schemaVersion"] >= 39  # Grafana 10.4+ exports
    assert dashboard["id"] is None, "an exported dashboard has no database id"
    assert dashboard["uid"]
    assert dashboard["title"]


@pytest.mark.parametrize("path", PARAMS)
def test_every_datasource_is_the_input(path: Path) -> None:
    """Every panel, query and variable uses ${DS_PROMETHEUS}; nothing names a datasource of the author's Grafana."""
    dashboard = load_dashboard(path)
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in variables(dashboard):
        assert variable["datasource"] == DATASOURCE, variable["name"]
    for found in _datasources(dashboard):
        assert found in (DATASOURCE, {"type": "grafana", "uid": "-- Grafana --"}), found


def _datasources(node: Any) -> list[Any]:
    if isinstance(node, dict):
        own = [node["datasource"]] if "datasource" in node else []
        return own + [found for value in node.values() for found in _datasources(value)]
    if isinstance(node, list):
        return [found for value in node for found in _datasources(value)]
    return []


@pytest.mark.parametrize("path", PARAMS)
def test_template_variables(path: Path) -> None:
    """Variables job, instance and pool chain (pool filtered by job and instance) and allow several values."""
    found = {variable["name"]: variable for variable in variables(load_dashboard(path))}
    assert list(found)[:3] == ["job", "instance", "pool"], "job, instance and pool come first, in this order"
    assert found["job"]["definition"] == "label_values(db_client_connection_max, job)"
    assert found["instance"]["definition"] == 'label_values(db_client_connection_max{job=~"$job"}, instance)'
    assert found["pool"]["definition"] == (
        f'label_values(db_client_connection_max{{job=~"$job", instance=~"$instance"}}, {POOL_LABEL})'
    )
    for variable in found.values():
        assert variable["type"] == "query"
        assert variable["query"]["query"] == variable["definition"]
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert variable["refresh"] == 2, "refresh on time range change, so new instances and pools appear"


@pytest.mark.parametrize("path", PARAMS)
def test_units_ids_and_layout(path: Path) -> None:
    """Every panel has a unit, a unique stable id and a grid position that overlaps no other panel."""
    dashboard = load_dashboard(path)
    every = list(panels(dashboard))
    ids = [panel["id"] for panel in every]
    assert all(isinstance(panel_id, int) and panel_id > 0 for panel_id in ids)
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in every:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys(), panel["title"]
        assert grid["x"] >= 0
        assert grid["y"] >= 0
        assert grid["w"] > 0
        assert grid["h"] > 0
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        if panel["type"] == "row":
            continue
        unit = panel["fieldConfig"]["defaults"]["unit"]
        assert unit in UNITS or re.fullmatch(r"(suffix|prefix):\S.*", unit), f"{panel['title']}: unit {unit!r}"
    for first, second in itertools.combinations(every, 2):
        assert not _overlap(first["gridPos"], second["gridPos"]), f"{first['title']} overlaps {second['title']}"


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
    )


def test_overlap_detection() -> None:
    """The layout check recognises overlapping and adjacent panels (so the test above can fail)."""
    assert _overlap({"x": 0, "y": 0, "w": 12, "h": 8}, {"x": 6, "y": 4, "w": 12, "h": 8})
    assert not _overlap({"x": 0, "y": 0, "w": 12, "h": 8}, {"x": 12, "y": 0, "w": 12, "h": 8})
    assert not _overlap({"x": 0, "y": 0, "w": 24, "h": 1}, {"x": 0, "y": 1, "w": 12, "h": 8})


@pytest.mark.parametrize("path", PARAMS)
def test_queries_use_exported_metrics_and_the_variables(path: Path) -> None:
    """Each selector names an exported series with its own labels and is filtered by job, instance (and pool)."""
    exported = exported_names()
    for target in targets(path):
        selectors = SELECTOR.findall(target.expr)
        assert selectors, f"{target}: no metric selector"
        for name, matchers in selectors:
            assert name in exported, f"{target}: {name} is not exported by sqlspec_ops._metrics"
            used = {matcher.split("=")[0].rstrip("!~").strip() for matcher in matchers.split(",")}
            assert used <= exported[name] | {"job", "instance"}, f"{target}: {name} has no label {used}"
            assert 'job=~"$job"' in matchers, f"{target}: {name} is not filtered by $job"
            assert 'instance=~"$instance"' in matchers, f"{target}: {name} is not filtered by $instance"
            if POOL_LABEL in exported[name]:
                assert f'{POOL_LABEL}=~"$pool"' in matchers, f"{target}: {name} is not filtered by $pool"


@pytest.mark.parametrize("path", PARAMS)
def test_queries_aggregate_across_instances_and_workers(path: Path) -> None:
    """Rates use $__rate_interval, quantiles aggregate buckets by le, and every query aggregates its series."""
    for target in targets(path):
        expr = target.expr
        windows = re.findall(r"\[([^\]]+)\]", expr)
        assert all(window == "$__rate_interval" for window in windows), f"{target}: range {windows}"
        for quantile in re.finditer(r"histogram_quantile\(", expr):
            rest = expr[quantile.end() :]
            assert re.match(r"0\.\d+, sum by \(le, [^)]*\) \(rate\(\w+_bucket\{", rest), f"{target}: {expr}"
        assert re.match(r"\(?(sum|min|max|histogram_quantile)\b", expr), f"{target}: not aggregated: {expr}"
        if "error_type" in expr:
            assert 'error_type!=""' in expr, f'{target}: successes carry error_type="": {expr}'


REQUIRED = {
    "pool utilisation": r'db_client_connection_count\{[^}]*db_client_connection_state="used"\}\) / .*'
    r"db_client_connection_max\{",
    "idle vs used": r"sum by \(db_client_connection_pool_name, db_client_connection_state\) "
    r"\(db_client_connection_count\{",
    "pending requests": r"db_client_connection_pending_requests\{",
    "acquire wait p50": r"histogram_quantile\(0\.5, .*db_client_connection_wait_time_seconds_bucket",
    "acquire wait p95": r"histogram_quantile\(0\.95, .*db_client_connection_wait_time_seconds_bucket",
    "acquire wait p99": r"histogram_quantile\(0\.99, .*db_client_connection_wait_time_seconds_bucket",
    "hold time p95": r"histogram_quantile\(0\.95, .*db_client_connection_use_time_seconds_bucket",
    "acquire timeouts rate": r"rate\(db_client_connection_timeouts_total\{",
    "query rate by operation": r"sum by \([^)]*db_operation_name[^)]*\) "
    r"\(rate\(db_client_operation_duration_seconds_count\{",
    "query p95 by operation": r"histogram_quantile\(0\.95, sum by \([^)]*db_operation_name[^)]*\) "
    r"\(rate\(db_client_operation_duration_seconds_bucket",
    "query p99 by operation": r"histogram_quantile\(0\.99, sum by \([^)]*db_operation_name[^)]*\) "
    r"\(rate\(db_client_operation_duration_seconds_bucket",
    "error rate by error_type": r'sum by \([^)]*error_type[^)]*\) \(rate\(\w+_count\{[^}]*error_type!=""',
    "readiness": r"sqlspec_ops_database_up\{",
    "connection demand": r"sqlspec_ops_connection_demand\{",
    "connection budget": r"sqlspec_ops_connection_budget\{",
    "worker count": r"sqlspec_ops_workers\{",
}


@pytest.mark.parametrize(("topic", "pattern"), REQUIRED.items(), ids=list(REQUIRED))
def test_dashboards_cover(topic: str, pattern: str) -> None:
    """Some panel of the shipped dashboards shows each topic the issue asks for."""
    exprs = [target.expr for path in dashboard_files() for target in targets(path)]
    assert any(re.search(pattern, expr) for expr in exprs), f"no panel shows {topic}"


def test_readme_shows_the_example_scrape_config() -> None:
    """The scrape config in the README's dashboards section is the one in examples/prometheus.yml."""
    root = Path(__file__).resolve().parents[1]
    section = (root / "README.md").read_text(encoding="utf-8").split("## Dashboards and alerts", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no yaml block in the README's dashboards section"
    shown = yaml.safe_load(block.group(1))
    example = yaml.safe_load((root / "examples" / "prometheus.yml").read_text(encoding="utf-8"))
    assert shown == {key: example[key] for key in ("rule_files", "scrape_configs")}
