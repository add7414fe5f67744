"""How long ``/ops/metrics`` takes to render with 8 pools and 50 routes.

Usage::

    .venv/bin/python -m benchmarks.render            # 500 renders per mode
    .venv/bin/python -m benchmarks.render --quick    # seconds-long smoke run

Builds one app with 8 asyncpg pools on a throwaway PostgreSQL and 50 routes, each route running a SELECT,
an INSERT, an UPDATE and a failing statement on one of the pools, sends every route a few requests so every
metric family has series (pool gauges, wait/hold histograms, operation histograms with ``error_type``), then
times full ``GET /ops/metrics`` requests in-process (the endpoint publishes pool state and renders the
exposition), in the Prometheus text format and in OpenMetrics. Results go to
``benchmarks/results/render.json``.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlspec_ops import SQLSpecOps  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

POOLS = 8
ROUTES = 50


def build(dsn: str) -> tuple[FastAPI, SQLSpec]:
    """An app with 8 pools and 50 routes that exercise them."""
    spec = SQLSpec()
    configs = [
        spec.add_config(
            AsyncpgConfig(connection_config={"dsn": dsn, "min_size": 1, "max_size": 2}, bind_key=f"pool{i}")
        )
        for i in range(POOLS)
    ]
    app = FastAPI()

    def route(index: int) -> None:
        config = configs[index % POOLS]

        async def handler() -> dict[str, int]:
            async with spec.provide_session(config) as db:
                await db.execute("INSERT INTO hits (route) VALUES ($1)", index)
                await db.execute("UPDATE hits SET route = route WHERE route = $1", index)
                value = await db.select_value("SELECT count(*) FROM hits WHERE route = $1", index)
                try:
                    await db.execute("SELECT 1 / 0")
                except Exception:
                    value += 0
            return {"count": int(value)}

        app.add_api_route(f"/r{index}", handler, methods=["GET"])

    for index in range(ROUTES):
        route(index)
    SQLSpecOps(spec, registry=CollectorRegistry()).instrument(app)
    return app, spec


async def run(dsn: str, renders: int) -> dict[str, Any]:
    """Warm every route, then time renders in both formats."""
    app, _ = build(dsn)
    results: dict[str, Any] = {}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(3):
                await asyncio.gather(*(client.get(f"/r{i}") for i in range(ROUTES)))
            for mode, accept in (("text", "text/plain"), ("openmetrics", "application/openmetrics-text")):
                timings = []
                size = 0
                for _ in range(renders):
                    started = time.perf_counter()
                    response = await client.get("/ops/metrics", headers={"accept": accept})
                    timings.append((time.perf_counter() - started) * 1000)
                    size = len(response.content)
                series = sum(1 for line in response.text.splitlines() if line and not line.startswith("#"))
                results[mode] = {
                    "median_ms": round(statistics.median(timings), 3),
                    "p95_ms": round(sorted(timings)[int(0.95 * (len(timings) - 1))], 3),
                    "bytes": size,
                    "series": series,
                }
    return results


def main(argv: list[str] | None = None) -> int:
    """Run and write ``benchmarks/results/render.json``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=500)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    renders = 20 if args.quick else args.renders
    with PostgresServer(max_connections=100) as pg:

        async def go() -> dict[str, Any]:
            import asyncpg  # noqa: PLC0415

            connection = await asyncpg.connect(pg.dsn)
            await connection.execute("CREATE TABLE hits (route int)")
            await connection.close()
            return await run(pg.dsn, renders)

        results = asyncio.run(go())
    data = {"pools": POOLS, "routes": ROUTES, "renders": renders, "results": results}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / ("render-quick.json" if args.quick else "render.json")).write_text(json.dumps(data, indent=2) + "\n")
    for mode, entry in results.items():
        print(
            f"/ops/metrics ({mode}): median {entry['median_ms']} ms, p95 {entry['p95_ms']} ms, "
            f"{entry['series']} series, {entry['bytes']} bytes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
