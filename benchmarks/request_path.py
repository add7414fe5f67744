"""Where sqlspec-ops' CPU per ``/users`` request goes: each piece alone, in-process, against a throwaway PostgreSQL.

Usage::

    .venv/bin/python -m benchmarks.request_path            # 15 interleaved rounds of 2,000 requests per variant
    .venv/bin/python -m benchmarks.request_path --quick    # seconds-long smoke run

SQLSpec's hot path is compiled (mypyc), so a sampling profiler attributes its time to the nearest Python caller;
this benchmark measures by difference instead. Every variant is the same FastAPI app (``GET /users/{id}``: one
primary-key SELECT through a ``spec.provide_session(config)`` dependency) with one piece of instrumentation added,
driven through its ASGI interface by a minimal in-process caller (no HTTP server, no client library). Variants
run interleaved in chunks, order rotated each cycle; "added" is the median over cycles of the CPU difference to
``bare`` in the same cycle (``time.process_time``: this process only, PostgreSQL excluded).

Pieces of ``ops`` measured alone:

- ``noop-hooks``: three no-op SQLSpec lifecycle hooks: SQLSpec's instrumented execution path, before any of our code.
- ``hooks``: sqlspec-ops' statement hooks (metric, no request tally since no middleware runs).
- ``proxy``: the pool proxy only (acquire wait, hold time, in-use bookkeeping).
- ``middleware``: the request-ID middleware with the per-request tally and ``Server-Timing`` (no hooks, no proxy).
- ``ops``: ``SQLSpecOps(spec).instrument(app)``; ``ops_traced``: with ``server_spans=True`` and a dropping
  100 %-sampled provider.

Driver-hook paths (feasibility prototypes in ``benchmarks/driver_hooks.py``, not wired into sqlspec-ops), each on
SQLSpec's idle fast path: ``querylogger`` (asyncpg's ``add_query_logger`` added in the pool's ``init``) and
``connclass`` (a ``Connection`` subclass through asyncpg's ``connection_class`` pool argument).
"""

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.observability import ObservabilityConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.app import add_users_route  # noqa: E402
from benchmarks.driver_hooks import TimedConnection, add_query_logger  # noqa: E402
from benchmarks.throughput import _seed  # noqa: E402
from sqlspec_ops import SQLSpecOps  # noqa: E402
from sqlspec_ops._statements import StatementTelemetry  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = (
    "bare",
    "noop-hooks",
    "hooks",
    "proxy",
    "middleware",
    "ops",
    "ops_traced",
    "querylogger",
    "connclass",
)


def _noop(_context: dict[str, Any]) -> None:
    return None


def _dropping_provider() -> Any:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON  # noqa: PLC0415

    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SpanProcessor())
    return provider


def build(variant: str, dsn: str) -> FastAPI:
    """Build one variant's app (its pool opens in the lifespan)."""
    connection_config: dict[str, Any] = {"dsn": dsn, "min_size": 2, "max_size": 2}
    observability = None
    if variant == "noop-hooks":
        hooks: Any = {"on_query_start": [_noop], "on_query_complete": [_noop], "on_error": [_noop]}
        observability = ObservabilityConfig(lifecycle=hooks)
    elif variant == "querylogger":
        connection_config["init"] = add_query_logger
    elif variant == "connclass":
        connection_config["connection_class"] = TimedConnection
    spec = SQLSpec()
    config = spec.add_config(AsyncpgConfig(connection_config=connection_config, observability_config=observability))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await spec.get_pool(config)
        try:
            yield
        finally:
            await spec.close_all_pools()

    app = FastAPI(lifespan=lifespan, telemetry={"tracing": False, "metrics": False, "logs": False})

    add_users_route(app, spec, config)

    registry = CollectorRegistry()
    if variant in ("ops", "ops_traced"):
        provider = _dropping_provider() if variant == "ops_traced" else None
        SQLSpecOps(spec, registry=registry, tracer_provider=provider, server_spans=provider is not None).instrument(app)
    elif variant in ("hooks", "proxy", "middleware"):
        _install_piece(variant, spec, app, registry)
    return app


def _install_piece(variant: str, spec: SQLSpec, app: FastAPI, registry: CollectorRegistry) -> None:
    """Install one piece of what ``SQLSpecOps.install``/``instrument`` do (private API: benchmarks only)."""
    ops = SQLSpecOps(spec, registry=registry)
    if variant == "middleware":
        ops._wrap_middleware(app, ops._ops_app(None))  # noqa: SLF001
        return
    (db,) = ops.databases
    adapter = db.adapter
    if adapter is None:
        msg = "asyncpg adapter missing"
        raise RuntimeError(msg)
    if variant == "hooks":
        telemetry = StatementTelemetry(
            pool_name=db.name, target=db.target, adapter=adapter, metrics=ops.metrics, slow_query_threshold=0.5
        )
        db.config.observability_config = ObservabilityConfig.merge(
            db.config.observability_config, telemetry.observability_config()
        )
        spec.add_config(db.config)
    else:
        pool = adapter.proxy_class(db.config, adapter, name=db.name, target=db.target, metrics=ops.metrics)
        pool.reattach()


class _Caller:
    """Drive an ASGI app in-process with the least possible client-side work."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: list[int] = []

    async def get(self, path: str) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}

        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        if status != 200:
            msg = f"{path} answered {status}"
            raise RuntimeError(msg)


async def _chunk(caller: _Caller, requests: int, offset: int) -> float:
    cpu = time.process_time()
    for index in range(requests):
        await caller.get(f"/users/{(offset + index) % 1000 + 1}")
    return time.process_time() - cpu


async def measure(dsn: str, variants: tuple[str, ...], *, rounds: int, requests: int, chunk: int) -> dict[str, Any]:
    """Interleave every variant chunk by chunk; return CPU µs per request and the added cost to ``bare``."""
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    async with AsyncExitStack() as stack:
        callers = []
        for name in variants:
            manager = await stack.enter_async_context(LifespanManager(build(name, dsn)))
            callers.append((name, _Caller(manager.app)))
        for _, caller in callers:
            await _chunk(caller, 200, 0)
        cycles = max(1, requests // chunk)
        for round_index in range(rounds):
            gc.collect()
            for cycle in range(cycles):
                shift = (round_index * cycles + cycle) % len(callers)
                for name, caller in callers[shift:] + callers[:shift]:
                    cpu[name].append(await _chunk(caller, chunk, cycle * chunk))
            print(
                f"round {round_index + 1}/{rounds}: "
                + ", ".join(f"{n} {statistics.median(v[-cycles:]) / chunk * 1e6:.0f}" for n, v in cpu.items()),
                flush=True,
            )
    summary: dict[str, Any] = {}
    for name in variants:
        added = [c - b for c, b in zip(cpu[name], cpu["bare"], strict=True)]
        summary[name] = {
            "cpu_us": round(statistics.median(cpu[name]) / chunk * 1e6, 1),
            "added_cpu_us": round(statistics.median(added) / chunk * 1e6, 1),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000, help="requests per variant per round")
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.chunk = 2, 100, 50
    variants = tuple(v for v in args.variants.split(",") if v)
    if "bare" not in variants:
        variants = ("bare", *variants)
    with PostgresServer(max_connections=50) as pg:
        asyncio.run(_seed(pg.dsn))
        summary = asyncio.run(measure(pg.dsn, variants, rounds=args.rounds, requests=args.requests, chunk=args.chunk))
    lines = [
        (
            f"In-process `/users` CPU per request, {args.rounds} rounds x {args.requests} requests per variant, "
            f"chunks of {args.chunk}, medians; added = median per-cycle difference to bare."
        ),
        "",
        "| variant | CPU µs/request | added µs/request |",
        "|---|---:|---:|",
        *(f"| {name} | {row['cpu_us']} | {row['added_cpu_us']} |" for name, row in summary.items()),
    ]
    stem = "request_path-quick" if args.quick else "request_path"
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.output / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
