"""Shared fixtures: one throwaway PostgreSQL for the session, fresh registries and apps per test."""

import logging
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
import structlog
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by the tests that do not stop it."""
    server = PostgresServer(max_connections=100)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def pg20() -> Iterator[PostgresServer]:
    """A PostgreSQL server with max_connections=20 (budget 17 after PostgreSQL 15's 3 superuser slots)."""
    server = PostgresServer(max_connections=20)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    """A MariaDB server shared by the tests that do not stop it or change its settings."""
    server = MariaDBServer(max_connections=100)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh Prometheus registry, so tests never see each other's samples."""
    return CollectorRegistry()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo configure_logging() and other root-logger changes after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    structlog_config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**structlog_config)


@pytest.fixture
async def superuser(pg: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection for bookkeeping queries (pg_stat_activity...)."""
    connection = await asyncpg.connect(pg.superuser_dsn)
    try:
        yield connection
    finally:
        await connection.close()


def _state_per_request(app: ASGIApp) -> ASGIApp:
    """Give each request its own copy of the lifespan state, as uvicorn does.

    asgi-lifespan hands every request the same state dict, so concurrent requests would overwrite each other's
    ``request.state`` (SQLSpec's FastAPI plugin keeps the request's connection there).
    """

    async def app_with_request_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and "state" in scope:
            scope = {**scope, "state": dict(scope["state"])}
        await app(scope, receive, send)

    return app_with_request_state


async def serve(app: FastAPI) -> "AsyncIterator[httpx.AsyncClient]":
    """Run the app's lifespan and yield an HTTP client talking to it in-process."""
    async with LifespanManager(_state_per_request(app)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
