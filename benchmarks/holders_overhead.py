"""CPU the holder records add: per borrow (acquire + release bookkeeping) and per statement (hook updates).

Usage::

    .venv/bin/python -m benchmarks.holders_overhead            # 200,000 borrows and statements per variant
    .venv/bin/python -m benchmarks.holders_overhead --quick    # seconds-long smoke run

No database is needed: the pool proxy's bookkeeping (``_begin_wait``/``_acquired``/``_released``) and the
statement hooks (``on_query_start``/``on_query_complete``) are pure Python and are called directly, on an
unopened asyncpg config, inside a request-like context (a request tally with a route in its scope). Variants,
interleaved in chunks (order rotated every cycle), median ns per call over chunks:

- ``borrow``: acquire + release bookkeeping with a holder record (leak detection off: no stack walk);
- ``borrow-leak-detection``: the same with ``leak_threshold`` set (the acquiring stack is walked);
- ``statement-no-holder``: the statement hooks with no holder to update (what they cost without holders);
- ``statement-holder``: the statement hooks updating the holder of the connection.

Results go to ``benchmarks/results/holders_overhead.json`` and ``.md`` (``holders_overhead-quick.*`` with
``--quick``).
"""

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402
from sqlspec.adapters.asyncpg import AsyncpgConfig  # noqa: E402

from sqlspec_ops._adapters.asyncpg import AsyncpgAdapter, AsyncpgPool  # noqa: E402
from sqlspec_ops._metrics import metrics_for  # noqa: E402
from sqlspec_ops._requests import RequestTelemetry  # noqa: E402
from sqlspec_ops._statements import StatementTelemetry  # noqa: E402

__all__ = ("main",)

RESULTS = ROOT / "benchmarks" / "results"
CHUNK = 2_000


class _Route:
    path = "/orders/{order_id}"


def _variants() -> dict[str, Callable[[int], None]]:
    adapter = AsyncpgAdapter()
    config = AsyncpgConfig(connection_config={"dsn": "postgresql://bench@127.0.0.1:1/bench"}, bind_key="bench")
    target = adapter.describe(config)
    metrics = metrics_for(CollectorRegistry())

    def pool(leak_threshold: float | None) -> AsyncpgPool:
        return AsyncpgPool(config, adapter, name="bench", target=target, metrics=metrics, leak_threshold=leak_threshold)

    plain, leaky = pool(None), pool(30.0)
    connection = object()
    key = id(connection)

    def borrow(proxy: AsyncpgPool) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                proxy._acquired(key, proxy._begin_wait(), connection)  # noqa: SLF001 - the bookkeeping measured
                proxy._released(key)  # noqa: SLF001

        return run

    def statements(*, with_holder: bool) -> Callable[[int], None]:
        hooks = StatementTelemetry(pool_name="bench", target=target, adapter=adapter, metrics=metrics)
        proxy = pool(None)
        hooks.holders = proxy.current_holder if with_holder else None
        context = {"sql": "SELECT id FROM orders WHERE id = $1", "operation": "SELECT"}

        def run(n: int) -> None:
            proxy._acquired(key, proxy._begin_wait(), connection)  # noqa: SLF001 - one hold for the whole chunk
            for _ in range(n):
                hooks.on_query_start(context)
                hooks.on_query_complete(context)
            proxy._released(key)  # noqa: SLF001

        return run

    return {
        "borrow": borrow(plain),
        "borrow-leak-detection": borrow(leaky),
        "statement-no-holder": statements(with_holder=False),
        "statement-holder": statements(with_holder=True),
    }


def _measure(total: int) -> dict[str, float]:
    variants = _variants()
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for cycle in range(max(1, total // CHUNK)):
        order = names[cycle % len(names) :] + names[: cycle % len(names)]
        for name in order:
            started = time.process_time_ns()
            variants[name](CHUNK)
            samples[name].append((time.process_time_ns() - started) / CHUNK)
    return {name: round(statistics.median(values), 1) for name, values in samples.items()}


async def _in_request(total: int) -> dict[str, float]:
    telemetry = RequestTelemetry(server_timing=False, max_queries_per_request=None)
    scope: dict[str, Any] = {"type": "http", "route": _Route()}
    tally = telemetry.on_start(scope, "bench-request")
    try:
        return _measure(total)
    finally:
        telemetry.on_end(scope, tally, "bench-request")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = parser.parse_args(argv)
    total = 20_000 if args.quick else 200_000
    medians = asyncio.run(_in_request(total))
    result = {
        "ns_per_call": medians,
        "holder_per_statement_ns": round(medians["statement-holder"] - medians["statement-no-holder"], 1),
        "stack_walk_per_borrow_ns": round(medians["borrow-leak-detection"] - medians["borrow"], 1),
        "calls_per_variant": total,
        "python": platform.python_version(),
    }
    stem = "holders_overhead-quick" if args.quick else "holders_overhead"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = ["| variant | CPU ns per call (median of chunks) |", "|---|---:|"]
    lines += [f"| `{name}` | {value} |" for name, value in medians.items()]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
