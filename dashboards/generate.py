"""Generate the Grafana dashboard and the Kubernetes PrometheusRule from one description each.

``dashboards/sqlspec-ops.json`` is built with grafana-foundation-sdk, Grafana's typed builders (the test extra
pins the build), wrapped in the "Export for sharing externally" envelope (``__inputs`` with ``DS_PROMETHEUS``,
``__requires``) that the SDK does not write. ``deploy/kubernetes/prometheusrule.yaml`` carries the groups of
``dashboards/alerts.yml`` unchanged, so the alert rules have one source. Edit the panels here or the rules in
alerts.yml, then run::

    python dashboards/generate.py          # rewrite both files
    python dashboards/generate.py --check  # exit 1 when a committed file differs (the test suite does this)

Metric and label names are read from sqlspec_ops' own metric definitions (:func:`exported_series`), so a
renamed family or label fails here instead of leaving a panel without data.

Aggregation rules every expression follows: pool gauges are summed per pool across instances (each scrape of
a multi-worker instance already returns the sum of its workers); histograms are aggregated as
``histogram_quantile(q, sum by (le, ...) (rate(..._bucket[$__rate_interval])))``; the connection budget, the
worker count and the server's view (pg_stat_activity, the same server-wide numbers from every worker and
instance) take ``max``, never ``sum``. Successful statements carry ``error_type=""``.
"""

import json
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

# The one place that imports the package's metric definitions (the module may become private later).
from sqlspec_ops._metrics import POOL_LABEL, OpsMetrics

with warnings.catch_warnings():
    # The SDK marks the classic dashboard model deprecated in favour of dashboardv2 (Grafana 12's resource API);
    # "Import dashboard" and Grafana's JSON Schemas in tests/data take the classic model, which is what we want.
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.builders import dashboard as dashboard_builders
    from grafana_foundation_sdk.builders import prometheus, stat, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as model
    from grafana_foundation_sdk.models.prometheus import QueryEditorMode

__all__ = (
    "ALERTS_PATH",
    "DASHBOARD_PATH",
    "PROMETHEUS_RULE_PATH",
    "build_dashboard",
    "build_prometheus_rule",
    "exported_series",
    "main",
    "render",
    "render_prometheus_rule",
)

_ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_PATH = _ROOT / "dashboards" / "sqlspec-ops.json"
ALERTS_PATH = _ROOT / "dashboards" / "alerts.yml"
PROMETHEUS_RULE_PATH = _ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"

_DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${DS_PROMETHEUS}")
_TARGET = 'job=~"$job", instance=~"$instance"'
_RATE = "[$__rate_interval]"
# Prometheus adds these to every scraped series.
_TARGET_LABELS = frozenset({"job", "instance"})
_GRID_WIDTH = 24
# What Grafana 12.2 writes into an export; schemaVersion 42 (the SDK's) is that release's dashboard model.
_GRAFANA_VERSION = "12.2.0"


@dataclass(frozen=True, slots=True)
class _Family:
    """One metric family as sqlspec_ops defines it: its name, type and label names."""

    name: str
    kind: str
    labels: frozenset[str]

    @classmethod
    def of(cls, metric: MetricWrapperBase) -> "_Family":
        """Read a family's definition from the prometheus_client object that exports it."""
        (described,) = metric.describe()
        # prometheus_client has no public accessor for the label names a family was declared with.
        labels: Sequence[str] = metric._labelnames  # noqa: SLF001
        return cls(described.name, described.type, frozenset(labels))

    def series(self) -> list[tuple[str, frozenset[str]]]:
        """Return the series names Prometheus stores for this family, each with its label names."""
        if self.kind == "counter":
            return [(f"{self.name}_total", self.labels)]
        if self.kind == "histogram":
            return [
                (f"{self.name}_bucket", self.labels | {"le"}),
                (f"{self.name}_count", self.labels),
                (f"{self.name}_sum", self.labels),
            ]
        return [(self.name, self.labels)]

    def label(self, name: str) -> str:
        """Return ``name`` after checking that the family has that label.

        Raises:
            ValueError: If it does not (the panel would show nothing).

        """
        if name not in self.labels | _TARGET_LABELS:
            msg = f"{self.name} has no label {name!r} (labels: {sorted(self.labels)}): fix the panel"
            raise ValueError(msg)
        return name

    def select(self, suffix: str = "", **matchers: str) -> str:
        """Return ``name+suffix{job, instance[, pool], matchers}`` filtered by the dashboard's variables."""
        parts = [_TARGET]
        if POOL_LABEL in self.labels:
            parts.append(f'{POOL_LABEL}=~"$pool"')
        parts.extend(f"{self.label(label)}{value}" for label, value in matchers.items())
        name = f"{self.name}_total" if self.kind == "counter" else f"{self.name}{suffix}"
        return f"{name}{{{', '.join(parts)}}}"

    def quantile(self, q: float, *by: str) -> str:
        """Return PromQL's ``q`` quantile of this histogram, its buckets summed by ``by`` first."""
        if self.kind != "histogram":
            msg = f"{self.name} is a {self.kind}, not a histogram"
            raise ValueError(msg)
        labels = ", ".join(("le", *(self.label(label) for label in by)))
        return f"histogram_quantile({q}, sum by ({labels}) (rate({self.select('_bucket')}{_RATE})))"


def _families() -> dict[str, _Family]:
    """Return every family sqlspec_ops exports, keyed by the attribute of :class:`OpsMetrics` that holds it."""
    metrics = OpsMetrics(CollectorRegistry())
    return {name: _Family.of(value) for name, value in vars(metrics).items() if isinstance(value, MetricWrapperBase)}


def exported_series() -> dict[str, frozenset[str]]:
    """Map every series name sqlspec_ops exports to its label names, read from its metric definitions."""
    return {name: labels for family in _families().values() for name, labels in family.series()}


def _legend(*labels: str) -> str:
    return " ".join(f"{{{{{label}}}}}" for label in labels)


def _queries(*queries: tuple[str, str]) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery()
        .datasource(_DATASOURCE)
        .editor_mode(QueryEditorMode.CODE)
        .expr(expr)
        .legend_format(legend)
        .range()
        .ref_id(chr(ord("A") + index))
        for index, (expr, legend) in enumerate(queries)
    ]


def _steps(*steps: tuple[str, float | None]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for color, value in steps])
    )


_SATURATION = (("green", None), ("orange", 0.75), ("red", 0.9))


def _timeseries(
    panel_id: int,
    title: str,
    description: str,
    unit: str,
    queries: Iterable[prometheus.Dataquery],
    *,
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    max_value: float | None = None,
    thresholds: tuple[tuple[str, float | None], ...] = (),
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(_DATASOURCE)
        .span(width)
        .height(height)
        .unit(unit)
        .min(0)
        .color_scheme(dashboard_builders.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
        .thresholds(_steps(*(thresholds or (("green", None),))))
        .draw_style(common.GraphDrawStyle.LINE)
        .fill_opacity(25 if stacked else 10)
        .line_width(1)
        .show_points(common.VisibilityMode.NEVER)
        .stacking(
            common_builders.StackingConfig()
            .group("A")
            .mode(common.StackingMode.NORMAL if stacked else common.StackingMode.NONE)
        )
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED if thresholds else common.GraphThresholdsStyleMode.OFF
            )
        )
        .legend(
            common_builders.VizLegendOptions()
            .calcs(["lastNotNull", "max"])
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(show_legend=True)
        )
        .tooltip(
            common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
        )
        .targets(list(queries))
    )
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def _stat(
    panel_id: int,
    title: str,
    description: str,
    unit: str,
    queries: Iterable[prometheus.Dataquery],
    *,
    width: int,
    height: int = 6,
    mappings: list[model.ValueMapping] | None = None,
    thresholds: tuple[tuple[str, float | None], ...] = (("blue", None),),
) -> stat.Panel:
    return (
        stat.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(_DATASOURCE)
        .span(width)
        .height(height)
        .unit(unit)
        .color_scheme(dashboard_builders.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .mappings(mappings or [])
        .thresholds(_steps(*thresholds))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(values=False))
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .targets(list(queries))
    )


_Panel = timeseries.Panel | stat.Panel


@dataclass(frozen=True, slots=True)
class _Row:
    """A row and the panels under it; ids never change once published."""

    row_id: int
    title: str
    panels: tuple[_Panel, ...]


def _rows() -> list[_Row]:
    # Attribute access, so mypy flags a family the package renames or drops.
    m = OpsMetrics(CollectorRegistry())
    f = _Family.of
    pool = POOL_LABEL
    by_pool = f"sum by ({pool})"
    state = f(m.connection_count).label("db_client_connection_state")
    operation = f(m.operation_duration).label("db_operation_name")
    error_type = f(m.operation_duration).label("error_type")
    server = f(m.connection_budget).label("server")
    server_state = f(m.server_connections).label("state")
    route = f(m.held_idle_time).label("http_route")
    all_rate = f"rate({f(m.operation_duration).select('_count')}{_RATE})"
    failed = f(m.operation_duration).select("_count", **{error_type: '!=""'})
    errors_rate = f"rate({failed}{_RATE})"
    used = f(m.connection_count).select(**{state: '="used"'})
    idle_in_transaction = f(m.server_connections).select(**{server_state: '="idle in transaction"'})

    overview = _Row(
        100,
        "Overview",
        (
            _stat(
                1,
                "Database readiness",
                "Last readiness ping per database (sqlspec_ops_database_up): UP when every selected instance "
                "reached it, DOWN when any did not. Updated whenever /ops/ready runs (probes, startup).",
                "none",
                _queries((f"min by ({pool}) ({f(m.database_up).select()})", _legend(pool))),
                width=8,
                mappings=[
                    model.ValueMap(
                        options={
                            "0": model.ValueMappingResult(color="red", index=1, text="DOWN"),
                            "1": model.ValueMappingResult(color="green", index=0, text="UP"),
                        }
                    )
                ],
                thresholds=(("red", None), ("green", 1)),
            ),
            _stat(
                2,
                "Workers per instance",
                "Worker processes per instance as detected (or configured) at startup; it multiplies every "
                "pool's max size in the connection budget.",
                "short",
                _queries((f"max by (instance) ({f(m.workers).select()})", _legend("instance"))),
                width=4,
            ),
            _timeseries(
                3,
                "Connection budget: demand vs budget",
                "Demand: replicas x workers x sum of pool max sizes pointing at the server. Budget: "
                "max_connections minus reserved slots. Demand above budget means a busy moment (or the next "
                "deploy) can fail with 'too many connections'.",
                "suffix:conn",
                _queries(
                    (f"max by ({server}) ({f(m.connection_demand).select()})", f"demand {_legend(server)}"),
                    (f"max by ({server}) ({f(m.connection_budget).select()})", f"budget {_legend(server)}"),
                ),
                height=6,
            ),
        ),
    )
    pools = _Row(
        101,
        "Pools",
        (
            _timeseries(
                4,
                "Pool utilisation (used / max)",
                "Connections in use as a share of the pool's max size, summed over the selected instances "
                "and their workers. Near 100% callers start to wait for a connection.",
                "percentunit",
                _queries(
                    (
                        f"{by_pool} ({used}) / {by_pool} ({f(m.connection_max).select()})",
                        _legend(pool),
                    )
                ),
                max_value=1,
                thresholds=_SATURATION,
            ),
            _timeseries(
                5,
                "Connections: idle vs used",
                "Open connections by state (stacked) against the pools' max size.",
                "suffix:conn",
                _queries(
                    (f"sum by ({pool}, {state}) ({f(m.connection_count).select()})", _legend(pool, state)),
                    (f"{by_pool} ({f(m.connection_max).select()})", f"{_legend(pool)} max"),
                ),
                stacked=True,
            ),
            _timeseries(
                6,
                "Pending requests (waiting for a connection)",
                "Callers waiting for a connection right now. Sustained non-zero values mean the pool is too "
                "small for the load (or connections are held too long).",
                "short",
                _queries((f"{by_pool} ({f(m.pending_requests).select()})", _legend(pool))),
            ),
            _timeseries(
                7,
                "Acquire timeouts",
                "Acquires per second that gave up waiting for a connection (acquire_timeout): each one is a "
                "failed request.",
                "cps",
                _queries((f"{by_pool} (rate({f(m.timeouts).select()}{_RATE}))", _legend(pool))),
            ),
            _timeseries(
                8,
                "Acquire wait p50 / p95 / p99",
                "Time callers waited for a connection from the pool.",
                "s",
                _queries(
                    *(
                        (f(m.wait_time).quantile(q, pool), f"{_legend(pool)} {name}")
                        for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
                    )
                ),
            ),
            _timeseries(
                9,
                "Connection hold time p50 / p95",
                "Time between borrowing a connection and returning it: long holds starve the pool.",
                "s",
                _queries(
                    *(
                        (f(m.use_time).quantile(q, pool), f"{_legend(pool)} {name}")
                        for q, name in ((0.5, "p50"), (0.95, "p95"))
                    )
                ),
            ),
        ),
    )
    queries = _Row(
        102,
        "Queries",
        (
            _timeseries(
                10,
                "Query rate by operation",
                "Statements per second by pool and operation, failed ones included.",
                "ops",
                _queries((f"sum by ({pool}, {operation}) ({all_rate})", _legend(pool, operation))),
            ),
            _timeseries(
                11,
                "Query latency p95 / p99 by operation",
                "Statement duration percentiles by pool and operation (buckets up to 10 s).",
                "s",
                _queries(
                    *(
                        (f(m.operation_duration).quantile(q, pool, operation), f"{_legend(pool, operation)} {name}")
                        for q, name in ((0.95, "p95"), (0.99, "p99"))
                    )
                ),
            ),
            _timeseries(
                12,
                "Query errors by error_type",
                "Failed statements per second by pool and error type: the SQLSTATE (e.g. 42P01 undefined table, "
                "57014 statement timeout) when the driver reports one, else the exception class.",
                "ops",
                _queries((f"sum by ({pool}, {error_type}) ({errors_rate})", _legend(pool, error_type))),
            ),
            _timeseries(
                13,
                "Query error ratio",
                "Share of statements that failed, per pool.",
                "percentunit",
                _queries(
                    # "or 0 * all" keeps pools without errors at 0% instead of "No data".
                    (
                        f"({by_pool} ({errors_rate}) or 0 * {by_pool} ({all_rate})) / {by_pool} ({all_rate})",
                        _legend(pool),
                    )
                ),
                max_value=1,
            ),
        ),
    )
    holders = _Row(
        103,
        "Holders, leaks and the event loop",
        (
            _timeseries(
                14,
                "Connection leaks (held longer than leak_threshold)",
                "Connections found held longer than leak_threshold, per pool. Each one is logged once as a "
                "WARNING on sqlspec_ops.pools with the route, the request ID and the acquiring stack; /ops/pools "
                "lists the current holders. Needs SQLSpecOps(leak_threshold=...).",
                "short",
                _queries((f"{by_pool} (increase({f(m.connection_leaks).select()}{_RATE}))", _legend(pool))),
            ),
            _timeseries(
                15,
                "Connections held without querying, by route (top 10)",
                "Average number of connections held but not running a statement (hold time minus statement "
                "time), per route: the dependency that keeps a connection across a slow external call shows "
                "up here first.",
                "suffix:conn",
                _queries(
                    (
                        f"topk(10, sum by ({pool}, {route}) (rate({f(m.held_idle_time).select('_sum')}{_RATE})))",
                        _legend(pool, route),
                    )
                ),
            ),
            _timeseries(
                16,
                "Held without querying p95 per hold, by route (top 10)",
                "95th percentile of the idle part of one hold, per route: how long a single request keeps a "
                "connection it does not use.",
                "s",
                _queries((f"topk(10, {f(m.held_idle_time).quantile(0.95, pool, route)})", _legend(pool, route))),
            ),
            _timeseries(
                17,
                "Connection create time p50 / p95 / p99",
                "Time to open a new connection to the database (TCP, TLS, authentication). Slow creates make "
                "every pool refill and every cold start slow.",
                "s",
                _queries(
                    *(
                        (f(m.connection_create_time).quantile(q, pool), f"{_legend(pool)} {name}")
                        for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
                    )
                ),
            ),
            _timeseries(
                18,
                "Event-loop lag p99 per instance",
                "How late each instance's event loop ran (sampled every loop_lag_interval per worker). A blocked "
                "loop delays every request and every pool acquire: high lag with fast queries means blocking "
                "code in the app, not a slow database.",
                "s",
                _queries((f(m.event_loop_lag).quantile(0.99, "instance"), _legend("instance"))),
                width=24,
                thresholds=(("green", None), ("red", 0.1)),
            ),
        ),
    )
    server_view = _Row(
        104,
        "Database server view (pg_stat_activity)",
        (
            _timeseries(
                19,
                "Server connections: this app by state, other clients, budget",
                "What the database server sees: this app's backends by state (all replicas and workers, as "
                "pg_stat_activity counts them by application_name), other clients' backends, and the budget "
                "(max_connections minus reserved slots). Every worker reports the same server-wide numbers, "
                "so they are not summed.",
                "suffix:conn",
                _queries(
                    (
                        f"max by ({pool}, {server_state}) ({f(m.server_connections).select()})",
                        f"{_legend(pool)} this app {_legend(server_state)}",
                    ),
                    (
                        f"max by ({pool}) ({f(m.server_other_connections).select()})",
                        f"{_legend(pool)} other clients",
                    ),
                    (f"max by ({server}) ({f(m.connection_budget).select()})", f"budget {_legend(server)}"),
                ),
            ),
            _timeseries(
                20,
                "Idle in transaction (this app)",
                "This app's backends inside a transaction that run nothing: each holds its locks and a "
                "connection slot until the transaction ends.",
                "suffix:conn",
                _queries(
                    (
                        f"max by ({pool}) ({idle_in_transaction})",
                        _legend(pool),
                    )
                ),
            ),
            _timeseries(
                21,
                "Oldest open transaction",
                "Age of this app's oldest open transaction on the server. Long transactions hold locks and keep "
                "VACUUM from removing dead rows.",
                "s",
                _queries((f"max by ({pool}) ({f(m.server_oldest_transaction).select()})", _legend(pool))),
                thresholds=(("green", None), ("red", 300)),
            ),
            _timeseries(
                22,
                "Backends waiting on a lock",
                "This app's backends waiting for a lock right now: a blocked statement holds its connection "
                "for as long as it waits.",
                "short",
                _queries((f"max by ({pool}) ({f(m.server_lock_waits).select()})", _legend(pool))),
            ),
        ),
    )
    return [overview, pools, queries, holders, server_view]


def _width(panel: _Panel) -> int:
    grid = panel.build().grid_pos
    return _GRID_WIDTH if grid is None else grid.w


def _variable(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
    # A plain-string query is what the schema allows and what Grafana's Prometheus variable editor reads back.
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(_DATASOURCE)
        .query(query)
        .definition(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(include_all=True)
        .all_value(".*")
        .multi(multi=True)
        .current(model.VariableOption(text=["All"], value=["$__all"]))
        .options([])
        .regex("")
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .hide(model.VariableHide.DONT_HIDE)
    )


def _model() -> dict[str, Any]:
    """Return the dashboard model the SDK builds (no export envelope)."""
    max_series = _Family.of(OpsMetrics(CollectorRegistry()).connection_max).name
    builder = (
        dashboard_builders.Dashboard("SQLSpec ops: pools, queries, readiness")
        .uid("sqlspec-ops")
        .description(
            "Connection pools, statements, holders, the database server's view, readiness and connection "
            "budget of FastAPI apps instrumented with sqlspec-ops (metrics from /ops/metrics)."
        )
        .tags(["sqlspec", "sqlspec-ops", "postgresql", "fastapi"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .timezone("")
        .refresh("30s")
        .fiscal_year_start_month(0)
        .live_now(live_now=False)
        .week_start("")
        .version(1)
        .annotation(
            dashboard_builders.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(common.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(enable=True)
            .hide(hide=True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        .with_variable(_variable("job", "Job", f"label_values({max_series}, job)"))
        .with_variable(_variable("instance", "Instance", f'label_values({max_series}{{job=~"$job"}}, instance)'))
        .with_variable(_variable("pool", "Pool", f"label_values({max_series}{{{_TARGET}}}, {POOL_LABEL})"))
    )
    for row in _rows():
        if sum(_width(panel) for panel in row.panels) % _GRID_WIDTH:
            # The SDK wraps a line only once it is full: a partial line would push the next row's panels right.
            msg = f"row {row.title!r}: panel widths must fill whole lines of {_GRID_WIDTH}"
            raise ValueError(msg)
        builder = builder.with_row(dashboard_builders.Row(row.title).id(row.row_id))
        for panel in row.panels:
            builder = builder.with_panel(panel)
    built: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return built


def build_dashboard() -> dict[str, Any]:
    """Return the dashboard as Grafana's "Export for sharing externally" writes it (envelope first)."""
    dashboard = _model()
    panel_types = sorted({panel["type"] for panel in dashboard["panels"] if panel["type"] != "row"})
    names = {"stat": "Stat", "timeseries": "Time series"}
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
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": _GRAFANA_VERSION},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *({"type": "panel", "id": kind, "name": names[kind], "version": ""} for kind in panel_types),
        ],
        # An exported dashboard has no database id: Grafana assigns one on import.
        "id": None,
        **dashboard,
    }


def render() -> str:
    """Return the dashboard JSON exactly as committed."""
    return json.dumps(build_dashboard(), indent=2, ensure_ascii=False) + "\n"


class _RuleDumper(yaml.SafeDumper):
    """Write multi-line strings (PromQL, descriptions) as literal blocks, as alerts.yml does."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_RuleDumper.add_representer(str, _represent_str)


def build_prometheus_rule() -> dict[str, Any]:
    """Return the Prometheus Operator PrometheusRule whose groups are those of alerts.yml."""
    rules = yaml.safe_load(ALERTS_PATH.read_text(encoding="utf-8"))
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "sqlspec-ops",
            "labels": {"app.kubernetes.io/name": "sqlspec-ops-example", "app.kubernetes.io/part-of": "sqlspec-ops"},
        },
        "spec": {"groups": rules["groups"]},
    }


def render_prometheus_rule() -> str:
    """Return deploy/kubernetes/prometheusrule.yaml exactly as committed."""
    header = (
        "# Generated by dashboards/generate.py from dashboards/alerts.yml: edit the rules there, then run\n"
        "# python dashboards/generate.py. Your Prometheus' ruleSelector must match these labels.\n"
    )
    body = yaml.dump(build_prometheus_rule(), Dumper=_RuleDumper, sort_keys=False, width=120, allow_unicode=True)
    return header + body


def main(argv: list[str]) -> int:
    """Write the generated files, or with ``--check`` report whether the committed ones are up to date.

    Args:
        argv: Command-line arguments after the program name.

    Returns:
        The exit status.

    """
    outputs = ((DASHBOARD_PATH, render()), (PROMETHEUS_RULE_PATH, render_prometheus_rule()))
    if "--check" in argv:
        stale = [path for path, text in outputs if not path.exists() or path.read_text(encoding="utf-8") != text]
        for path in stale:
            sys.stderr.write(f"{path} is stale: run python dashboards/generate.py\n")
        return 1 if stale else 0
    for path, text in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
