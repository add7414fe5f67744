"""Micro-costs of the per-statement and per-request pieces, in isolation (no database, no server).

Usage::

    .venv/bin/python -m benchmarks.hot_path            # 100,000 iterations per piece
    .venv/bin/python -m benchmarks.hot_path --quick    # 2,000 (a test runs it)

Each line is the median of 7 timings of a tight loop; an event loop runs the async pieces. The pool proxy is
timed around a stand-in driver pool whose ``acquire``/``release`` return at once, so only the proxy's own work
is measured (benchmarks only: the tests use real pools). SQLSpec's ``emit_*`` calls are what its instrumented
execution path adds per statement once any lifecycle hook exists.
"""

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402
from sqlspec.adapters.asyncpg import AsyncpgConfig  # noqa: E402
from sqlspec.observability import ObservabilityConfig, ObservabilityRuntime  # noqa: E402

from sqlspec_ops._adapters.asyncpg import AsyncpgAdapter  # noqa: E402
from sqlspec_ops._adapters.base import PoolTarget  # noqa: E402
from sqlspec_ops._metrics import metrics_for  # noqa: E402
from sqlspec_ops._requests import RequestTally, _tally  # noqa: E402
from sqlspec_ops._statements import StatementTelemetry  # noqa: E402

_COUNT = {"n": 100_000}


def _timed(label: str, loop_body: Callable[[int], None]) -> None:
    count = _COUNT["n"]
    runs = []
    for _ in range(7):
        started = time.process_time()
        loop_body(count)
        runs.append(time.process_time() - started)
    print(f"{statistics.median(runs) / count * 1e6:7.2f} µs  {label}")


def _timed_async(label: str, make: Callable[[], Awaitable[None]]) -> None:
    async def body(count: int) -> None:
        for _ in range(count):
            await make()

    _timed(label, lambda count: asyncio.run(body(count)))


class _InstantPool:
    """Stands in for a driver pool: hands out one object at once (measures the proxy's own work only)."""

    connection = object()

    async def acquire(self, **_: Any) -> Any:
        return self.connection

    async def release(self, _connection: Any, **_: Any) -> None:
        return None

    def get_size(self) -> int:
        return 1

    def get_idle_size(self) -> int:
        return 1


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - one flat list of measurements
    """Print the micro-costs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2,000 iterations per piece")
    if parser.parse_args(argv).quick:
        _COUNT["n"] = 2_000
    metrics = metrics_for(CollectorRegistry())
    child = metrics.operation_duration.labels("postgresql", "SELECT", "p", "")

    def observe(count: int) -> None:
        for _ in range(count):
            child.observe(0.001)

    def clock(count: int) -> None:
        for _ in range(count):
            time.perf_counter()

    _timed("Histogram.observe (bound child)", observe)
    _timed("perf_counter()", clock)

    config = AsyncpgConfig(connection_config={"dsn": "postgresql://u@127.0.0.1/db"})
    adapter = AsyncpgAdapter()
    target = PoolTarget(adapter="asyncpg", db_system="postgresql", host="127.0.0.1", port=5432, database="db")
    hooks = StatementTelemetry(pool_name="p", target=target, adapter=adapter, metrics=metrics)
    context = {"sql": "SELECT 1", "operation": "SELECT", "correlation_id": "r"}
    token = _tally.set(RequestTally())

    def hook_pair(count: int) -> None:
        for _ in range(count):
            hooks.on_query_start(context)
            hooks.on_query_complete(context)

    _timed("sqlspec-ops hook bodies (start + complete, metric + tally, no tracer)", hook_pair)

    def noop(_context: dict[str, Any]) -> None:
        return None

    idle = ObservabilityRuntime(ObservabilityConfig())
    lifecycle: Any = {"on_query_start": [noop], "on_query_complete": [noop], "on_error": [noop]}
    with_hooks = ObservabilityRuntime(ObservabilityConfig(lifecycle=lifecycle))
    query = {"sql": "SELECT 1", "parameters": [1], "driver": "AsyncpgDriver", "operation": "SELECT",
             "is_many": False, "is_script": False}  # fmt: skip

    async def emit(runtime: ObservabilityRuntime) -> None:
        await runtime.emit_query_start_async(**query)
        runtime.start_query_span("SELECT 1", "SELECT", "AsyncpgDriver")
        await runtime.emit_query_complete_async(**{**query, "rows_affected": 1})

    _timed_async("SQLSpec emit path, no hooks", lambda: emit(idle))
    _timed_async("SQLSpec emit path, three no-op hooks (query start + complete fired)", lambda: emit(with_hooks))

    inner = _InstantPool()

    async def bare_borrow() -> None:
        connection = await inner.acquire()
        await inner.release(connection)

    proxy = adapter.proxy_class(config, adapter, name="p", target=target, metrics=metrics)
    proxy.wrap(inner)

    async def proxy_borrow() -> None:
        connection = await proxy.acquire()
        await proxy.release(connection)

    _timed_async("driver acquire + release (stand-in pool)", bare_borrow)
    _timed_async("pool proxy acquire + release around it", proxy_borrow)
    _tally.reset(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
