"""An app for ``uvicorn --workers 2`` whose server's-view sampler runs every 0.2 s (one asyncpg pool ``main``).

Configured by the environment: ``SQLSPEC_OPS_TEST_DSN``, ``PROMETHEUS_MULTIPROC_DIR``. Every response carries
``X-Worker-PID`` so a test knows which worker answered.
"""

import os

from fastapi import FastAPI
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from sqlspec_ops import SQLSpecOps

spec = SQLSpec()
spec.add_config(
    AsyncpgConfig(
        connection_config={"dsn": os.environ["SQLSPEC_OPS_TEST_DSN"], "min_size": 2, "max_size": 2}, bind_key="main"
    )
)
api = FastAPI(title="server-view-workers")
SQLSpecOps(spec, health_interval=None, server_stats_interval=0.2).instrument(api)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve the API, stamping every response with this worker's PID."""

    async def stamped(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message)["x-worker-pid"] = str(os.getpid())
        await send(message)

    await api(scope, receive, stamped if scope["type"] == "http" else send)
