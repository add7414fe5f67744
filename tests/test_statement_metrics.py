"""``db_client_operation_duration_seconds``: every statement counted (failures with ``error_type``), right buckets.

SQLSpec's statement observers never see failed statements, so a count taken from them would miss every
error. These tests run statements of which a known share fails against real databases, then compare the
histogram's ``_count`` with what ran: in one process, across worker processes sharing a multiprocess
directory, and on each supported driver.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig, AiosqliteDriver
from sqlspec.adapters.asyncpg import AsyncpgDriver
from sqlspec.adapters.psycopg import PsycopgAsyncConfig, PsycopgAsyncDriver
from sqlspec.exceptions import SQLSpecError

from sqlspec_ops import SQLSpecOps
from tests.support.asgi import serving
from tests.support.postgres import PostgresServer
from tests.support.statements import (
    DURATION,
    asyncpg_spec,
    create_table,
    duration_counts,
    label_sum,
    session_dependency,
)

SEMCONV_BUCKETS = ["0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1.0", "5.0", "10.0", "+Inf"]


async def test_thousand_statements_with_hundred_failures_are_all_counted(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """After 1,000 statements of which 100 fail, the counts sum to exactly 1,000 and the failures carry error_type."""
    table = await create_table(pg)
    spec, config = asyncpg_spec(pg, bind_key="orders")
    db_session = session_dependency(spec, config)
    app = FastAPI()

    @app.post("/batch")
    async def batch(session: Annotated[AsyncpgDriver, Depends(db_session)]) -> dict[str, int]:
        failed = 0
        for index in range(100):
            try:
                if index % 10 == 9:
                    await session.select_value("SELECT 1 / (0 * $1::int)", index)
                elif index % 2:
                    await session.execute(f"INSERT INTO {table} (name, qty) VALUES ($1, $2)", "n", index)
                else:
                    await session.select_value(f"SELECT count(*) FROM {table}")
            except SQLSpecError:
                failed += 1
        return {"failed": failed}

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        for _ in range(10):
            assert (await client.post("/batch")).json() == {"failed": 10}

    counts = duration_counts(registry)
    assert sum(counts.values()) == 1000
    assert label_sum(counts, error_type="22012") == 100
    assert label_sum(counts, error_type="") == 900
    assert label_sum(counts, db_operation_name="INSERT") == 400
    assert label_sum(counts, db_operation_name="SELECT", error_type="") == 500
    assert {dict(key)["db_system_name"] for key in counts} == {"postgresql"}
    assert {dict(key)["db_client_connection_pool_name"] for key in counts} == {"orders"}
    assert set(dict(counts).keys()) == {
        (("db_client_connection_pool_name", "orders"), ("db_operation_name", op), ("db_system_name", "postgresql"),
         ("error_type", error))
        for op, error in (("INSERT", ""), ("SELECT", ""), ("SELECT", "22012"))
    }  # fmt: skip
    buckets = [
        sample.labels["le"]
        for family in registry.collect()
        if family.name == DURATION
        for sample in family.samples
        if sample.name == f"{DURATION}_bucket" and sample.labels["error_type"] == "22012"
    ]
    assert buckets == SEMCONV_BUCKETS


WORKER = textwrap.dedent(
    """
    import asyncio, os, sys

    import httpx
    from asgi_lifespan import LifespanManager
    from fastapi import FastAPI
    from sqlspec import SQLSpec
    from sqlspec.adapters.asyncpg import AsyncpgConfig
    from sqlspec.exceptions import SQLSpecError

    from sqlspec_ops import SQLSpecOps

    async def main() -> None:
        spec = SQLSpec()
        config = spec.add_config(
            AsyncpgConfig(connection_config={"dsn": os.environ["DSN"], "min_size": 1, "max_size": 1}, bind_key="main")
        )
        app = FastAPI()

        @app.post("/run")
        async def run() -> dict:
            async with spec.provide_session(config) as session:
                for index in range(int(os.environ["STATEMENTS"])):
                    try:
                        await session.select_value("SELECT 1 / $1::int", 0 if index % 10 == 0 else 1)
                    except SQLSpecError:
                        pass
            return {}

        SQLSpecOps(spec).instrument(app)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
                assert (await client.post("/run")).status_code == 200
                if os.environ.get("SCRAPE"):
                    sys.stdout.write((await client.get("/ops/metrics")).text)

    asyncio.run(main())
    """
)


def _run_worker(pg: PostgresServer, directory: Path, statements: int, *, scrape: bool) -> str:
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DSN": pg.dsn,
        "STATEMENTS": str(statements),
        "SCRAPE": "1" if scrape else "",
    }
    done = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_scrape_of_one_worker_counts_statements_of_all_workers(pg: PostgresServer, tmp_path: Path) -> None:
    """Two worker processes run 500 statements each (50 fail); a scrape of the second reports 1,000 and 100."""
    _run_worker(pg, tmp_path, 500, scrape=False)
    exposition = _run_worker(pg, tmp_path, 500, scrape=True)

    counts: dict[str, float] = {}
    buckets: list[str] = []
    for family in text_string_to_metric_families(exposition):
        if family.name != DURATION:
            continue
        for sample in family.samples:
            if sample.name == f"{DURATION}_count":
                counts[sample.labels["error_type"]] = counts.get(sample.labels["error_type"], 0) + sample.value
            elif sample.name == f"{DURATION}_bucket" and sample.labels["error_type"] == "":
                buckets.append(sample.labels["le"])
    assert counts == {"": 900, "22012": 100}
    assert buckets == SEMCONV_BUCKETS


async def test_psycopg_statements_are_counted_with_their_sqlstate(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """On psycopg, successes and failures are counted and a division by zero carries SQLSTATE 22012."""
    table = await create_table(pg)
    spec = SQLSpec()
    config = spec.add_config(
        PsycopgAsyncConfig(connection_config={"conninfo": pg.conninfo(), "min_size": 1, "max_size": 2})
    )
    app = FastAPI()

    async def db_session() -> Any:
        async with spec.provide_session(config) as session:
            yield session

    @app.post("/run")
    async def run(session: Annotated[PsycopgAsyncDriver, Depends(db_session)]) -> dict[str, str | None]:
        await session.execute(f"INSERT INTO {table} (name) VALUES (%s)", "psycopg")
        await session.select_value(f"SELECT count(*) FROM {table}")
        try:
            await session.select_value("SELECT 1 / 0")
        except SQLSpecError as exc:
            return {"failed": type(exc).__name__}
        return {"failed": None}

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.post("/run")).json() == {"failed": "DataError"}

    counts = duration_counts(registry)
    assert sum(counts.values()) == 3
    assert label_sum(counts, db_operation_name="SELECT", error_type="22012") == 1
    assert label_sum(counts, db_operation_name="INSERT", error_type="") == 1
    assert {dict(key)["db_system_name"] for key in counts} == {"postgresql"}


async def test_aiosqlite_statements_are_counted_with_their_error_name(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    """On aiosqlite, successes and failures are counted; a missing table carries SQLite's error name."""
    spec = SQLSpec()
    config = spec.add_config(AiosqliteConfig(connection_config={"database": str(tmp_path / "app.db")}))
    app = FastAPI()

    async def db_session() -> Any:
        async with spec.provide_session(config) as session:
            yield session

    @app.post("/run")
    async def run(session: Annotated[AiosqliteDriver, Depends(db_session)]) -> dict[str, str | None]:
        await session.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
        await session.execute("INSERT INTO notes (body) VALUES (?)", "aiosqlite")
        await session.select_value("SELECT count(*) FROM notes")
        try:
            await session.select_value("SELECT * FROM missing_table")
        except SQLSpecError as exc:
            return {"failed": type(exc).__name__}
        return {"failed": None}

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        failed = (await client.post("/run")).json()["failed"]
        assert failed is not None

    counts = duration_counts(registry)
    assert sum(counts.values()) == 4
    errors = {dict(key)["error_type"]: value for key, value in counts.items() if dict(key)["error_type"]}
    assert errors == {"SQLITE_ERROR": 1}, json.dumps(errors)
    assert {dict(key)["db_system_name"] for key in counts} == {"sqlite"}


async def test_config_provide_session_statements_are_counted(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """Sessions from ``config.provide_session()`` (no SQLSpec registry in between) are observed as well."""
    spec, config = asyncpg_spec(pg, bind_key="direct")
    app = FastAPI()

    @app.get("/direct")
    async def direct() -> int:
        async with config.provide_session() as session:
            first = await session.select_value("SELECT 1")
            try:
                await session.select_value("SELECT 1 / 0")
            except SQLSpecError:
                return int(first)
        return -1

    SQLSpecOps(spec, registry=registry).instrument(app)
    async with serving(app) as client:
        assert (await client.get("/direct")).json() == 1

    counts = duration_counts(registry)
    assert label_sum(counts, db_client_connection_pool_name="direct", error_type="") == 1
    assert label_sum(counts, db_client_connection_pool_name="direct", error_type="22012") == 1
