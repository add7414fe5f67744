"""Read the committed Grafana dashboards and Prometheus rules the way Grafana and Prometheus would."""

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = (
    "ALERTS_PATH",
    "ALERTS_TEST_PATH",
    "DASHBOARDS_DIR",
    "Target",
    "alert_rules",
    "dashboard_files",
    "load_dashboard",
    "panels",
    "regex_value",
    "substitute",
    "targets",
    "variables",
)

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"
ALERTS_PATH = DASHBOARDS_DIR / "alerts.yml"
ALERTS_TEST_PATH = DASHBOARDS_DIR / "alerts.test.yml"

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


class Target:
    """One query of one panel."""

    __slots__ = ("dashboard", "expr", "panel", "ref_id")

    def __init__(self, dashboard: str, panel: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        """Keep where the query lives, for error messages."""
        self.dashboard = dashboard
        self.panel = panel
        self.ref_id: str = target["refId"]
        self.expr: str = target["expr"]

    def __repr__(self) -> str:
        """Name the query by dashboard, panel title and refId."""
        return f"{self.dashboard} / {self.panel['title']!r} / {self.ref_id}"


def dashboard_files() -> list[Path]:
    """Return every dashboard JSON file users may import."""
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    """Parse one dashboard file."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel, rows and panels inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(path: Path) -> list[Target]:
    """Return every query of every panel of a dashboard file."""
    dashboard = load_dashboard(path)
    return [Target(path.name, panel, target) for panel in panels(dashboard) for target in panel.get("targets", [])]


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return the dashboard's template variables in evaluation order."""
    found: list[dict[str, Any]] = dashboard.get("templating", {}).get("list", [])
    return found


def alert_rules() -> list[dict[str, Any]]:
    """Return every alerting rule of ``alerts.yml``."""
    data = yaml.safe_load(ALERTS_PATH.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def regex_value(values: list[str]) -> str:
    """Return what Grafana substitutes for a multi-value variable in a Prometheus regex matcher."""
    escaped = [re.escape(value).replace("\\", "\\\\") for value in values]  # a PromQL string holds the regex
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace ``$name`` and ``${name}`` with ``values[name]``.

    Raises:
        KeyError: If the expression uses a variable without a value.

    """

    def replace(match: re.Match[str]) -> str:
        return values[match.group(1) or match.group(2)]

    return _VARIABLE.sub(replace, expr)
