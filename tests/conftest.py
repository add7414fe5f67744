"""Shared fixtures: throwaway PostgreSQL servers, fresh registries, logging restored after each test.

Helpers live in ``tests/support/`` (``serving``, ``readme_blocks``, ``eventually``, ``silent_server``,
``running_server``); tests import them from there, never from this file.
"""

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Literal

import asyncpg
import pytest
import structlog
from prometheus_client import CollectorRegistry

from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresServer


def _postgres_fixture(
    name: str, *, max_connections: int, scope: Literal["session", "module"], doc: str
) -> Callable[[], Iterator[PostgresServer]]:
    """Build a fixture that starts a PostgreSQL with ``max_connections`` for ``scope`` and removes it after."""

    def server() -> Iterator[PostgresServer]:
        with PostgresServer(max_connections=max_connections) as started:
            yield started

    server.__doc__ = doc
    return pytest.fixture(scope=scope, name=name)(server)


pg = _postgres_fixture(
    "pg", max_connections=100, scope="session", doc="A PostgreSQL server shared by the tests that do not stop it."
)
pg20 = _postgres_fixture(
    "pg20",
    max_connections=20,
    scope="module",
    doc="A PostgreSQL server with max_connections=20 (budget 17 after PostgreSQL 15's 3 superuser slots).",
)


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
