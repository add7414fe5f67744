"""Event-loop lag: a blocked loop shows up in ``sqlspec_ops_event_loop_lag_seconds`` and ``/ops/pools``.

The sampler is one timer per worker; requests never add observations. An embedded database (aiosqlite) is
enough here: what is measured is the event loop, not the database.
"""

import asyncio
import time

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig

from sqlspec_ops import SQLSpecOps
from sqlspec_ops._loop_lag import recent_max_ms
from sqlspec_ops._metrics import LOOP_LAG_BUCKETS
from tests.support.asgi import serving
from tests.support.waiting import eventually

LAG = "sqlspec_ops_event_loop_lag_seconds"


def blocking_app(registry: CollectorRegistry, *, interval: float | None) -> FastAPI:
    """An app with a handler that blocks the event loop for half a second."""
    spec = SQLSpec()
    spec.add_config(AiosqliteConfig(connection_config={"database": ":memory:"}, bind_key="main"))
    app = FastAPI()

    @app.get("/block")
    async def block() -> str:
        time.sleep(0.5)  # noqa: ASYNC251 - the point: a handler that blocks the loop
        return "done"

    @app.get("/fast")
    async def fast() -> str:
        return "done"

    SQLSpecOps(spec, registry=registry, loop_lag_interval=interval).instrument(app)
    return app


def count(registry: CollectorRegistry, le: str = "+Inf") -> float:
    """Return how many lag observations were at most ``le`` seconds."""
    return registry.get_sample_value(f"{LAG}_bucket", {"le": le}) or 0.0


def over(registry: CollectorRegistry, seconds: str) -> float:
    """Return how many lag observations were above ``seconds``."""
    return count(registry) - count(registry, seconds)


async def test_a_blocking_handler_leaves_a_lag_observation(registry: CollectorRegistry) -> None:
    """time.sleep(0.5) in a handler: an observation above 0.4 s within two seconds, and /ops/pools shows it."""
    app = blocking_app(registry, interval=0.05)
    async with serving(app) as client:
        await eventually(lambda: count(registry) >= 3, timeout=2, what="the sampler to run")
        assert over(registry, "0.4") == 0, "no block yet: the check below could not pass by itself"
        before = (await client.get("/ops/pools")).json()["event_loop_lag_ms"]
        assert before is not None
        assert before < 400
        assert (await client.get("/block")).status_code == 200
        await eventually(lambda: over(registry, "0.4") >= 1, timeout=2, what="a lag observation above 0.4 s")
        assert (registry.get_sample_value(f"{LAG}_sum") or 0.0) >= 0.4
        lag_ms = (await client.get("/ops/pools")).json()["event_loop_lag_ms"]
        assert lag_ms >= 400
        lag_for_messages = recent_max_ms()  # what the pool-timeout and leak messages quote
        assert lag_for_messages is not None
        assert lag_for_messages >= 400
    assert recent_max_ms() is None, "a stopped sampler is no longer quoted"


async def test_idle_loop_lag_is_sampled_and_reported(registry: CollectorRegistry) -> None:
    """An idle app is sampled about every interval; its p99 lag bucket is printed (a figure, not an assertion)."""
    app = blocking_app(registry, interval=0.02)
    async with serving(app):
        await asyncio.sleep(2.0)
    samples = count(registry)
    assert samples >= 20, f"only {samples} samples in 2 s at a 20 ms interval"
    p99_bucket = next(le for le in LOOP_LAG_BUCKETS if count(registry, str(le)) >= 0.99 * samples)
    print(f"idle event-loop lag: {samples:.0f} samples, p99 <= {p99_bucket * 1000:g} ms")  # noqa: T201 - the figure


async def test_requests_add_no_lag_samples_and_none_turns_it_off(registry: CollectorRegistry) -> None:
    """Sampling costs one timer per worker, never work per request; loop_lag_interval=None samples nothing."""
    app = blocking_app(registry, interval=60.0)  # the first sample is due after the test
    async with serving(app) as client:
        for _ in range(50):
            assert (await client.get("/fast")).status_code == 200
        assert count(registry) == 0, "requests must not observe anything"
        assert (await client.get("/ops/pools")).json()["event_loop_lag_ms"] == 0.0

    off = CollectorRegistry()
    app = blocking_app(off, interval=None)
    async with serving(app) as client:
        assert (await client.get("/block")).status_code == 200
        await asyncio.sleep(0.1)
        assert count(off) == 0
        assert (await client.get("/ops/pools")).json()["event_loop_lag_ms"] is None
