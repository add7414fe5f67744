"""Every dashboard and alert expression works against a real Prometheus scraping the example app under load.

One module-wide stack: the example app (``examples/app.py``) served by uvicorn with two workers in
prometheus_client's multiprocess mode against the harness PostgreSQL, with pools of two connections and an
acquire timeout so callers wait and some give up; a real Prometheus started with ``examples/prometheus.yml``
(only targets, paths and intervals changed: 1 s scrapes) and ``dashboards/alerts.yml``. A short mixed load
runs (CRUD, two-database reads, slow statements that starve the pool, failing statements, a connection held
past ``leak_threshold``, transactions left open on one row, a blocked event loop), then every query
goes through Prometheus's HTTP API with the template variables resolved the way Grafana resolves them.
"""

import asyncio
import contextlib
import math
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.dashboards import (
    ALERTS_PATH,
    alert_rules,
    dashboard_files,
    load_dashboard,
    regex_value,
    substitute,
    targets,
    variables,
)
from tests.support.paths import ROOT
from tests.support.postgres import PostgresServer
from tests.support.processes import running_server
from tests.support.waiting import eventually_blocking

pytestmark = pytest.mark.slow

EXAMPLE_CONFIG = ROOT / "examples" / "prometheus.yml"
RATE_INTERVAL = "1m"  # what Grafana's $__rate_interval becomes at this zoom level with a 1 s scrape interval
STARTUP_TIMEOUT = 60.0


@dataclass
class Stack:
    """The running app and Prometheus."""

    app_url: str
    prometheus_url: str
    client: httpx.Client
    app_log: Path
    prometheus_log: Path
    variables: dict[str, str] = field(default_factory=dict)
    variable_values: dict[str, list[str]] = field(default_factory=dict)

    def query(self, expr: str) -> dict[str, Any]:
        """Run an instant query; return Prometheus's JSON answer (errors included)."""
        response = self.client.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr})
        body: dict[str, Any] = response.json()
        return body

    def logs(self) -> str:
        """Return the tails of both logs, for failure messages."""
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-4000:]}"
            for path in (self.app_log, self.prometheus_log)
        )


def check_expression(stack: Stack, expr: str, *, require_data: bool) -> str | None:
    """Return what is wrong with an expression (it does not parse, or returns no series), or None."""
    answer = stack.query(expr)
    if answer.get("status") != "success":
        return f"{answer.get('errorType')}: {answer.get('error')}"
    if require_data and not answer["data"]["result"]:
        return "no series"
    return None


# -- processes ------------------------------------------------------------------------------------------


def _app_command() -> list[str]:
    return [sys.executable, "-m", "uvicorn", "examples.app:app", "--host", "127.0.0.1", "--port", "{port}",
            "--workers", "2", "--no-access-log"]  # fmt: skip


def _app_env(workdir: Path, pg: PostgresServer, token: str) -> dict[str, str]:
    multiproc = workdir / "multiproc"
    multiproc.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": pg.dsn,
        "POOL_MIN_SIZE": "1",
        "POOL_MAX_SIZE": "2",
        "ACQUIRE_TIMEOUT": "0.5",
        "LEAK_THRESHOLD": "1",
        "SERVER_STATS_INTERVAL": "0.5",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "SQLSPEC_OPS_TOKEN": token,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("WEB_CONCURRENCY", None)
    return env


def prometheus_config(target: str, token_file: Path) -> dict[str, Any]:
    """Return examples/prometheus.yml pointed at one local target, scraping every second."""
    config: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(ALERTS_PATH)]
    (job,) = config["scrape_configs"]
    job["authorization"]["credentials_file"] = str(token_file)
    job["static_configs"] = [{"targets": [target]}]
    return config


def _prometheus_command(workdir: Path, target: str, token_file: Path) -> list[str]:
    """Write the Prometheus config (checked by promtool) and return the command that serves it on ``{port}``."""
    binary = shutil.which("prometheus")
    if binary is None or shutil.which("promtool") is None:
        pytest.fail("prometheus/promtool missing: apt-get install prometheus (scripts/test does)")
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(prometheus_config(target, token_file)), encoding="utf-8")
    checked = subprocess.run(
        ["promtool", "check", "config", str(config_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        "--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]


# -- load -----------------------------------------------------------------------------------------------


async def _drive_load(base_url: str) -> None:
    """CRUD, reads of both databases, pool-starving slow statements and failing statements, concurrently."""
    # No keep-alive: uvicorn closes a connection after an unhandled exception (the failing statements), and
    # reusing such a connection races with the close.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        tag = secrets.token_hex(4)
        created = await asyncio.gather(
            *(client.post("/users", json={"name": f"u{i}", "email": f"u{i}-{tag}@example.com"}) for i in range(12))
        )
        assert all(response.status_code == httpx.codes.CREATED for response in created), created
        ids = [response.json()["id"] for response in created]
        for _round in range(3):
            requests = [
                *(client.get("/users") for _ in range(10)),
                *(client.get(f"/users/{user_id}") for user_id in ids),
                *(client.get("/dashboard") for _ in range(6)),
                *(client.get("/demo/slow", params={"seconds": 0.3}) for _ in range(6)),
                *(client.get("/demo/fail") for _ in range(4)),
                client.put(f"/users/{ids[0]}", json={"name": "renamed", "email": f"renamed-{tag}@example.com"}),
            ]
            responses = await asyncio.gather(*requests)
            assert any(response.status_code == httpx.codes.OK for response in responses)
        # Failing statements once more, one at a time: under the concurrent rounds they may all have given up
        # waiting for a connection (503) before reaching the database.
        failed = [await client.get("/demo/fail") for _ in range(3)]
        assert all(response.status_code == httpx.codes.INTERNAL_SERVER_ERROR for response in failed), failed
        # More callers holding connections for 1 s than two pools of two can serve within the 0.5 s acquire
        # timeout: some wait, some give up (HTTP 503).
        starved = await asyncio.gather(*(client.get("/demo/slow", params={"seconds": 1}) for _ in range(12)))
        assert any(response.status_code != httpx.codes.OK for response in starved), "no acquire timed out"
        # The holders' signals: a connection held across a non-database wait past leak_threshold (a leak, held
        # but idle), two transactions on one row (idle in transaction, the oldest transaction, a lock wait seen
        # by the server-view sampler), and a handler that blocks the event loop.
        await asyncio.gather(
            client.get("/demo/hold", params={"seconds": 2}),
            client.get("/demo/transaction", params={"seconds": 2}),
            client.get("/demo/transaction", params={"seconds": 2}),
            *(client.get("/demo/block", params={"seconds": 0.2}) for _ in range(4)),
        )
        await client.delete(f"/users/{ids[-1]}")
        ready = await client.get("/ops/ready")
        assert ready.status_code == httpx.codes.OK, ready.text


# -- the stack ------------------------------------------------------------------------------------------


def _resolve_variables(stack: Stack) -> None:
    """Evaluate each dashboard's variable queries in order, as Grafana does, and keep regex values."""
    for path in dashboard_files():
        for variable in variables(load_dashboard(path)):
            definition = substitute(variable["definition"], stack.variables)
            call = definition.removeprefix("label_values(").removesuffix(")")
            selector, _, label = call.rpartition(",")
            params = {"match[]": selector.strip()} if selector else {}
            label = label.strip()
            answer = stack.client.get(f"{stack.prometheus_url}/api/v1/label/{label}/values", params=params).json()
            assert answer["status"] == "success", (definition, answer)
            values: list[str] = answer["data"]
            name = variable["name"]
            assert values, f"{path.name}: variable {name} ({definition}) has no values\n{stack.logs()}"
            stack.variable_values[name] = values
            stack.variables[name] = regex_value(values)


def _wait_for_scrapes(stack: Stack, *, after: float, count: int) -> None:
    """Wait until Prometheus has scraped the app successfully ``count`` times after ``after`` (epoch)."""
    seen: set[float] = set()
    # timestamp() of a plain selector is the time of the last scrape (of an expression, the query time).
    successful = 'timestamp(up{job="api"}) and on (instance) up{job="api"} == 1'

    def scraped() -> bool:
        seen.update(float(series["value"][1]) for series in stack.query(successful)["data"]["result"])
        return len({moment for moment in seen if moment > after}) >= count

    eventually_blocking(
        scraped,
        timeout=30,
        interval=0.25,
        what=lambda: f"{count} scrapes of the app (saw {len(seen)})\n{stack.logs()}",
    )


@pytest.fixture(scope="module")
def stack(pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The example app under load, scraped every second by a real Prometheus with the alert rules loaded."""
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    token = secrets.token_urlsafe(24)
    token_file = workdir / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    with contextlib.ExitStack() as processes, httpx.Client(timeout=10) as client:
        app = processes.enter_context(
            running_server(
                _app_command(),
                _app_env(workdir, pg, token),
                log=workdir / "app.log",
                ready="/ops/ready",
                ready_timeout=STARTUP_TIMEOUT,
            )
        )
        prometheus = processes.enter_context(
            running_server(
                _prometheus_command(workdir, f"127.0.0.1:{app.port}", token_file),
                os.environ,
                cwd=workdir,
                log=workdir / "prometheus.log",
                ready="/-/ready",
                ready_timeout=STARTUP_TIMEOUT,
            )
        )
        stack = Stack(app.base_url, prometheus.base_url, client, app.log, prometheus.log)
        # Prometheus hands new targets to the scrapers at most every 5 s: load only once it scrapes the app.
        _wait_for_scrapes(stack, after=time.time(), count=2)
        asyncio.run(_drive_load(app.base_url))
        _wait_for_scrapes(stack, after=time.time(), count=3)
        _resolve_variables(stack)
        stack.variables["__rate_interval"] = RATE_INTERVAL
        yield stack


# -- tests ----------------------------------------------------------------------------------------------


def test_prometheus_scrapes_the_app_with_the_example_config(stack: Stack) -> None:
    """The example scrape config (bearer token, /ops/metrics) gives a healthy target; without it the app says 401."""
    assert stack.client.get(f"{stack.app_url}/ops/metrics").status_code == httpx.codes.UNAUTHORIZED
    answer = stack.client.get(f"{stack.prometheus_url}/api/v1/targets").json()
    (target,) = answer["data"]["activeTargets"]
    assert target["health"] == "up", target
    assert target["scrapeUrl"].endswith("/ops/metrics")
    assert target["labels"]["job"] == "api"


def test_template_variables_resolve(stack: Stack) -> None:
    """The job, instance and pool variables list the real job, the app's address and both pools."""
    assert stack.variable_values["job"] == ["api"]
    assert stack.variable_values["instance"] == [stack.app_url.removeprefix("http://")]
    assert set(stack.variable_values["pool"]) == {"primary", "analytics"}


def test_every_dashboard_expression_returns_data(stack: Stack) -> None:
    """Every query of every dashboard panel parses and returns at least one series."""
    problems = []
    checked = 0
    for path in dashboard_files():
        for target in targets(path):
            expr = substitute(target.expr, stack.variables)
            problem = check_expression(stack, expr, require_data=True)
            checked += 1
            if problem is not None:
                problems.append(f"{target}: {problem}\n    {expr}")
    assert checked > 0
    assert not problems, "\n".join(problems) + "\n" + stack.logs()


def test_every_alert_expression_parses_and_evaluates(stack: Stack) -> None:
    """Every alert expression parses in queries, and Prometheus evaluates each loaded rule without error."""
    problems = [
        f"{rule['alert']}: {problem}"
        for rule in alert_rules()
        if (problem := check_expression(stack, rule["expr"], require_data=False)) is not None
    ]
    assert not problems, "\n".join(problems)
    rules: dict[str, dict[str, Any]] = {}

    def every_rule_evaluated() -> bool:
        groups = stack.client.get(f"{stack.prometheus_url}/api/v1/rules").json()["data"]["groups"]
        rules.update({rule["name"]: rule for group in groups for rule in group["rules"]})
        return all(rule["lastEvaluation"] > "0001-01-01T00:00:00Z" for rule in rules.values())

    eventually_blocking(every_rule_evaluated, timeout=10, interval=0.5, what="every rule to be evaluated")
    assert set(rules) == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] == "ok" for rule in rules.values()), rules


_TOP_LEVEL_OPERATORS = (" > ", " >= ", " == ", " < ", " != ", " or ")


def _signal(expr: str) -> str:
    """Return an alert expression's left operand: what it compares with its threshold (or combines with ``or``)."""
    depth = 0
    text = " ".join(expr.split())
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and (
            text.startswith((" > ", " >= ", " == ", " < ", " != "), index) or text.startswith(" or ", index)
        ):
            return text[:index]
    return text


def test_every_alert_signal_returns_data(stack: Stack) -> None:
    """What each alert compares with its threshold returns series under the load, so no alert watches nothing."""
    problems = [
        f"{rule['alert']}: {problem}\n    {_signal(rule['expr'])}"
        for rule in alert_rules()
        if (problem := check_expression(stack, _signal(rule["expr"]), require_data=True)) is not None
    ]
    assert not problems, "\n".join(problems) + "\n" + stack.logs()
    assert _signal("sum(x) > 0.9") == "sum(x)"  # the operand is cut at the top level only
    assert _signal("max by (a) (x > 1) > on (a) max by (a) (y)") == "max by (a) (x > 1)"


def test_the_checker_rejects_wrong_expressions(stack: Stack) -> None:
    """An unexported metric, an unexported label or a syntax error makes the expression check fail."""
    wrong = {
        "metric the package does not export": 'sum(db_client_connection_used{job=~"$job", instance=~"$instance"})',
        "label the package does not export": 'sum by (pool) (db_client_connection_max{pool=~"$pool"})',
        "label value that does not exist": 'sum(db_client_connection_count{db_client_connection_state="busy"})',
        "syntax error": "sum by (db_client_connection_pool_name (db_client_connection_max",
    }
    for reason, expr in wrong.items():
        problem = check_expression(stack, substitute(expr, stack.variables), require_data=True)
        assert problem is not None, f"the checker accepted a {reason}: {expr}"
    good = 'sum by (db_client_connection_pool_name) (db_client_connection_max{db_client_connection_pool_name=~"$pool"})'
    assert check_expression(stack, substitute(good, stack.variables), require_data=True) is None


def _values(stack: Stack, expr: str) -> dict[str, float]:
    answer = stack.query(substitute(expr, stack.variables))
    assert answer["status"] == "success", answer
    return {
        ",".join(f"{key}={value}" for key, value in sorted(series["metric"].items())): float(series["value"][1])
        for series in answer["data"]["result"]
    }


def test_panels_show_the_load(stack: Stack) -> None:
    """The panels show what the load did: waits, timeouts, failing statements and both pools' queries."""
    by_title = {target.panel["title"]: target for path in dashboard_files() for target in targets(path)}
    waits = _values(stack, next(t.expr for title, t in by_title.items() if title.startswith("Acquire wait")))
    assert any(value > 0.01 for value in waits.values() if not math.isnan(value)), waits
    timeouts = _values(stack, by_title["Acquire timeouts"].expr)
    assert timeouts.get("db_client_connection_pool_name=primary", 0) > 0, timeouts
    errors = _values(stack, by_title["Query errors by error_type"].expr)
    assert any(key.startswith("db_client_connection_pool_name=primary,error_type=") for key in errors), errors
    rates = _values(stack, by_title["Query rate by operation"].expr)
    assert {key.split(",")[0] for key in rates} == {
        "db_client_connection_pool_name=analytics",
        "db_client_connection_pool_name=primary",
    }, rates
    ready = _values(stack, by_title["Database readiness"].expr)
    assert set(ready.values()) == {1.0}, ready
