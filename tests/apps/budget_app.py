"""An app served by real Uvicorn/Gunicorn workers in the budget and worker-detection tests.

``create_app()`` reads ``DATABASE_URL`` (one asyncpg pool, sized by ``POOL_MIN_SIZE``/``POOL_MAX_SIZE``) and
logs JSON lines to stdout; without ``DATABASE_URL`` it has no database. ``GET /workers`` answers what this
worker detects about the worker count.
"""

import os

from fastapi import FastAPI
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig

from sqlspec_ops import SQLSpecOps, configure_logging
from sqlspec_ops._workers import detect_workers

__all__ = ("create_app",)


def create_app() -> FastAPI:
    """Build the app from the environment (called once per worker through ``--factory``)."""
    configure_logging(json=True)
    app = FastAPI()

    @app.get("/workers")
    async def workers() -> dict[str, object]:
        return {"pid": os.getpid(), **detect_workers().as_json()}

    spec = SQLSpec()
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        sizes = {"min_size": int(os.environ.get("POOL_MIN_SIZE", "1")), "max_size": int(os.environ["POOL_MAX_SIZE"])}
        spec.add_config(AsyncpgConfig(connection_config={"dsn": dsn, **sizes}, bind_key="primary"))
    return SQLSpecOps(spec).instrument(app)
