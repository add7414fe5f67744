"""The README's "Query telemetry" example runs as written against real PostgreSQL and does what the README says."""

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from tests.support.asgi import serving
from tests.support.postgres import PostgresServer
from tests.support.readme import readme_blocks
from tests.support.statements import statement_spans


@pytest.fixture
async def orders_database(pg: PostgresServer, superuser: asyncpg.Connection) -> AsyncIterator[str]:
    """A database of its own with an ``orders`` table; yields its DSN and drops it afterwards."""
    name = f"readme_{uuid.uuid4().hex[:8]}"
    await superuser.execute(f"CREATE DATABASE {name} OWNER app")
    dsn = pg.dsn.rsplit("/", 1)[0] + f"/{name}"
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, total int, status text);"
            "INSERT INTO orders (customer_id, total, status) VALUES (7, 10, 'paid'), (7, 5, 'void'), (8, 1, 'paid')"
        )
    finally:
        await connection.close()
    try:
        yield dsn
    finally:
        await superuser.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def test_readme_query_telemetry_example(orders_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README app answers, says ``1 queries`` in Server-Timing, exports a ``SELECT orders`` span and counts it."""
    monkeypatch.setenv("DATABASE_URL", orders_database)
    namespace: dict[str, Any] = {"__name__": "readme_query_telemetry"}
    (example,) = readme_blocks("Query telemetry", "python")
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    provider: TracerProvider = namespace["tracer_provider"]
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    labels = {
        "db_system_name": "postgresql",
        "db_operation_name": "SELECT",
        "db_client_connection_pool_name": "main",
        "error_type": "",
    }
    before = REGISTRY.get_sample_value("db_client_operation_duration_seconds_count", labels) or 0.0

    async with serving(namespace["app"]) as client:
        response = await client.get("/customers/7/orders")

    assert response.status_code == 200
    assert response.json() == [{"id": 1, "total": 10}]
    assert re.fullmatch(r'db;dur=\d+\.\d\d;desc="1 queries"', response.headers["server-timing"])
    (span,) = statement_spans(exporter)
    assert span.name == "SELECT orders"
    assert (span.attributes or {})["db.query.text"] == (
        "SELECT id, total FROM orders WHERE customer_id = $1 AND status <> ?"
    )
    after = REGISTRY.get_sample_value("db_client_operation_duration_seconds_count", labels)
    assert after == before + 1
