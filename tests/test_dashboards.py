"""The committed Grafana dashboard conforms to Grafana's schemas, imports cleanly and queries only exported series."""

import copy
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import generate
from tests.support.dashboards import (
    DASHBOARDS_DIR,
    dashboard_files,
    load_dashboard,
    panels,
    schema_errors,
    targets,
    variables,
)

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRID_WIDTH = 24
# Grafana's built-in unit ids used here, plus its custom-unit syntax (suffix:, prefix:).
UNITS = {"s", "ms", "percentunit", "percent", "ops", "reqps", "cps", "short", "none"}
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
PARAMS = [pytest.param(path, id=path.name) for path in dashboard_files()]


POOL_LABEL = "db_client_connection_pool_name"  # pinned by SPEC.md; the generator reads it from the package


def exported_names() -> dict[str, set[str]]:
    """Map every series name the package exports to its label names (read from the metric families)."""
    return {name: set(labels) for name, labels in generate.exported_series().items()}


def test_exported_names_come_from_the_package() -> None:
    """The name lookup sees the families SPEC.md pins, with their labels and the series suffixes Prometheus stores."""
    exported = exported_names()
    assert exported["db_client_connection_timeouts_total"] == {POOL_LABEL}
    assert exported["sqlspec_ops_connection_leaks_total"] == {POOL_LABEL}
    assert exported["sqlspec_ops_connection_held_idle_seconds_bucket"] == {POOL_LABEL, "http_route", "le"}
    assert exported["sqlspec_ops_server_connections"] == {POOL_LABEL, "state"}
    assert exported["sqlspec_ops_event_loop_lag_seconds_count"] == set()
    assert exported["sqlspec_ops_connection_budget"] == {"server"}
    assert "db_client_connection_timeouts" not in exported, "counters are stored with _total"


def test_name_lookup_rejects_what_the_package_does_not_define() -> None:
    """A label a family lacks, or a quantile of a gauge, stops the generator instead of writing an empty panel."""
    families = generate._families()
    with pytest.raises(ValueError, match="has no label 'pool'"):
        families["connection_count"].label("pool")
    with pytest.raises(ValueError, match="not a histogram"):
        families["connection_max"].quantile(0.5, POOL_LABEL)
    assert families["event_loop_lag"].label("instance") == "instance", "Prometheus adds job and instance"


def test_the_generator_owns_every_dashboard_file() -> None:
    """Every dashboard JSON in dashboards/ is the generated one, so no hand-edited file escapes the checks below."""
    assert dashboard_files() == [generate.DASHBOARD_PATH]
    assert generate.DASHBOARD_PATH.parent == DASHBOARDS_DIR


def test_committed_dashboard_matches_the_generator() -> None:
    """The committed dashboard JSON is exactly what dashboards/generate.py writes (run it after editing)."""
    assert generate.DASHBOARD_PATH.read_text(encoding="utf-8") == generate.render(), (
        "dashboards/sqlspec-ops.json is stale: run python dashboards/generate.py"
    )


@pytest.mark.parametrize("path", PARAMS)
def test_dashboard_conforms_to_grafana_schemas(path: Path) -> None:
    """The model, every panel's options and custom field config, and every query pass Grafana's JSON Schemas."""
    errors = schema_errors(load_dashboard(path))
    assert errors == [], "\n".join(errors)


def _first(dashboard: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(panel for panel in panels(dashboard) if panel["type"] == kind)


def _custom(panel: dict[str, Any]) -> dict[str, Any]:
    custom: dict[str, Any] = panel["fieldConfig"]["defaults"]["custom"]
    return custom


BREAKAGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "variable current without value": lambda d: d["templating"]["list"][0]["current"].pop("value"),
    "variable query object of strings": lambda d: d["templating"]["list"][0].update(query={"query": "up"}),
    "unknown dashboard key": lambda d: d.update(graph_tooltip=1),
    "stat options without wideLayout": lambda d: _first(d, "stat")["options"].pop("wideLayout"),
    "timeseries legend placement": lambda d: _first(d, "timeseries")["options"]["legend"].update(placement="top"),
    "timeseries custom fillOpacity type": lambda d: _custom(_first(d, "timeseries")).update(fillOpacity="10"),
    "target without expr": lambda d: _first(d, "timeseries")["targets"][0].pop("expr"),
    "target editorMode": lambda d: _first(d, "stat")["targets"][0].update(editorMode="text"),
    "panel kind without a schema": lambda d: _first(d, "stat").update(type="piechart"),
    "row without panels": lambda d: next(p for p in d["panels"] if p["type"] == "row").pop("panels"),
    "stat with a custom field config": lambda d: _first(d, "stat")["fieldConfig"]["defaults"].update(custom={"x": 1}),
}


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=list(BREAKAGES))
def test_schema_check_rejects_a_broken_copy(breakage: Callable[[dict[str, Any]], None]) -> None:
    """A copy of the dashboard broken in one place fails the schema check (so the test above can fail)."""
    broken = copy.deepcopy(load_dashboard(generate.DASHBOARD_PATH))
    breakage(broken)
    assert schema_errors(broken), "the schema check accepted a broken dashboard"


def test_schema_check_finds_what_the_hand_written_dashboard_got_wrong() -> None:
    """Variables with a bare current or an object query and stat options of Grafana 10 are each reported."""
    legacy = copy.deepcopy(load_dashboard(generate.DASHBOARD_PATH))
    variable = legacy["templating"]["list"][0]
    variable.update(current={}, query={"qryType": 1, "query": variable["definition"], "refId": "Q"})
    for key in ("wideLayout", "showPercentChange", "percentChangeColorMode"):
        _first(legacy, "stat")["options"].pop(key)
    errors = schema_errors(legacy)
    assert len(errors) == 6, "\n".join(errors)  # text, value, query; three stat options
    assert any("templating/list/0/query" in error for error in errors)
    assert any("'wideLayout' is a required property" in error for error in errors)


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
    assert dashboard["schemaVersion"] == 42, "the model of the pinned SDK and of the schemas in tests/data"
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
        assert variable["query"] == variable["definition"]
        assert variable["current"] == {"text": ["All"], "value": ["$__all"]}
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
        assert re.match(r"\(?(sum|min|max|histogram_quantile|topk\(\d+, (sum|histogram_quantile))\b", expr), (
            f"{target}: not aggregated: {expr}"
        )
        assert not not_max(expr), f"{target}: server-wide facts {not_max(expr)} must be aggregated with max"
        if "error_type" in expr:
            assert 'error_type!=""' in expr, f'{target}: successes carry error_type="": {expr}'


# Facts every worker and instance reports identically (the server's view, the budget, the worker count).
SERVER_WIDE = (
    "sqlspec_ops_server_connections",
    "sqlspec_ops_server_other_connections",
    "sqlspec_ops_server_oldest_transaction_seconds",
    "sqlspec_ops_server_lock_waits",
    "sqlspec_ops_connection_budget",
    "sqlspec_ops_connection_demand",
    "sqlspec_ops_workers",
)


def not_max(expr: str) -> list[str]:
    """Return the server-wide series an expression reads without ``max by (...)`` directly around them."""
    found = re.finditer(rf"\b({'|'.join(SERVER_WIDE)})\{{", expr)
    return [match.group(1) for match in found if not re.search(r"max by \([^)]*\) \($", expr[: match.start()])]


def test_not_max_detection() -> None:
    """The max-not-sum check flags summed or bare server-wide gauges and accepts max (so the check can fail)."""
    assert not_max('sum by (pool) (sqlspec_ops_server_lock_waits{job=~"$job"})') == ["sqlspec_ops_server_lock_waits"]
    assert not_max("sqlspec_ops_connection_budget{} > 1") == ["sqlspec_ops_connection_budget"]
    assert not_max('max by (server) (sqlspec_ops_connection_budget{job=~"$job"})') == []


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
    "leaks per pool": r"sum by \(db_client_connection_pool_name\) \(increase\(sqlspec_ops_connection_leaks_total\{",
    "held idle by route, top routes": r"topk\(\d+, sum by \([^)]*http_route[^)]*\) "
    r"\(rate\(sqlspec_ops_connection_held_idle_seconds_sum\{",
    "this app's server connections by state": r"max by \(db_client_connection_pool_name, state\) "
    r"\(sqlspec_ops_server_connections\{",
    "other clients": r"max by \(db_client_connection_pool_name\) \(sqlspec_ops_server_other_connections\{",
    "idle in transaction": r'sqlspec_ops_server_connections\{[^}]*state="idle in transaction"',
    "oldest transaction": r"max by \([^)]*\) \(sqlspec_ops_server_oldest_transaction_seconds\{",
    "lock waits": r"max by \([^)]*\) \(sqlspec_ops_server_lock_waits\{",
    "event-loop lag p99 per instance": r"histogram_quantile\(0\.99, sum by \(le, instance\) "
    r"\(rate\(sqlspec_ops_event_loop_lag_seconds_bucket\{",
    "connection create time p95": r"histogram_quantile\(0\.95, sum by \(le, db_client_connection_pool_name\) "
    r"\(rate\(db_client_connection_create_time_seconds_bucket\{",
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
