"""Generate the Grafana dashboard ``dashboards/sqlspec-ops.json`` from the panel list below.

The committed JSON is what users import ("Dashboards → New → Import"); this script only keeps it consistent
(ids, grid positions, datasource references, selectors). Edit the panels here, then run::

    python dashboards/generate.py          # rewrite the JSON
    python dashboards/generate.py --check  # exit 1 when the committed JSON differs (the test suite does this)

Aggregation rules every expression follows: pool gauges are summed per pool across instances (each scrape of
a multi-worker instance already returns the sum of its workers); histograms are aggregated as
``histogram_quantile(q, sum by (le, ...) (rate(..._bucket[$__rate_interval])))``; the connection budget and
the worker count are per-process facts, so they take ``max``. Successful statements carry ``error_type=""``.
"""

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ("DASHBOARD_PATH", "build_dashboard", "main", "render")

DASHBOARD_PATH = Path(__file__).resolve().parent / "sqlspec-ops.json"

_DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
_POOL = "db_client_connection_pool_name"
_TARGET = 'job=~"$job", instance=~"$instance"'
_SEL = f'{_TARGET}, {_POOL}=~"$pool"'
_WIDTH = 24
_COUNT = "db_client_operation_duration_seconds_count"
_ALL = f"rate({_COUNT}{{{_SEL}}}[$__rate_interval])"
_ERRORS = f'rate({_COUNT}{{{_SEL}, error_type!=""}}[$__rate_interval])'


def _quantile(q: float, metric: str, by: str, selector: str = _SEL) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))"


def _target(ref: str, expr: str, legend: str) -> dict[str, Any]:
    return {
        "datasource": _DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "refId": ref,
    }


def _targets(*queries: tuple[str, str]) -> list[dict[str, Any]]:
    return [_target(chr(ord("A") + index), expr, legend) for index, (expr, legend) in enumerate(queries)]


def _timeseries(
    panel_id: int,
    title: str,
    description: str,
    unit: str,
    targets: list[dict[str, Any]],
    *,
    stacked: bool = False,
    max_value: float | None = None,
    thresholds: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "min": 0,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "fillOpacity": 25 if stacked else 10,
            "lineWidth": 1,
            "showPoints": "never",
            "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
            "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
        },
        "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]},
    }
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": _DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "calcs": ["lastNotNull", "max"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
    }


def _stat(
    panel_id: int,
    title: str,
    description: str,
    unit: str,
    targets: list[dict[str, Any]],
    *,
    mappings: list[dict[str, Any]] | None = None,
    thresholds: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": _DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "thresholds"},
                "mappings": mappings or [],
                "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "blue", "value": None}]},
            },
            "overrides": [],
        },
        "options": {
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value_and_name",
        },
        "targets": targets,
    }


def _row(panel_id: int, title: str) -> dict[str, Any]:
    return {"id": panel_id, "type": "row", "title": title, "collapsed": False, "panels": []}


def _panels() -> list[tuple[dict[str, Any], int, int]]:
    """Return ``(panel, width, height)`` in reading order; ids never change once published."""
    by_pool = f"sum by ({_POOL})"
    return [
        (_row(100, "Overview"), _WIDTH, 1),
        (
            _stat(
                1,
                "Database readiness",
                "Last readiness ping per database (sqlspec_ops_database_up): UP when every selected instance "
                "reached it, DOWN when any did not. Updated whenever /ops/ready runs (probes, startup).",
                "none",
                _targets(
                    (f"min by ({_POOL}) (sqlspec_ops_database_up{{{_SEL}}})", f"{{{{{_POOL}}}}}"),
                ),
                mappings=[
                    {
                        "type": "value",
                        "options": {
                            "0": {"color": "red", "index": 1, "text": "DOWN"},
                            "1": {"color": "green", "index": 0, "text": "UP"},
                        },
                    }
                ],
                thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
            ),
            8,
            6,
        ),
        (
            _stat(
                2,
                "Workers per instance",
                "Worker processes per instance as detected (or configured) at startup; it multiplies every "
                "pool's max size in the connection budget.",
                "short",
                _targets(("max by (instance) (sqlspec_ops_workers{" + _TARGET + "})", "{{instance}}")),
            ),
            4,
            6,
        ),
        (
            _timeseries(
                3,
                "Connection budget: demand vs budget",
                "Demand: replicas x workers x sum of pool max sizes pointing at the server. Budget: "
                "max_connections minus reserved slots. Demand above budget means a busy moment (or the next "
                "deploy) can fail with 'too many connections'.",
                "suffix:conn",
                _targets(
                    (f"max by (server) (sqlspec_ops_connection_demand{{{_TARGET}}})", "demand {{server}}"),
                    (f"max by (server) (sqlspec_ops_connection_budget{{{_TARGET}}})", "budget {{server}}"),
                ),
            ),
            12,
            6,
        ),
        (_row(101, "Pools"), _WIDTH, 1),
        (
            _timeseries(
                4,
                "Pool utilisation (used / max)",
                "Connections in use as a share of the pool's max size, summed over the selected instances "
                "and their workers. Near 100% callers start to wait for a connection.",
                "percentunit",
                _targets(
                    (
                        (
                            f'{by_pool} (db_client_connection_count{{{_SEL}, db_client_connection_state="used"}})'
                            f" / {by_pool} (db_client_connection_max{{{_SEL}}})"
                        ),
                        f"{{{{{_POOL}}}}}",
                    ),
                ),
                max_value=1,
                thresholds=[
                    {"color": "green", "value": None},
                    {"color": "orange", "value": 0.75},
                    {"color": "red", "value": 0.9},
                ],
            ),
            12,
            8,
        ),
        (
            _timeseries(
                5,
                "Connections: idle vs used",
                "Open connections by state (stacked) against the pools' max size.",
                "suffix:conn",
                _targets(
                    (
                        f"sum by ({_POOL}, db_client_connection_state) (db_client_connection_count{{{_SEL}}})",
                        f"{{{{{_POOL}}}}} {{{{db_client_connection_state}}}}",
                    ),
                    (f"{by_pool} (db_client_connection_max{{{_SEL}}})", f"{{{{{_POOL}}}}} max"),
                ),
                stacked=True,
            ),
            12,
            8,
        ),
        (
            _timeseries(
                6,
                "Pending requests (waiting for a connection)",
                "Callers waiting for a connection right now. Sustained non-zero values mean the pool is too "
                "small for the load (or connections are held too long).",
                "short",
                _targets((f"{by_pool} (db_client_connection_pending_requests{{{_SEL}}})", f"{{{{{_POOL}}}}}")),
            ),
            12,
            8,
        ),
        (
            _timeseries(
                7,
                "Acquire timeouts",
                "Acquires per second that gave up waiting for a connection (acquire_timeout): each one is a "
                "failed request.",
                "cps",
                _targets(
                    (
                        f"{by_pool} (rate(db_client_connection_timeouts_total{{{_SEL}}}[$__rate_interval]))",
                        f"{{{{{_POOL}}}}}",
                    ),
                ),
            ),
            12,
            8,
        ),
        (
            _timeseries(
                8,
                "Acquire wait p50 / p95 / p99",
                "Time callers waited for a connection from the pool.",
                "s",
                _targets(
                    *(
                        (_quantile(q, "db_client_connection_wait_time_seconds", _POOL), f"{{{{{_POOL}}}}} {name}")
                        for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
                    )
                ),
            ),
            12,
            8,
        ),
        (
            _timeseries(
                9,
                "Connection hold time p50 / p95",
                "Time between borrowing a connection and returning it: long holds starve the pool.",
                "s",
                _targets(
                    *(
                        (_quantile(q, "db_client_connection_use_time_seconds", _POOL), f"{{{{{_POOL}}}}} {name}")
                        for q, name in ((0.5, "p50"), (0.95, "p95"))
                    )
                ),
            ),
            12,
            8,
        ),
        (_row(102, "Queries"), _WIDTH, 1),
        (
            _timeseries(
                10,
                "Query rate by operation",
                "Statements per second by pool and operation, failed ones included.",
                "ops",
                _targets(
                    (
                        f"sum by ({_POOL}, db_operation_name) (rate({_COUNT}{{{_SEL}}}[$__rate_interval]))",
                        f"{{{{{_POOL}}}}} {{{{db_operation_name}}}}",
                    ),
                ),
            ),
            12,
            8,
        ),
        (
            _timeseries(
                11,
                "Query latency p95 / p99 by operation",
                "Statement duration percentiles by pool and operation (buckets up to 10 s).",
                "s",
                _targets(
                    *(
                        (
                            _quantile(q, "db_client_operation_duration_seconds", f"{_POOL}, db_operation_name"),
                            f"{{{{{_POOL}}}}} {{{{db_operation_name}}}} {name}",
                        )
                        for q, name in ((0.95, "p95"), (0.99, "p99"))
                    )
                ),
            ),
            12,
            8,
        ),
        (
            _timeseries(
                12,
                "Query errors by error_type",
                "Failed statements per second by pool and error type: the SQLSTATE (e.g. 42P01 undefined table, "
                "57014 statement timeout) when the driver reports one, else the exception class.",
                "ops",
                _targets(
                    (
                        f"sum by ({_POOL}, error_type) ({_ERRORS})",
                        f"{{{{{_POOL}}}}} {{{{error_type}}}}",
                    ),
                ),
            ),
            12,
            8,
        ),
        (
            _timeseries(
                13,
                "Query error ratio",
                "Share of statements that failed, per pool.",
                "percentunit",
                _targets(
                    (
                        # "or 0 * all" keeps pools without errors at 0% instead of "No data".
                        f"({by_pool} ({_ERRORS}) or 0 * {by_pool} ({_ALL})) / {by_pool} ({_ALL})",
                        f"{{{{{_POOL}}}}}",
                    ),
                ),
                max_value=1,
            ),
            12,
            8,
        ),
    ]


def _layout(panels: list[tuple[dict[str, Any], int, int]]) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at the grid width; a row always starts a new line."""
    placed: list[dict[str, Any]] = []
    x = y = line_height = 0
    for panel, width, height in panels:
        if panel["type"] == "row" or x + width > _WIDTH:
            x, y, line_height = 0, y + line_height, 0
        placed.append({**panel, "gridPos": {"h": height, "w": width, "x": x, "y": y}})
        x += width
        line_height = max(line_height, height)
        if panel["type"] == "row":
            x, y, line_height = 0, y + height, 0
    return placed


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": _DATASOURCE,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {},
        "options": [],
        "regex": "",
        "sort": 1,
        "hide": 0,
        "skipUrlSync": False,
    }


def build_dashboard() -> dict[str, Any]:
    """Return the dashboard as Grafana's "Export for sharing externally" would write it."""
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes /ops/metrics of the app",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__elements": {},
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "title": "SQLSpec ops: pools, queries, readiness",
        "description": "Connection pools, statements, readiness and connection budget of FastAPI apps "
        "instrumented with sqlspec-ops (metrics from /ops/metrics).",
        "uid": "sqlspec-ops",
        "tags": ["sqlspec", "sqlspec-ops", "postgresql", "fastapi"],
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "version": 1,
        "weekStart": "",
        "templating": {
            "list": [
                _variable("job", "Job", "label_values(db_client_connection_max, job)"),
                _variable("instance", "Instance", 'label_values(db_client_connection_max{job=~"$job"}, instance)'),
                _variable("pool", "Pool", f"label_values(db_client_connection_max{{{_TARGET}}}, {_POOL})"),
            ]
        },
        "panels": _layout(_panels()),
    }


def render() -> str:
    """Return the dashboard JSON exactly as committed."""
    return json.dumps(build_dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write the dashboard, or with ``--check`` report whether the committed file is up to date.

    Args:
        argv: Command-line arguments after the program name.

    Returns:
        The exit status.

    """
    text = render()
    if "--check" in argv:
        current = DASHBOARD_PATH.read_text(encoding="utf-8") if DASHBOARD_PATH.exists() else ""
        if current != text:
            sys.stderr.write(f"{DASHBOARD_PATH} is stale: run python dashboards/generate.py\n")
            return 1
        return 0
    DASHBOARD_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
