"""An app for ``uvicorn --workers 2``: one asyncpg pool, a route that borrows one connection, worker PIDs.

Configured by the environment (``SQLSPEC_OPS_TEST_DSN``, ``SQLSPEC_OPS_TEST_MIN_SIZE``/``_MAX_SIZE``,
``PROMETHEUS_MULTIPROC_DIR``).
Every response, ``/ops`` ones included, carries ``X-Worker-PID`` so the test knows which worker answered.
Background readiness pings are off, so every pool acquire is one the test caused or can count.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from sqlspec_ops import SQLSpecOps
from sqlspec_ops._adapters.proxy import InstrumentedPool

MAX_SIZE = int(os.environ.get("SQLSPEC_OPS_TEST_MAX_SIZE", "3"))
MIN_SIZE = int(os.environ.get("SQLSPEC_OPS_TEST_MIN_SIZE", "1"))

spec = SQLSpec()
config = spec.add_config(
    AsyncpgConfig(
        connection_config={"dsn": os.environ["SQLSPEC_OPS_TEST_DSN"], "min_size": MIN_SIZE, "max_size": MAX_SIZE},
        bind_key="main",
    )
)
ops = SQLSpecOps(spec, health_interval=None)


def _pool() -> InstrumentedPool:
    pool = config.connection_instance
    if not isinstance(pool, InstrumentedPool):
        msg = "sqlspec-ops did not install its pool proxy"
        raise TypeError(msg)
    return pool


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Record the acquires sqlspec-ops' startup made (it runs before the app's own lifespan)."""
    app.state.startup_acquires = _pool().acquires
    yield


api = FastAPI(lifespan=lifespan)


@api.get("/work")
async def work() -> dict[str, int]:
    """Borrow exactly one connection."""
    async with spec.provide_session(config) as db:
        value = await db.select_value("SELECT 1")
    return {"pid": os.getpid(), "value": int(value)}


@api.get("/stats")
async def stats() -> dict[str, int]:
    """Report the worker's acquire counts and its driver pool's own size, read without borrowing."""
    pool = _pool()
    return {
        "pid": os.getpid(),
        "startup_acquires": api.state.startup_acquires,
        "acquires": pool.acquires,
        "size": pool.inner.get_size(),
        "idle": pool.inner.get_idle_size(),
    }


ops.instrument(api)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve ``api`` and stamp every HTTP response with the worker's PID."""
    if scope["type"] != "http":
        await api(scope, receive, send)
        return

    async def send_with_pid(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message).append("X-Worker-PID", str(os.getpid()))
        await send(message)

    await api(scope, receive, send_with_pid)
