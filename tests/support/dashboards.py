"""Read the committed Grafana dashboards and Prometheus rules the way Grafana and Prometheus would.

:func:`schema_errors` checks a dashboard against Grafana's own JSON Schemas (draft-07, copied unchanged into
``tests/data/grafana-schemas`` from grafana-foundation-sdk, Apache-2.0; see the README there), the closest
offline judge of what Grafana imports: no Grafana server can run on CI machines.
"""

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

__all__ = (
    "ALERTS_PATH",
    "ALERTS_TEST_PATH",
    "DASHBOARDS_DIR",
    "SCHEMAS_DIR",
    "Target",
    "alert_rules",
    "dashboard_files",
    "load_dashboard",
    "panels",
    "regex_value",
    "schema_errors",
    "substitute",
    "targets",
    "variables",
)

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"
ALERTS_PATH = DASHBOARDS_DIR / "alerts.yml"
ALERTS_TEST_PATH = DASHBOARDS_DIR / "alerts.test.yml"
SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "data" / "grafana-schemas"
# The "Export for sharing externally" envelope: Grafana reads it on import, it is not part of the model.
_ENVELOPE = ("__inputs", "__elements", "__requires")

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


@cache
def _definitions(schema_file: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCHEMAS_DIR / f"{schema_file}.jsonschema.json").read_text(encoding="utf-8"))
    return document


@cache
def _validator(schema_file: str, definition: str) -> Draft7Validator:
    """Return a validator for one definition of one schema file (the files only reference their own definitions)."""
    document = _definitions(schema_file)
    schema = {
        "$schema": document["$schema"],
        "$ref": f"#/definitions/{definition}",
        "definitions": document["definitions"],
    }
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _errors(validator: Draft7Validator, instance: Any, where: str) -> list[str]:
    return [
        f"{where}{''.join(f'/{part}' for part in error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda error: list(map(str, error.absolute_path)))
    ]


def schema_errors(dashboard: Mapping[str, Any]) -> list[str]:
    """Return every way a dashboard breaks Grafana's JSON Schemas (empty when it conforms).

    The model (envelope stripped) is checked against ``dashboard``; each panel's ``options`` and
    ``fieldConfig.defaults.custom`` against its kind's ``Options`` and ``FieldConfig`` (a kind without a schema
    file is an error: it would go unchecked); each target against ``prometheus``'s ``Dataquery``.
    """
    model = {key: value for key, value in dashboard.items() if key not in _ENVELOPE}
    errors = _errors(_validator("dashboard", "Dashboard"), model, "dashboard")
    for panel in panels(dashboard):
        kind = panel.get("type")
        if kind == "row":
            continue
        where = f"panel {panel.get('id')} ({kind})"
        if not (SCHEMAS_DIR / f"{kind}.jsonschema.json").is_file():
            errors.append(f"{where}: no schema for panel kind {kind!r} in {SCHEMAS_DIR}")
            continue
        errors += _errors(_validator(kind, "Options"), panel.get("options", {}), f"{where} options")
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if "FieldConfig" in _definitions(kind)["definitions"]:
            errors += _errors(_validator(kind, "FieldConfig"), custom or {}, f"{where} fieldConfig.defaults.custom")
        elif custom:
            errors.append(f"{where}: fieldConfig.defaults.custom is set but {kind} defines no custom field config")
        for index, target in enumerate(panel.get("targets", [])):
            errors += _errors(_validator("prometheus", "Dataquery"), target, f"{where} targets/{index}")
    return errors
