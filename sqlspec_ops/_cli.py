"""The ``sqlspec-ops`` command: check the connection budget before a rollout.

Usage::

    sqlspec-ops check MODULE:ATTR [--workers N] [--replicas N] [--max-connections N] [--timeout S] [--json]
    python -m sqlspec_ops check MODULE:ATTR ...

``ATTR`` names a ``SQLSpec``, a FastAPI app instrumented with ``SQLSpecOps`` (its ``SQLSpec`` is found at
``app.state.sqlspec_ops.spec``), or a factory returning either; like Uvicorn, the current directory is on the
import path. Options the app gave ``SQLSpecOps`` (``workers``, ``replicas``, ``max_connections``) apply unless
given here. The servers' limits are read over one standalone connection per config; no pool is created.

Exit status: 0 within budget, 1 oversubscribed, 2 on usage errors or when a server could not be read.
Nothing printed contains a password: errors are reported by class, and messages of import errors are
redacted.
"""

import argparse
import importlib
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from sqlspec import SQLSpec

from sqlspec_ops._budget import BudgetReport, check_pool_budget
from sqlspec_ops._ops import SQLSpecOps
from sqlspec_ops._options import check_seconds

__all__ = ("main",)

EXIT_ERROR = 2  # usage errors; the report's own exit_code says 0 (within budget) or 1 (oversubscribed)

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


class UsageError(Exception):
    """The command line or the named object cannot be used (exit status 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0 within budget, 1 oversubscribed, 2 usage or connection errors).

    """
    parser = _parser()
    args = parser.parse_args(argv)  # exits with 2 on bad usage, like every argparse program
    try:
        report = _check(args)
    except UsageError as exc:
        sys.stderr.write(f"sqlspec-ops check: error: {_redact(str(exc))}\n")
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
    else:
        sys.stdout.write(report.render() + "\n")
    if report.errors:
        sys.stderr.write(
            "sqlspec-ops check: some servers could not be read: check that they run and that the DSN is "
            "right (or pass --max-connections)\n"
        )
    return report.exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqlspec-ops", description="Operational checks for FastAPI apps built on SQLSpec."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="check that replicas x workers x pool max_size fits into each server's max_connections",
        description=(
            "Print the connection budget of every database server the app's pools point at. "
            "Exit 0 within budget, 1 oversubscribed, 2 on usage or connection errors."
        ),
    )
    check.add_argument("target", metavar="MODULE:ATTR", help="a SQLSpec, an instrumented app, or a factory")
    check.add_argument("--workers", type=_positive, help="workers per replica (default: detected)")
    check.add_argument("--replicas", type=_positive, help="replicas (hosts, pods) running the app (default 1)")
    check.add_argument(
        "--max-connections",
        type=_positive,
        help="take this as each server's budget instead of reading the servers (no connection is made)",
    )
    check.add_argument("--timeout", type=float, default=5.0, help="seconds reading the servers may take")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a positive integer, got {raw!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _check(args: argparse.Namespace) -> BudgetReport:
    spec, ops = _resolve(args.target)
    workers = args.workers if args.workers is not None else getattr(ops, "workers", None)
    replicas = args.replicas if args.replicas is not None else getattr(ops, "replicas", 1)
    max_connections = args.max_connections
    if max_connections is None:
        max_connections = getattr(ops, "max_connections", None)
    try:
        check_seconds("--timeout", args.timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not spec.configs:
        msg = f"{args.target} has no database configs (add them with spec.add_config(...))"
        raise UsageError(msg)
    try:
        return check_pool_budget(
            spec, workers=workers, replicas=replicas, max_connections=max_connections, timeout=args.timeout
        )
    except (ValueError, TypeError, TimeoutError) as exc:
        raise UsageError(str(exc)) from exc


def _resolve(target: str) -> tuple[Any, Any]:
    """Import ``MODULE:ATTR`` and find the ``SQLSpec`` (and the ``SQLSpecOps``, when there is one)."""
    obj = _import_target(target)
    for _ in range(2):  # the object itself, else what a factory returns
        if isinstance(obj, SQLSpec):
            return obj, None
        ops = _ops_of(obj)
        if ops is not None:
            return ops.spec, ops
        if not callable(obj):
            break
        try:
            obj = obj()
        except Exception as exc:
            msg = f"calling the factory {target} failed: {type(exc).__name__}: {exc}"
            raise UsageError(msg) from exc
    msg = (
        f"{target} is a {type(obj).__name__}: expected a SQLSpec, an app instrumented with "
        "SQLSpecOps(spec).instrument(app), or a factory returning one"
    )
    raise UsageError(msg)


def _import_target(target: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        msg = f"expected MODULE:ATTR (e.g. myapp.main:app), got {target!r}"
        raise UsageError(msg)
    if "" not in sys.path:  # like uvicorn: modules of the current directory are importable
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        msg = f"could not import {module_name!r}: {type(exc).__name__}: {exc}"
        raise UsageError(msg) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            msg = f"module {module_name!r} has no attribute {attr!r}"
            raise UsageError(msg) from None
    return obj


def _ops_of(obj: Any) -> Any:
    if isinstance(obj, SQLSpecOps):
        return obj
    ops = getattr(getattr(obj, "state", None), "sqlspec_ops", None)
    return ops if isinstance(ops, SQLSpecOps) else None


def _redact(text: str) -> str:
    """Mask passwords in DSNs and key=value strings that user code may have put into an error message."""
    return _KV_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
