"""check_pool_budget against real PostgreSQL servers: the numbers, the sums per server, limits and failures."""

import asyncio
import json
import time

import asyncpg
import pytest
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.adapters.psycopg import PsycopgAsyncConfig

from sqlspec_ops import check_pool_budget
from sqlspec_ops._budget import BudgetReport, check_pool_budget_async
from tests.support.network import silent_server
from tests.support.postgres import APP_PASSWORD, PostgresServer, free_port


def _asyncpg(dsn: str, *, max_size: int = 10, min_size: int = 1, bind_key: str | None = None) -> AsyncpgConfig:
    return AsyncpgConfig(connection_config={"dsn": dsn, "max_size": max_size, "min_size": min_size}, bind_key=bind_key)


def _spec(*configs: object) -> SQLSpec:
    spec = SQLSpec()
    for config in configs:
        spec.add_config(config)  # type: ignore[call-overload]
    return spec


def _server(pg: PostgresServer) -> str:
    return f"{pg.host}:{pg.port}"


def _no_secret(report: BudgetReport) -> None:
    assert APP_PASSWORD not in report.render()
    assert APP_PASSWORD not in json.dumps(report.as_json())


def test_three_workers_exceed_max_connections_20(pg20: PostgresServer) -> None:
    """One pool of max_size 10 in 3 workers needs 30 connections; the server allows 17; 5 per pool would fit."""
    report = check_pool_budget(_spec(_asyncpg(pg20.dsn, bind_key="primary")), workers=3)
    (server,) = report.servers
    assert server.server == _server(pg20)
    assert (server.demand, server.min_demand, server.budget) == (30, 3, 17)
    assert server.limits is not None
    assert (server.limits.max_connections, dict(server.limits.reserved)["superuser_reserved_connections"]) == (20, 3)
    assert server.limits.source == "server"
    assert server.verdict == "oversubscribed"
    assert server.fits_max_size == 5
    assert report.oversubscribed
    assert report.exit_code == 1
    assert (report.workers.count, report.workers.source) == (3, "option")
    text = report.render()
    assert "OVERSUBSCRIBED" in text
    assert "demand 30 = 1 replica x 3 workers (option) x max_size 10 (pool primary) > budget 17" in text
    assert "max_connections 20 - superuser_reserved_connections 3" in text
    assert "set max_size to at most 5 per pool" in text
    pool = report.as_json()["servers"][0]
    assert pool["max_size_that_fits"] == 5
    _no_secret(report)


def test_one_worker_fits(pg20: PostgresServer) -> None:
    """The same pool in one worker needs 10 of 17 connections: within budget, exit code 0."""
    report = check_pool_budget(_spec(_asyncpg(pg20.dsn)), workers=1)
    (server,) = report.servers
    assert (server.demand, server.budget, server.verdict) == (10, 17, "within budget")
    assert not report.oversubscribed
    assert report.exit_code == 0


def test_replicas_multiply_the_demand(pg20: PostgresServer) -> None:
    """Demand is replicas x workers x max_size: two replicas of one worker each with max_size 10 need 20."""
    report = check_pool_budget(_spec(_asyncpg(pg20.dsn)), workers=1, replicas=2)
    assert (report.servers[0].demand, report.servers[0].verdict) == (20, "oversubscribed")
    assert report.servers[0].fits_max_size == 8


def test_two_configs_on_one_server_are_summed(pg20: PostgresServer) -> None:
    """An asyncpg and a psycopg pool on the same server add up; psycopg's unset sizes are its defaults (4/4)."""
    psycopg = PsycopgAsyncConfig(connection_config={"conninfo": pg20.conninfo()}, bind_key="reports")
    report = check_pool_budget(_spec(_asyncpg(pg20.dsn, bind_key="primary"), psycopg), workers=1)
    (server,) = report.servers
    assert [p.name for p in server.pools] == ["primary", "reports"]
    reports = server.pools[1]
    assert (reports.max_size, reports.min_size, reports.sizes.max_explicit, reports.sizes.min_explicit) == (
        4,
        4,
        False,
        False,
    )
    assert (server.demand, server.min_demand, server.budget) == (14, 5, 17)
    assert server.verdict == "within budget"
    assert server.fits_max_size == 8
    assert "max_size 4 (driver default), min_size 4 (driver default)" in report.render()


def test_psycopg_reads_the_limits_too(pg20: PostgresServer) -> None:
    """A psycopg-only app gets its budget from the server over a psycopg connection."""
    psycopg = PsycopgAsyncConfig(connection_config={"conninfo": pg20.conninfo(), "max_size": 9})
    report = check_pool_budget(_spec(psycopg), workers=2)
    assert (report.servers[0].demand, report.servers[0].budget) == (18, 17)


def test_pools_on_different_servers_are_judged_separately(pg: PostgresServer, pg20: PostgresServer) -> None:
    """Three workers with max_size 10 fit the 100-connection server but not the 20-connection one."""
    spec = _spec(_asyncpg(pg.dsn, bind_key="big"), _asyncpg(pg20.dsn, bind_key="small"))
    report = check_pool_budget(spec, workers=3)
    by_server = {s.server: s for s in report.servers}
    big, small = by_server[_server(pg)], by_server[_server(pg20)]
    assert (big.demand, big.budget, big.verdict) == (30, 97, "within budget")
    assert (small.demand, small.budget, small.verdict) == (30, 17, "oversubscribed")
    assert report.verdicts()[_server(pg)]["verdict"] == "within budget"
    assert report.verdicts()[_server(pg20)]["verdict"] == "oversubscribed"


def test_sqlite_pools_have_no_server_limit(tmp_path: object, pg20: PostgresServer) -> None:
    """Pools of aiosqlite are listed as "no server limit" and never counted against a server."""
    sqlite = AiosqliteConfig(connection_config={"database": f"{tmp_path}/app.db", "pool_size": 50}, bind_key="local")
    report = check_pool_budget(_spec(sqlite, _asyncpg(pg20.dsn)), workers=1)
    assert [p.name for p in report.embedded] == ["local"]
    assert (report.servers[0].demand, report.servers[0].verdict) == (10, "within budget")
    assert f"{tmp_path}/app.db: no server limit (pool local, aiosqlite, max_size 50)" in report.render()
    assert report.as_json()["no_server_limit"][0]["name"] == "local"
    only_sqlite = check_pool_budget(_spec(sqlite), workers=8)
    assert (only_sqlite.servers, only_sqlite.exit_code) == ((), 0)


async def test_role_and_database_connection_limits(pg: PostgresServer, superuser: asyncpg.Connection) -> None:
    """Role and database connection limits (rolconnlimit, datconnlimit) tighten the budget when set."""
    await superuser.execute("CREATE ROLE budget_limited LOGIN PASSWORD 'budget-pw' CONNECTION LIMIT 6")
    try:
        await superuser.execute("CREATE DATABASE budget_db OWNER budget_limited CONNECTION LIMIT 4")
        try:
            dsn = f"postgresql://budget_limited:budget-pw@{pg.host}:{pg.port}/budget_db"
            report = check_pool_budget(_spec(_asyncpg(dsn, max_size=3, bind_key="limited")), workers=2)
            (server,) = report.servers
            limits = {(c.kind, c.name): c.limit for c in server.constraints}
            assert limits == {("server", _server(pg)): 97, ("role", "budget_limited"): 6, ("database", "budget_db"): 4}
            assert (server.demand, server.budget, server.verdict, server.fits_max_size) == (6, 4, "oversubscribed", 2)
            text = report.render()
            assert "role 'budget_limited' allows 6" in text
            assert "database 'budget_db' allows 4" in text
            assert "budget-pw" not in text
        finally:
            await superuser.execute("DROP DATABASE budget_db")
    finally:
        await superuser.execute("DROP ROLE budget_limited")


def test_override_needs_no_server(pg20: PostgresServer) -> None:
    """With max_connections given, the number is the budget as given and no connection is attempted."""
    nowhere = f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{free_port()}/appdb"
    report = check_pool_budget(_spec(_asyncpg(nowhere), _asyncpg(pg20.dsn)), workers=3, max_connections=40)
    assert [(s.demand, s.budget, s.verdict, s.error) for s in report.servers] == [
        (30, 40, "within budget", None),
        (30, 40, "within budget", None),
    ]
    assert "max_connections override 40" in report.render()


def test_min_size_demand_alone_exceeding_the_budget_is_flagged(pg20: PostgresServer) -> None:
    """Three workers opening min_size 7 need 21 of 17 connections: the deploy would fail at startup."""
    report = check_pool_budget(_spec(_asyncpg(pg20.dsn, min_size=7)), workers=3)
    (server,) = report.servers
    assert (server.min_demand, server.budget, server.min_exceeded) == (21, 17, True)
    assert "the deploy will fail at startup" in report.render()
    assert "set min_size to at most 5 per pool" in report.render()
    fits = check_pool_budget(_spec(_asyncpg(pg20.dsn, min_size=5)), workers=3).servers[0]
    assert (fits.min_demand, fits.min_exceeded) == (15, False)


def test_unreachable_server_is_reported_not_raised() -> None:
    """A server nobody listens on gives verdict "unknown", the error class, exit code 2, and no password."""
    dsn = f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{free_port()}/appdb"
    report = check_pool_budget(_spec(_asyncpg(dsn)), workers=2)
    (server,) = report.servers
    assert (server.verdict, server.budget, server.demand) == ("unknown", None, 20)
    assert server.error == "ConnectionRefusedError"
    assert report.exit_code == 2
    assert "could not read the server's limits (ConnectionRefusedError)" in report.render()
    _no_secret(report)


def test_silent_server_is_bounded_by_the_timeout() -> None:
    """A server that accepts TCP but never answers costs the timeout, not asyncpg's 60 s connect timeout."""
    with silent_server() as port:
        dsn = f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{port}/appdb"
        started = time.monotonic()
        report = check_pool_budget(_spec(_asyncpg(dsn)), workers=1, timeout=0.5)
        elapsed = time.monotonic() - started
    assert report.servers[0].error == "TimeoutError: no answer within 0.5s"
    assert elapsed < 30  # generous: the point is not waiting for the driver's own 60 s


async def test_sync_call_works_inside_a_running_event_loop(pg20: PostgresServer) -> None:
    """check_pool_budget can be called from async code (it reads the servers on a thread of its own)."""
    asyncio.get_running_loop()
    report = check_pool_budget(_spec(_asyncpg(pg20.dsn)), workers=3)
    assert (report.servers[0].demand, report.servers[0].budget) == (30, 17)
    via_async = await check_pool_budget_async(_spec(_asyncpg(pg20.dsn)), workers=3)
    assert via_async.verdicts() == report.verdicts()


def test_no_pool_is_created(pg20: PostgresServer) -> None:
    """Reading the limits uses a standalone connection: the config's pool is never created."""
    config = _asyncpg(pg20.dsn)
    check_pool_budget(_spec(config), workers=1)
    assert config.connection_instance is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"replicas": 0}, "replicas must be a positive integer"),
        ({"max_connections": 0}, "max_connections must be a positive integer"),
        ({"workers": 0}, "workers must be a positive integer"),
        ({"timeout": 0}, "timeout must be a positive number"),
    ],
)
def test_invalid_options_raise(options: dict[str, int], message: str) -> None:
    """Invalid options are ValueErrors saying what is wrong, before any I/O."""
    with pytest.raises(ValueError, match=message):
        check_pool_budget(_spec(_asyncpg("postgresql://app@127.0.0.1:1/appdb")), **options)
