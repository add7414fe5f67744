"""The Kubernetes manifests parse, carry the alert rules unchanged, and probe and scrape what the example app serves."""

import inspect
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import generate
from examples import app as example
from tests.support.asgi import serving
from tests.support.dashboards import alert_rules

KUBERNETES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
EXPECTED_KINDS = {"Deployment", "PodMonitor", "PrometheusRule"}


def manifests() -> dict[str, dict[str, Any]]:
    """Return every object of deploy/kubernetes/*.yaml by kind (each kind appears once)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert document["kind"] not in found, f"{path.name}: a second {document['kind']}"
            found[document["kind"]] = document
    return found


def container() -> dict[str, Any]:
    """Return the app container of the Deployment."""
    (only,) = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    app_container: dict[str, Any] = only
    return app_container


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run promtool (Debian's prometheus package; scripts/test installs it) and return its result."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install prometheus (scripts/test does)")
    return subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_manifests_parse() -> None:
    """Every file is YAML with a Deployment, a PodMonitor and a PrometheusRule, each named, of a known API group."""
    found = manifests()
    assert set(found) == EXPECTED_KINDS
    assert found["Deployment"]["apiVersion"] == "apps/v1"
    assert found["PodMonitor"]["apiVersion"] == "monitoring.coreos.com/v1"
    assert found["PrometheusRule"]["apiVersion"] == "monitoring.coreos.com/v1"
    for kind, document in found.items():
        assert document["metadata"]["name"], kind


def test_prometheus_rule_is_generated_from_the_alert_rules() -> None:
    """The PrometheusRule's groups equal alerts.yml's, and the committed file is what the generator writes."""
    rule = manifests()["PrometheusRule"]
    source = yaml.safe_load(generate.ALERTS_PATH.read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == source["groups"]
    assert generate.PROMETHEUS_RULE_PATH.read_text(encoding="utf-8") == generate.render_prometheus_rule(), (
        "deploy/kubernetes/prometheusrule.yaml is stale: run python dashboards/generate.py"
    )


def test_generator_check_reports_a_stale_rule_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`generate.py --check` exits 1 when the PrometheusRule differs from alerts.yml (so staleness cannot pass)."""
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text(generate.render_prometheus_rule().replace("> 0.9", "> 0.8", 1), encoding="utf-8")
    monkeypatch.setattr(generate, "PROMETHEUS_RULE_PATH", stale)
    assert generate.main(["--check"]) == 1
    stale.write_text(generate.render_prometheus_rule(), encoding="utf-8")
    assert generate.main(["--check"]) == 0


def test_promtool_accepts_the_prometheus_rule_groups(tmp_path: Path) -> None:
    """`promtool check rules` accepts the PrometheusRule's groups, every alert of alerts.yml included."""
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": manifests()["PrometheusRule"]["spec"]["groups"]}), encoding="utf-8")
    result = run_promtool("check", "rules", rules.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_rejects_broken_groups(tmp_path: Path) -> None:
    """A group with an invalid expression fails `promtool check rules` (so the test above can fail)."""
    groups = manifests()["PrometheusRule"]["spec"]["groups"]
    groups[0]["rules"][0]["expr"] = "sum by (job (db_client_connection_max)"
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    result = run_promtool("check", "rules", rules.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def _args(found: dict[str, Any]) -> list[str]:
    return [*found.get("command", []), *found.get("args", [])]


def test_ports_match_the_example_app() -> None:
    """The container listens where examples/app.py does, and the probes and the PodMonitor use that port."""
    found = container()
    (port,) = found["ports"]
    arguments = _args(found)
    default = re.search(r'_env_int\("PORT", (\d+)\)', inspect.getsource(example.main))
    assert default is not None, "examples/app.py no longer reads PORT with a default"
    assert port["containerPort"] == int(default.group(1))
    assert arguments[arguments.index("--port") + 1] == str(port["containerPort"])
    assert arguments[arguments.index("--host") + 1] == "0.0.0.0", "a pod must listen beyond loopback"  # noqa: S104
    assert any(argument.startswith("examples.app:app") for argument in arguments)
    for probe in ("livenessProbe", "readinessProbe"):
        assert found[probe]["httpGet"]["port"] in (port["name"], port["containerPort"]), probe
    (endpoint,) = manifests()["PodMonitor"]["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == port["name"]


def test_pod_monitor_selects_the_pods_and_sends_their_token() -> None:
    """The PodMonitor matches the Deployment's pod labels and reads the token from the Secret the app reads."""
    deployment = manifests()["Deployment"]
    monitor = manifests()["PodMonitor"]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["authorization"]["type"] == "Bearer"
    env = {item["name"]: item for item in container()["env"]}
    assert endpoint["authorization"]["credentials"] == env["SQLSPEC_OPS_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert "PROMETHEUS_MULTIPROC_DIR" in env, "one target per pod needs the workers' shared metric files"


async def test_probes_and_scrape_path_answer_on_the_example_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe paths answer 200 on the example app without the token, the scrape path only with it."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("ANALYTICS_DATABASE_URL", raising=False)
    monkeypatch.setenv("SQLITE_DIR", str(tmp_path))
    monkeypatch.setenv("LOG_FORMAT", "off")
    monkeypatch.setenv("SQLSPEC_OPS_TOKEN", "k8s-test-token")
    found = container()
    (endpoint,) = manifests()["PodMonitor"]["spec"]["podMetricsEndpoints"]
    app = example.create_app()
    async with serving(app) as client:
        for probe in ("livenessProbe", "readinessProbe"):
            response = await client.get(found[probe]["httpGet"]["path"])
            assert response.status_code == 200, f"{probe}: {response.status_code} {response.text}"
        assert (await client.get(endpoint["path"])).status_code == 401
        scrape = await client.get(endpoint["path"], headers={"Authorization": "Bearer k8s-test-token"})
        assert scrape.status_code == 200
        assert "db_client_connection_max" in scrape.text


def test_probe_timeouts_exceed_the_health_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both probes wait longer than the example app's readiness pings may take, so a slow ping is not a failure."""
    monkeypatch.setenv("SQLITE_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("LOG_FORMAT", "off")
    health_timeout = example.create_app().state.sqlspec_ops.health.timeout
    found = container()
    for probe in ("livenessProbe", "readinessProbe"):
        assert found[probe]["timeoutSeconds"] > health_timeout, probe
    assert found["readinessProbe"]["timeoutSeconds"] >= health_timeout + 1, "room for the acquire and the answer"
