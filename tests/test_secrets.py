"""The DSN password never reaches an /ops response, a log record or a metric label, on good paths and bad ones."""

import asyncio
import logging
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.adapters.psycopg import PsycopgAsyncConfig

from sqlspec_ops import SQLSpecOps
from sqlspec_ops._adapters.registry import describe_config
from tests.support.asgi import serving
from tests.support.postgres import APP_PASSWORD, PostgresServer
from tests.support.promql import parse_samples

OPS_PATHS = ("/ops/live", "/ops/ready", "/ops/health", "/ops/pools", "/ops/metrics", "/ops/", "/ops/nope")
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


def captured_text(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the log records carry: rendered messages, tracebacks and every attribute (extra fields)."""
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.__dict__))
    return "\n".join(parts)


async def scrape_everything(client: httpx.AsyncClient) -> list[str]:
    """Call every /ops endpoint (both exposition formats) and return bodies, headers and metric labels."""
    texts: list[str] = []
    for path in OPS_PATHS:
        for headers in ({}, OPENMETRICS):
            response = await client.get(path, headers=headers)
            texts.append(response.text)
            texts.append(repr(dict(response.headers)))
            if path == "/ops/metrics" and not headers:
                for name, labels, _ in parse_samples(response.text):
                    texts.append(name)
                    texts.extend(labels.values())
    return texts


def configs(scenario: str, server: PostgresServer) -> list[Any]:
    """The asyncpg and psycopg configs of one scenario, each carrying the password."""
    password = APP_PASSWORD
    port: str = str(server.port)
    if scenario == "wrong-password":
        password = f"wr0ng-{APP_PASSWORD}"
    if scenario == "bad-dsn":
        port = "notaport"
    dsn = f"postgresql://app:{password}@127.0.0.1:{port}/appdb"
    conninfo = f"host=127.0.0.1 port={port} dbname=appdb user=app password={password}"
    return [
        AsyncpgConfig(connection_config={"dsn": dsn, "min_size": 1, "max_size": 2}, bind_key="pg-asyncpg"),
        PsycopgAsyncConfig(
            connection_config={"conninfo": conninfo, "min_size": 1, "max_size": 2}, bind_key="pg-psycopg"
        ),
        AsyncpgConfig(
            connection_config={
                "host": "127.0.0.1",
                "port": port,
                "user": "app",
                "password": password,
                "database": "appdb",
                "min_size": 0,
                "max_size": 1,
            }
        ),
    ]


@pytest.mark.parametrize("scenario", ["healthy", "database-down", "wrong-password", "bad-dsn"])
async def test_password_never_leaks(
    scenario: str, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Grep every /ops answer, every log record and every metric label for the DSN password."""
    caplog.set_level(logging.DEBUG)
    with PostgresServer() as server:
        spec = SQLSpec()
        for config in configs(scenario, server):
            spec.add_config(config)
        ops = SQLSpecOps(spec, registry=registry, health_timeout=0.5, startup_timeout=1.0)
        app = FastAPI()
        ops.instrument(app)
        if scenario == "database-down":
            server.stop()
        texts: list[str] = []
        async with serving(app) as client:
            texts += await scrape_everything(client)
            if scenario == "healthy":
                ready = await client.get("/ops/ready")
                assert ready.status_code == 200, ready.text
                server.stop()  # and then it goes away
                texts += await scrape_everything(client)
            else:
                ready = await client.get("/ops/ready")
                assert ready.status_code == 503
                texts.append(ready.text)
        texts.append(captured_text(caplog))
    assert caplog.records, "the scenario logged nothing: the capture is not working"
    leaks = [text for text in texts if APP_PASSWORD in text]
    assert not leaks, leaks[0][:2000]


ENCODED = quote(f"{APP_PASSWORD}@x:1/", safe="")  # a password that looks like the rest of a URL
TARGETS = [
    (AsyncpgConfig, {"dsn": f"postgresql://app:{APP_PASSWORD}@db.internal:6432/appdb"}, "db.internal:6432/appdb"),
    (AsyncpgConfig, {"dsn": f"postgresql://app:{ENCODED}@db.internal/appdb?sslmode=require"}, "db.internal:5432/appdb"),
    (
        AsyncpgConfig,
        {"dsn": f"postgresql://db.internal/appdb?user=app&password={APP_PASSWORD}"},
        "db.internal:5432/appdb",
    ),
    (AsyncpgConfig, {"dsn": f"postgresql://app:{APP_PASSWORD}@[::1]:5433/appdb"}, "[::1]:5433/appdb"),
    (AsyncpgConfig, {"dsn": f"postgresql://app:{APP_PASSWORD}@h1:5432,h2:5433/appdb"}, "h1:5432/appdb"),
    (
        AsyncpgConfig,
        {"dsn": f"postgresql://app:{APP_PASSWORD}@/appdb?host=/run/postgresql"},
        "/run/postgresql:5432/appdb",
    ),
    (AsyncpgConfig, {"dsn": f"postgresql://app:{APP_PASSWORD}@db.internal:oops/appdb"}, "db.internal:5432/appdb"),
    (
        AsyncpgConfig,
        {"host": "db.internal", "port": 6432, "user": "app", "password": APP_PASSWORD, "database": "appdb"},
        "db.internal:6432/appdb",
    ),
    (
        PsycopgAsyncConfig,
        {"conninfo": f"host=db.internal port=6432 dbname=appdb user=app password='{APP_PASSWORD} host=evil'"},
        "db.internal:6432/appdb",
    ),
    (
        PsycopgAsyncConfig,
        {"conninfo": f"postgresql://app:{APP_PASSWORD}@db.internal:6432/appdb"},
        "db.internal:6432/appdb",
    ),
]


@pytest.mark.parametrize(("config_class", "connection_config", "label"), TARGETS)
def test_pool_targets_hold_host_port_and_database_only(
    config_class: type[Any], connection_config: dict[str, Any], label: str
) -> None:
    """Whatever the DSN's shape, the target in labels and /ops/pools is host:port/database, never credentials."""
    target = describe_config(config_class(connection_config=connection_config))
    assert target.label == label
    assert APP_PASSWORD not in repr(target)
    assert "app@" not in repr(target)
    assert "evil" not in repr(target)


SECRET_PARAMETER = "param-Zq8-secret"  # noqa: S105 - grepped for, not a credential
SECRET_LITERAL = "literal-Kx3-secret"  # noqa: S105 - grepped for, not a credential


@pytest.mark.parametrize("adapter", ["asyncpg", "psycopg"])
async def test_holders_server_view_and_leak_logs_hold_no_password_parameter_or_literal(
    adapter: str, pg: PostgresServer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """While a leaked connection runs a statement with a parameter and a literal, /ops and the logs show neither."""
    caplog.set_level(logging.DEBUG)
    spec = SQLSpec()
    config: Any
    if adapter == "asyncpg":
        config = AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 2}, bind_key="main")
    else:
        config = PsycopgAsyncConfig(
            connection_config={"conninfo": pg.conninfo(), "min_size": 1, "max_size": 2}, bind_key="main"
        )
    spec.add_config(config)
    placeholder = "$1" if adapter == "asyncpg" else "%s"
    app = FastAPI()

    @app.post("/secret")
    async def run_secret_statements() -> None:
        async with spec.provide_session(config) as session:
            await session.begin()
            await session.select_value(f"SELECT length({placeholder}::text)", SECRET_PARAMETER)
            await session.select_value(f"SELECT pg_sleep(1.6), '{SECRET_LITERAL}'")
            await session.rollback()

    SQLSpecOps(spec, registry=registry, leak_threshold=1, server_stats_interval=0.2).instrument(app)
    texts: list[str] = []
    async with serving(app) as client:
        request = asyncio.create_task(client.post("/secret"))
        seen_executing = False
        while not request.done():
            pools = (await client.get("/ops/pools")).json()
            texts.append(repr(pools))
            holders = pools["pools"][0]["holders"]
            seen_executing = seen_executing or any(h["state"] == "executing" for h in holders)
            await asyncio.sleep(0.1)
        assert (await request).status_code == 200
        texts += await scrape_everything(client)
        last = (await client.get("/ops/pools")).json()["pools"][0]
    texts.append(captured_text(caplog))
    assert seen_executing
    assert "server" in last
    assert "this_app" in last["server"]
    assert any(r.name == "sqlspec_ops.pools" and r.levelno == logging.WARNING for r in caplog.records)
    for hidden in (APP_PASSWORD, SECRET_PARAMETER, SECRET_LITERAL):
        leaks = [text for text in texts if hidden in text]
        assert not leaks, (hidden, leaks[0][:2000])
