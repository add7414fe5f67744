"""CPU and wall time that statement telemetry adds per statement, against a throwaway PostgreSQL (asyncpg, psycopg).

Usage::

    .venv/bin/python -m benchmarks.statement_overhead            # full run: 20,000 statements x 5 rounds
    .venv/bin/python -m benchmarks.statement_overhead --quick    # seconds-long smoke run
    .venv/bin/python -m benchmarks.statement_overhead --profile ops-metrics-spans   # where the time goes

Every variant gets its own ``SQLSpec`` with a one-connection asyncpg pool on the same server and keeps one
session open for the whole run, awaiting ``select_value("SELECT $1::int", i)`` inside a request-like context
(the per-request statement tally is active, as under the middleware). Variants are interleaved in chunks of
500 statements, the order rotated every cycle, 20,000 statements per variant per round, 5 rounds: on a shared
2-core machine, whole-run timings drift by tens of µs per statement, chunk-paired differences do not. Per
variant: the median per-chunk client CPU (``time.process_time``: this process only, PostgreSQL excluded) and
wall time per statement, and the added cost, the median over cycles of the difference to ``bare`` in the same
cycle.

Variants:

- ``bare``: no observability at all (SQLSpec's idle fast path).
- ``noop-hooks``: three no-op lifecycle hooks (``on_query_start``, ``on_query_complete``, ``on_error``), the same
  set sqlspec-ops registers: what SQLSpec's instrumented execution path costs before any of our code runs.
- ``ops-metrics``: sqlspec-ops, metrics only (no tracer provider anywhere). On asyncpg it times statements on
  asyncpg's ``connection_class`` (``sqlspec_ops/_adapters/asyncpg.py``) and SQLSpec stays on its idle path.
- ``ops-metrics-spans``: sqlspec-ops with an SDK tracer provider whose only span processor drops spans.
- ``ops-metrics-hooks``: ``ops-metrics`` on SQLSpec's lifecycle hooks, as before the driver path (the config
  carries one no-op lifecycle hook of its own, so SQLSpec is not idle and sqlspec-ops registers its hooks).
- ``sqlspec-prometheus``: SQLSpec's built-in Prometheus observer (``extension_config={"prometheus": ...}``).
- ``sqlspec-spans-prometheus``: SQLSpec's built-in spans (same dropping provider) plus its Prometheus observer.
- ``psycopg-bare``, ``psycopg-ops-metrics``, ``psycopg-ops-metrics-spans``, ``psycopg-ops-metrics-hooks``: the
  same on psycopg (``SELECT %s::int``, a one-connection psycopg_pool); their added cost is to ``psycopg-bare``.
  sqlspec-ops times psycopg statements on its ``cursor_factory`` (``sqlspec_ops/_adapters/psycopg.py``).
- ``driver-logger`` and ``driver-connclass``: where a driver-hook path fits. SQLSpec stays on its idle fast path
  and asyncpg itself reports each statement to a metric + tally prototype (``benchmarks/driver_hooks.py``):
  ``add_query_logger`` in the pool's ``init``, or a ``Connection`` subclass through ``connection_class``.

Results go to ``benchmarks/results/statement_overhead.json`` and ``.md`` (``statement_overhead-quick.*`` with
``--quick``).
"""

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.context import Context  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from sqlspec import SQLSpec  # noqa: E402
from sqlspec.adapters.asyncpg import AsyncpgConfig  # noqa: E402
from sqlspec.observability import ObservabilityConfig  # noqa: E402

from benchmarks.driver_hooks import TimedConnection, add_query_logger  # noqa: E402
from sqlspec_ops import SQLSpecOps  # noqa: E402
from sqlspec_ops._context import RequestTally  # noqa: E402
from sqlspec_ops._context import request_tally_var as _tally  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SQL = "SELECT $1::int"
VARIANTS = (
    "bare",
    "noop-hooks",
    "ops-metrics",
    "ops-metrics-spans",
    "ops-metrics-hooks",
    "sqlspec-prometheus",
    "sqlspec-spans-prometheus",
    "driver-logger",
    "driver-connclass",
    "psycopg-bare",
    "psycopg-ops-metrics",
    "psycopg-ops-metrics-spans",
    "psycopg-ops-metrics-hooks",
)
_PSYCOPG = "psycopg-"
PSYCOPG_SQL = "SELECT %s::int"
# Added CPU µs per statement (issue 13), on either driver.
TARGETS = {
    "ops-metrics": 15.0,
    "ops-metrics-spans": 60.0,
    "psycopg-ops-metrics": 15.0,
    "psycopg-ops-metrics-spans": 60.0,
}


def baseline_of(name: str) -> str:
    """Return the variant a variant's added cost is measured against (the bare set-up of its driver)."""
    return "psycopg-bare" if name.startswith(_PSYCOPG) else "bare"


class DropSpans(SpanProcessor):
    """A span processor that discards every span: spans are created and ended, never exported."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Ignore the span."""

    def on_end(self, span: ReadableSpan) -> None:
        """Drop the span."""


def _dropping_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(DropSpans())
    return provider


def _noop(_context: dict[str, Any]) -> None:
    return None


class Variant:
    """One SQLSpec (and maybe SQLSpecOps) set-up with its own one-connection pool."""

    def __init__(self, name: str, dsn: str) -> None:
        self.name = name
        self.spec = SQLSpec()
        self.sql = PSYCOPG_SQL if name.startswith(_PSYCOPG) else SQL
        kind = name.removeprefix(_PSYCOPG)
        extension_config: dict[str, Any] = {}
        observability: ObservabilityConfig | None = None
        if kind == "noop-hooks":
            hooks: Any = {"on_query_start": [_noop], "on_query_complete": [_noop], "on_error": [_noop]}
            observability = ObservabilityConfig(lifecycle=hooks)
        elif kind == "ops-metrics-hooks":
            observability = ObservabilityConfig(lifecycle=cast("Any", {"on_query_start": [_noop]}))
        elif name == "sqlspec-prometheus":
            extension_config["prometheus"] = {"registry": CollectorRegistry()}
        elif name == "sqlspec-spans-prometheus":
            extension_config["prometheus"] = {"registry": CollectorRegistry()}
            extension_config["otel"] = {"tracer_provider": _dropping_provider()}
        connection_config: dict[str, Any] = {"dsn": dsn, "min_size": 1, "max_size": 1}
        if name == "driver-logger":
            connection_config["init"] = add_query_logger
        elif name == "driver-connclass":
            connection_config["connection_class"] = TimedConnection
        self.config: Any
        if name.startswith(_PSYCOPG):
            from sqlspec.adapters.psycopg import PsycopgAsyncConfig  # noqa: PLC0415 - the psycopg extra

            self.config = self.spec.add_config(
                PsycopgAsyncConfig(
                    connection_config={"conninfo": dsn, "min_size": 1, "max_size": 1, "autocommit": True},
                    observability_config=observability,
                )
            )
        else:
            self.config = self.spec.add_config(
                AsyncpgConfig(
                    connection_config=connection_config,
                    observability_config=observability,
                    extension_config=extension_config,
                )
            )
        self.ops: SQLSpecOps | None = None
        if kind.startswith("ops-"):
            provider = _dropping_provider() if kind == "ops-metrics-spans" else None
            self.ops = SQLSpecOps(
                self.spec,
                registry=CollectorRegistry(),
                tracer_provider=provider,
                slow_query_threshold=None,
                max_queries_per_request=None,
            )

    async def open(self) -> None:
        """Install sqlspec-ops (if any) and open the pool."""
        if self.ops is not None:
            await self.ops.startup()
        await self.spec.get_pool(self.config)

    async def close(self) -> None:
        """Close the pool."""
        if self.ops is not None:
            await self.ops.shutdown()
        await self.spec.close_all_pools()


async def _chunk(session: Any, statements: int, sql: str = SQL) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for index in range(statements):
        await session.select_value(sql, index)
    return time.process_time() - cpu, time.perf_counter() - wall


def _median_us(values: list[float], statements: int) -> float:
    return round(statistics.median(values) / statements * 1e6, 2)


async def measure(
    dsn: str, *, statements: int, rounds: int, chunk: int, warmup: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Interleave every variant chunk by chunk on open sessions; summarise per statement.

    Each variant keeps one session open for the whole run. A cycle runs ``chunk`` statements on every variant
    (order rotated per cycle); ``statements // chunk`` cycles make a round. Added cost is the median over cycles
    of the difference to ``bare`` in the same cycle, so drift of a shared machine cancels out.
    """
    variants = [Variant(name, dsn) for name in VARIANTS]
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    rounds_cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for variant in variants:
        await variant.open()
    try:
        async with AsyncExitStack() as stack:
            sessions = [
                (variant, await stack.enter_async_context(variant.spec.provide_session(variant.config)))
                for variant in variants
            ]
            token = _tally.set(RequestTally())  # as inside a request under the middleware
            try:
                for variant, session in sessions:
                    await _chunk(session, warmup, variant.sql)
                cycles = max(1, statements // chunk)
                for round_index in range(rounds):
                    gc.collect()
                    totals = dict.fromkeys(VARIANTS, 0.0)
                    for cycle in range(cycles):
                        shift = (round_index * cycles + cycle) % len(sessions)
                        for variant, session in sessions[shift:] + sessions[:shift]:
                            name = variant.name
                            cpu_s, wall_s = await _chunk(session, chunk, variant.sql)
                            cpu[name].append(cpu_s)
                            wall[name].append(wall_s)
                            totals[name] += cpu_s
                    for name, total in totals.items():
                        rounds_cpu[name].append(round(total / (cycles * chunk) * 1e6, 2))
                    log(
                        f"round {round_index + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]}" for n, v in rounds_cpu.items())
                    )
            finally:
                _tally.reset(token)
    finally:
        for variant in variants:
            await variant.close()
    summary: dict[str, Any] = {}
    for name in VARIANTS:
        base = baseline_of(name)
        added_cpu = [c - b for c, b in zip(cpu[name], cpu[base], strict=True)]
        added_wall = [w - b for w, b in zip(wall[name], wall[base], strict=True)]
        summary[name] = {
            "cpu_us": _median_us(cpu[name], chunk),
            "wall_us": _median_us(wall[name], chunk),
            "added_cpu_us": _median_us(added_cpu, chunk),
            "added_wall_us": _median_us(added_wall, chunk),
            "cpu_us_per_round": rounds_cpu[name],
        }
    return summary


def markdown(report: dict[str, Any]) -> str:
    """Render the summary as a Markdown table."""
    lines = [
        (
            f"Statement overhead: `{SQL}` on one asyncpg session per variant (`{PSYCOPG_SQL}` on psycopg for the "
            f"`psycopg-` variants, added cost to `psycopg-bare`), {report['rounds']} rounds of "
            f"{report['statements']:,} statements per variant, interleaved in chunks of {report['chunk']}; medians "
            f"per chunk. Python {report['python']}, sqlspec {report['sqlspec']}, {report['cpus']} CPUs."
        ),
        "",
        "| variant | CPU µs/stmt | added CPU µs/stmt | wall µs/stmt | added wall µs/stmt | target (added CPU) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, row in report["variants"].items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f"≤ {target:g}: {'met' if row['added_cpu_us'] <= target else 'MISSED'}"
        lines.append(
            f"| {name} | {row['cpu_us']} | {row['added_cpu_us']} | {row['wall_us']} | {row['added_wall_us']} "
            f"| {verdict} |"
        )
    ours = report["variants"]
    lines += [
        "",
        (
            f"`ops-metrics` times statements on asyncpg's `connection_class` and adds "
            f"{ours['ops-metrics']['added_cpu_us']} µs; on SQLSpec's lifecycle hooks (`ops-metrics-hooks`) the same "
            f"telemetry adds {ours['ops-metrics-hooks']['added_cpu_us']} µs, of which "
            f"{ours['noop-hooks']['added_cpu_us']} µs is SQLSpec's instrumented execution path (`noop-hooks`), "
            "which turns on as soon as any hook exists."
        ),
        "",
        (
            f"On psycopg, `psycopg-ops-metrics` times statements on psycopg's `cursor_factory` and adds "
            f"{ours['psycopg-ops-metrics']['added_cpu_us']} µs; on SQLSpec's hooks "
            f"(`psycopg-ops-metrics-hooks`) {ours['psycopg-ops-metrics-hooks']['added_cpu_us']} µs."
        ),
    ]
    return "\n".join(lines) + "\n"


async def profile(dsn: str, name: str, statements: int) -> None:
    """Print a pyinstrument profile of one variant's statements (``pip install pyinstrument``)."""
    from pyinstrument import Profiler  # noqa: PLC0415 - optional, in the bench extra

    variant = Variant(name, dsn)
    await variant.open()
    try:
        async with variant.spec.provide_session(variant.config) as session:
            token = _tally.set(RequestTally())
            try:
                await _chunk(session, 500, variant.sql)
                profiler = Profiler(interval=0.0001, async_mode="disabled")
                profiler.start()
                await _chunk(session, statements, variant.sql)
                profiler.stop()
            finally:
                _tally.reset(token)
    finally:
        await variant.close()
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (600 statements, 2 rounds)")
    parser.add_argument("-n", "--statements", type=int, default=20_000, help="statements per round (default 20,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--chunk", type=int, default=500, help="statements per variant per cycle (default 500)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for the JSON and Markdown results")
    parser.add_argument("--profile", choices=VARIANTS, help="print a pyinstrument profile of one variant instead")
    args = parser.parse_args(argv)
    if args.quick:
        statements, rounds, chunk, warmup = 600, 2, 100, 100
    else:
        statements, rounds, chunk, warmup = args.statements, args.rounds, args.chunk, 2_000

    with PostgresServer(max_connections=20) as pg:
        if args.profile:
            asyncio.run(profile(pg.dsn, args.profile, statements))
            return 0
        variants = asyncio.run(
            measure(
                pg.dsn,
                statements=statements,
                rounds=rounds,
                chunk=chunk,
                warmup=warmup,
                log=lambda line: print(line, flush=True),
            )
        )
    report = {
        "statements": statements,
        "rounds": rounds,
        "chunk": chunk,
        "sql": SQL,
        "python": platform.python_version(),
        "sqlspec": version("sqlspec"),
        "cpus": os.cpu_count(),
        "targets_added_cpu_us": TARGETS,
        "variants": variants,
    }
    stem = "statement_overhead-quick" if args.quick else "statement_overhead"
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.output / f"{stem}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
