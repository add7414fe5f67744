"""Per-request database summary: ``Server-Timing``, the N+1 warning and the slow-statement warning (real PostgreSQL).

Warnings are read the way operators read them: as the JSON lines ``configure_logging`` writes.
"""

import io
import json
import re
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from sqlspec.adapters.asyncpg import AsyncpgDriver

from sqlspec_ops import SQLSpecOps, configure_logging
from sqlspec_ops._sql import shape_of
from tests.support.asgi import serving
from tests.support.postgres import PostgresServer
from tests.support.statements import asyncpg_spec, create_table, session_dependency

SERVER_TIMING = re.compile(r'^db;dur=(\d+\.\d\d);desc="(\d+) queries"$')


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Return the JSON log lines written so far."""
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


async def test_sixty_statements_give_the_n_plus_one_warning_and_server_timing(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A route running 60 statements logs one N+1 warning (request ID, route template) and reports 60 queries."""
    spec, config = asyncpg_spec(pg)
    db_session = session_dependency(spec, config)
    app = FastAPI()

    @app.get("/customers/{customer_id}/orders")
    async def orders(customer_id: int, session: Annotated[AsyncpgDriver, Depends(db_session)]) -> list[int]:
        return [await session.select_value("SELECT $1::int + $2::int", customer_id, item) for item in range(60)]

    SQLSpecOps(spec, registry=registry).instrument(app)
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", stream=stream)
    async with serving(app) as client:
        response = await client.get("/customers/7/orders", headers={"X-Request-ID": "nplus1-req-42"})
        assert response.status_code == 200

    match = SERVER_TIMING.match(response.headers["server-timing"])
    assert match is not None
    assert match.group(2) == "60"
    assert float(match.group(1)) > 0
    warnings = [line for line in json_lines(stream) if line.get("logger") == "sqlspec_ops.queries"]
    assert len(warnings) == 1
    (warning,) = warnings
    assert warning["level"] == "warning"
    assert warning["request_id"] == "nplus1-req-42"
    assert warning["route"] == "/customers/{customer_id}/orders"
    assert warning["statements"] == 60
    assert warning["db_time_ms"] > 0
    assert "/customers/{customer_id}/orders" in warning["event"]


async def test_requests_within_the_limit_log_nothing(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """A request running exactly ``max_queries_per_request`` statements is not flagged, and None disables the check."""
    spec, config = asyncpg_spec(pg)
    db_session = session_dependency(spec, config)
    app = FastAPI()

    @app.get("/items")
    async def items(count: int, session: Annotated[AsyncpgDriver, Depends(db_session)]) -> int:
        for _ in range(count):
            await session.select_value("SELECT 1")
        return count

    SQLSpecOps(spec, registry=registry, max_queries_per_request=5).instrument(app)
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    async with serving(app) as client:
        at_limit = await client.get("/items", params={"count": 5})
        over = await client.get("/items", params={"count": 6})

    assert at_limit.headers["server-timing"].endswith('desc="5 queries"')
    assert over.headers["server-timing"].endswith('desc="6 queries"')
    flagged = [line["statements"] for line in json_lines(stream) if line.get("logger") == "sqlspec_ops.queries"]
    assert flagged == [6]


async def test_server_timing_can_be_disabled(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """With ``server_timing=False`` responses carry no ``Server-Timing`` header."""
    spec, config = asyncpg_spec(pg)
    db_session = session_dependency(spec, config)
    app = FastAPI()

    @app.get("/one")
    async def one(session: Annotated[AsyncpgDriver, Depends(db_session)]) -> int:
        return int(await session.select_value("SELECT 1"))

    SQLSpecOps(spec, registry=registry, server_timing=False).instrument(app)
    async with serving(app) as client:
        response = await client.get("/one")

    assert response.status_code == 200
    assert "server-timing" not in response.headers


async def test_n_plus_one_warning_can_be_disabled(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """With ``max_queries_per_request=None`` no request is flagged, however many statements it runs."""
    spec, config = asyncpg_spec(pg)
    db_session = session_dependency(spec, config)
    app = FastAPI()

    @app.get("/many")
    async def many(session: Annotated[AsyncpgDriver, Depends(db_session)]) -> int:
        for _ in range(80):
            await session.select_value("SELECT 1")
        return 80

    SQLSpecOps(spec, registry=registry, max_queries_per_request=None).instrument(app)
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    async with serving(app) as client:
        response = await client.get("/many")

    assert response.headers["server-timing"].endswith('desc="80 queries"')
    assert not [line for line in json_lines(stream) if line.get("logger") == "sqlspec_ops.queries"]


async def test_slow_statement_warning_names_the_statement_never_its_values(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A slow statement logs its hash, operation, duration and request ID, never a parameter or literal."""
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg)
    db_session = session_dependency(spec, config)
    app = FastAPI()
    slow_sql = f"SELECT pg_sleep(0.08), count(*) FROM {table} WHERE name <> $1 AND name <> 'slow-literal-3f9a'"

    @app.get("/report")
    async def report(session: Annotated[AsyncpgDriver, Depends(db_session)]) -> str:
        await session.select_value("SELECT $1::text", "fast-param-77aa")
        await session.execute(slow_sql, "slow-param-c0ffee")
        return "done"

    SQLSpecOps(spec, registry=registry, slow_query_threshold=0.05).instrument(app)
    stream = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=stream)
    async with serving(app) as client:
        response = await client.get("/report", headers={"X-Request-ID": "slow-req-9"})
        assert response.status_code == 200

    slow = [line for line in json_lines(stream) if line.get("logger") == "sqlspec_ops.queries"]
    assert len(slow) == 1
    (line,) = slow
    assert line["level"] == "warning"
    assert line["request_id"] == "slow-req-9"
    assert line["db.operation.name"] == "SELECT"
    assert line["db.query.summary"] == f"SELECT {table}"
    assert line["db.statement.hash"] == shape_of(slow_sql).sql_hash
    assert re.fullmatch(r"[0-9a-f]{16}", line["db.statement.hash"])
    assert line["duration_ms"] >= 80
    assert line["threshold_ms"] == 50
    output = stream.getvalue()
    assert "slow-param-c0ffee" not in output
    assert "slow-literal-3f9a" not in output
    assert "fast-param-77aa" not in output
