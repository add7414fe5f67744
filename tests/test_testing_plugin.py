"""sqlspec_ops.testing: query captures, budgets, the fixture and the marker, on aiosqlite and real PostgreSQL.

The plugin tests run a small test module in a pytest subprocess (``pytester.runpytest_subprocess``): that
pytest loads the plugin the way users get it, through the ``pytest11`` entry point, with no conftest.
"""

import asyncio
import contextlib
import re
import secrets
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.aiosqlite import AiosqliteConfig
from sqlspec.exceptions import SQLSpecError
from sqlspec.observability import ObservabilityConfig

from sqlspec_ops import SQLSpecOps, _capture
from sqlspec_ops.testing import (
    CapturedStatement,
    assert_max_queries,
    assert_num_queries,
    capture_queries,
    format_statements,
)
from tests.support.postgres import PostgresServer
from tests.support.readme import readme_blocks
from tests.support.statements import asyncpg_spec

pytest_plugins = ["pytester"]


# The module the subprocess runs. It reads everything it varies on from the environment, so the secrets
# it sends never appear in its source (pytest prints source lines in tracebacks).
INNER_MODULE = """
import os
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec

from sqlspec_ops import SQLSpecOps
from sqlspec_ops.testing import assert_max_queries, assert_num_queries


def create_app() -> FastAPI:
    spec = SQLSpec()
    if os.environ["QB_BACKEND"] == "asyncpg":
        from sqlspec.adapters.asyncpg import AsyncpgConfig

        connection = {"dsn": os.environ["QB_DATABASE"], "min_size": 1, "max_size": 2}
        config = spec.add_config(AsyncpgConfig(connection_config=connection, bind_key="main"))
        first, second = "$1", "$2"
    else:
        from sqlspec.adapters.aiosqlite import AiosqliteConfig

        connection = {"database": os.environ["QB_DATABASE"]}
        config = spec.add_config(AiosqliteConfig(connection_config=connection, bind_key="main"))
        first = second = "?"
    sql = (
        f"SELECT title FROM {os.environ['QB_TABLE']} WHERE id = {first} AND title <> {second}"
        f" AND title <> '{os.environ['QB_SECRET_LITERAL']}'"
    )

    async def session() -> Any:
        async with spec.provide_session(config) as driver:
            yield driver

    app = FastAPI()

    @app.get("/posts")
    async def posts(db: Any = Depends(session)) -> list[str]:
        # N+1 on purpose: one statement per post, each with a secret-shaped parameter.
        return [await db.select_value(sql, post_id, os.environ["QB_SECRET_PARAM"]) for post_id in (1, 2, 3)]

    SQLSpecOps(spec, registry=CollectorRegistry()).instrument(app)
    return app


def test_max_queries_1_exceeded():
    with TestClient(create_app()) as client, assert_max_queries(1):
        assert client.get("/posts").json() == ["one", "two", "three"]


async def test_max_queries_5_within_budget():
    async with LifespanManager(create_app()) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async with assert_max_queries(5) as queries:
                assert (await client.get("/posts")).status_code == 200
    assert queries.count == 3


def test_num_queries_3_exact():
    with TestClient(create_app()) as client, assert_num_queries(3):
        client.get("/posts")


def test_num_queries_4_wrong():
    with TestClient(create_app()) as client, assert_num_queries(4):
        client.get("/posts")


@pytest.mark.max_queries(5)
def test_marker_5_within_budget():
    with TestClient(create_app()) as client:
        assert client.get("/posts").status_code == 200


@pytest.mark.max_queries(2)
def test_marker_2_exceeded():
    with TestClient(create_app()) as client:
        assert client.get("/posts").status_code == 200


@pytest.mark.max_queries(2)
async def test_marker_2_exceeded_async():
    async with LifespanManager(create_app()) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/posts")).status_code == 200


def test_fixture_counts_testclient(sqlspec_queries):
    with TestClient(create_app()) as client:
        client.get("/posts")
    assert sqlspec_queries.count == 3
    assert [(s.operation, s.pool, s.failed) for s in sqlspec_queries.statements] == [("SELECT", "main", False)] * 3


async def test_fixture_counts_asgitransport(sqlspec_queries):
    async with LifespanManager(create_app()) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/posts")
    assert sqlspec_queries.count == 3
"""

FAILING = (
    "test_max_queries_1_exceeded",
    "test_num_queries_4_wrong",
    "test_marker_2_exceeded",
    "test_marker_2_exceeded_async",
)


def _failure_sections(output: str) -> dict[str, str]:
    """Split pytest's FAILURES output into one text per failed test."""
    parts = re.split(r"^_{3,} (\S+) _{3,}$", output, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


async def _posts_table_pg(pg: PostgresServer) -> str:
    name = f"posts_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(pg.dsn)
    try:
        await connection.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, title text NOT NULL)")
        await connection.execute(f"INSERT INTO {name} VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    finally:
        await connection.close()
    return name


def _posts_table_sqlite(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")
        connection.execute("INSERT INTO posts VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    return "posts"


@pytest.mark.parametrize("backend", ["aiosqlite", "asyncpg"])
async def test_plugin_in_a_pytest_run(
    backend: str, pytester: pytest.Pytester, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a pytest run of an N+1 app, budgets and the marker fail naming the shape and "3", never a secret."""
    if backend == "asyncpg":
        pg: PostgresServer = request.getfixturevalue("pg")
        table, database = await _posts_table_pg(pg), pg.dsn
        shape = f"SELECT title FROM {table} WHERE id = $1 AND title <> $2 AND title <> ?"
    else:
        database = str(pytester.path / "app.db")
        table = _posts_table_sqlite(Path(database))
        shape = f"SELECT title FROM {table} WHERE id = ? AND title <> ? AND title <> ?"
    secret_param, secret_literal = f"sk_live_{secrets.token_hex(12)}", f"pw_{secrets.token_hex(12)}"
    for key, value in {
        "QB_BACKEND": backend,
        "QB_DATABASE": database,
        "QB_TABLE": table,
        "QB_SECRET_PARAM": secret_param,
        "QB_SECRET_LITERAL": secret_literal,
    }.items():
        monkeypatch.setenv(key, value)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=INNER_MODULE)

    result = pytester.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider", "-W", "ignore")

    output = result.stdout.str() + result.stderr.str()
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("failed"), outcomes.get("errors")) == (5, 4, None), output
    sections = _failure_sections(result.stdout.str())
    assert sorted(sections) == sorted(FAILING), output
    repeated = f"  {shape} ran 3 times: N+1?"
    assert "3 statements ran, at most 1 expected:" in sections["test_max_queries_1_exceeded"]
    assert "3 statements ran, exactly 4 expected:" in sections["test_num_queries_4_wrong"]
    for name in ("test_marker_2_exceeded", "test_marker_2_exceeded_async"):
        assert "@pytest.mark.max_queries(2): 3 statements ran, at most 2 expected:" in sections[name]
    for name in FAILING:
        assert repeated in sections[name], sections[name]
    assert secret_param not in output
    assert secret_literal not in output


def test_plugin_comes_from_the_entry_point(pytester: pytest.Pytester) -> None:
    """With no conftest the fixture and marker work; blocking the ``sqlspec_ops`` entry point removes both."""
    pytester.makepyfile(
        test_bare="""
        import pytest

        @pytest.mark.max_queries(0)
        def test_uses_plugin(sqlspec_queries):
            assert sqlspec_queries.count == 0
        """
    )
    assert not list(pytester.path.glob("conftest.py"))

    loaded = pytester.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider")
    blocked = pytester.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider", "-p", "no:sqlspec_ops")

    loaded.assert_outcomes(passed=1)
    assert blocked.ret != 0
    assert "'max_queries' not found in `markers` configuration option" in blocked.stdout.str()


def test_plugin_load_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    """Loading the plugin at pytest start imports neither FastAPI, SQLSpec, prometheus_client nor OpenTelemetry."""
    pytester.makepyfile(
        test_modules="""
        import sys

        def test_nothing_heavy_loaded():
            assert "sqlspec_ops.testing" in sys.modules
            heavy = {"fastapi", "sqlspec", "prometheus_client", "opentelemetry", "starlette", "sqlspec_ops._ops"}
            assert heavy.isdisjoint(sys.modules), sorted(heavy & set(sys.modules))
        """
    )
    # pytest-asyncio and anyio import nothing of these either; this run keeps only our plugin to be sure.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio", "-p", "no:anyio")
    result.assert_outcomes(passed=1)


def _readme_blocks() -> tuple[str, str]:
    (code,) = readme_blocks("Query budgets in tests", "python")
    (shown,) = readme_blocks("Query budgets in tests", "text")
    return code, shown


def test_readme_example_catches_the_n_plus_1(pytester: pytest.Pytester) -> None:
    """The README's example runs: its budget test fails with exactly the report shown, its marker test passes."""
    code, shown = _readme_blocks()
    pytester.makepyfile(test_readme_example=code)

    result = pytester.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider", "-W", "ignore")

    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "FAILED test_readme_example.py::test_authors_page_stays_within_its_query_budget" in output
    for line in shown.strip().splitlines():
        assert re.search(rf"^E\s+{re.escape(line.strip())}$", output, re.MULTILINE), (line, output)


# -- in-process behaviour -------------------------------------------------------------------------------


def _raw_sql_hook(seen: list[str]) -> ObservabilityConfig:
    """A hook that keeps the SQL text as the driver got it: proves a secret really was in it."""

    def on_query_start(context: dict[str, Any]) -> None:
        seen.append(context.get("sql") or "")

    hooks: Any = {"on_query_start": [on_query_start]}
    return ObservabilityConfig(lifecycle=hooks)


async def test_nested_captures_threads_and_failures_on_aiosqlite(tmp_path: Path) -> None:
    """Nested captures see their own span, a thread's statements count, failures are marked, closed ones stop."""
    spec = SQLSpec()
    config = spec.add_config(AiosqliteConfig(connection_config={"database": str(tmp_path / "n.db")}, bind_key="lite"))
    SQLSpecOps(spec, registry=CollectorRegistry()).install()

    async def run(sql: str) -> None:
        async with config.provide_session() as session:
            with contextlib.suppress(SQLSpecError):  # a failing statement is recorded too
                await session.execute(sql)

    await run("CREATE TABLE t (x INTEGER)")  # before any capture: seen by none
    with capture_queries() as outer:
        await run("SELECT 1")
        async with capture_queries() as inner:
            thread = threading.Thread(target=asyncio.run, args=(run("SELECT 2"),))
            thread.start()
            thread.join()
            await run("SELECT * FROM missing_table")
        await run("SELECT 3")
    await run("SELECT 4")  # after both closed

    assert [s.sql for s in outer.statements] == ["SELECT ?", "SELECT ?", "SELECT * FROM missing_table", "SELECT ?"]
    assert [(s.sql, s.failed) for s in inner.statements] == [("SELECT ?", False), ("SELECT * FROM missing_table", True)]
    assert {s.pool for s in outer.statements} == {"lite"}
    assert all(s.duration > 0 for s in outer.statements)
    assert "SELECT * FROM missing_table (1 failed)" in inner.report()
    assert not _capture.active
    await spec.close_all_pools()


async def test_reports_never_show_parameters_or_literals_on_postgres(pg: PostgresServer) -> None:
    """On asyncpg, a secret sent as a parameter and one inlined as a literal reach the driver but no report."""
    spec, config = asyncpg_spec(pg, bind_key="main")
    seen: list[str] = []
    config.observability_config = ObservabilityConfig.merge(config.observability_config, _raw_sql_hook(seen))
    SQLSpecOps(spec, registry=CollectorRegistry()).install()
    param, literal = f"sk_live_{secrets.token_hex(12)}", f"pw_{secrets.token_hex(12)}"

    async def statements() -> None:
        async with config.provide_session() as session:
            for _ in range(2):
                await session.select_value(f"SELECT $1::text <> '{literal}'", param)
            with pytest.raises(SQLSpecError):
                await session.select_value("SELECT $1::int / 0", 1)

    budget = assert_max_queries(1)
    with pytest.raises(AssertionError) as failure:
        async with budget:
            await statements()

    report = str(failure.value)
    assert report == (
        "3 statements ran, at most 1 expected:\n"
        "  SELECT $1::text <> ? ran 2 times: N+1?\n"
        "  SELECT $1::int / ? (1 failed)"
    )
    assert any(literal in sql for sql in seen)  # the negative control: the literal was in the SQL text
    assert param not in repr(budget.statements)
    assert literal not in repr(budget.statements)
    await spec.close_all_pools()


async def test_num_queries_passes_only_on_the_exact_count(pg: PostgresServer) -> None:
    """``assert_num_queries(n)`` passes at n statements and fails at fewer; an error in the block wins."""
    spec, config = asyncpg_spec(pg)
    SQLSpecOps(spec, registry=CollectorRegistry()).install()

    async def two() -> None:
        async with config.provide_session() as session:
            await session.select_value("SELECT 1")
            await session.select_value("SELECT 2")

    async with assert_num_queries(2):
        await two()
    with pytest.raises(AssertionError, match=r"^2 statements ran, exactly 3 expected:\n  SELECT \? ran 2 times"):
        async with assert_num_queries(3):
            await two()

    async def two_then_fail() -> None:
        await two()
        raise KeyError

    with pytest.raises(KeyError):  # the block's own error, not the budget's
        async with assert_num_queries(3):
            await two_then_fail()
    await spec.close_all_pools()


def test_report_orders_by_repetition_and_names_pools() -> None:
    """Repeated shapes come first, most repeated first; pools are named only when several ran."""
    a = CapturedStatement("SELECT a", "SELECT", "main", 0.001, failed=False)
    b = CapturedStatement("SELECT b WHERE id = ?", "SELECT", "main", 0.001, failed=False)
    c = CapturedStatement("SELECT c", "SELECT", "replica", 0.001, failed=False)

    assert format_statements([a, b, b, a, b]) == (
        "  SELECT b WHERE id = ? ran 3 times: N+1?\n  SELECT a ran 2 times: N+1?"
    )
    assert format_statements([a, c, c]) == "  SELECT c ran 2 times: N+1? (pool replica)\n  SELECT a (pool main)"
    assert format_statements([]) == ""


def test_budgets_reject_what_is_not_a_count(pytester: pytest.Pytester) -> None:
    """A negative or non-integer budget is refused with a message saying what to pass, in code and in the marker."""
    with pytest.raises(ValueError, match="int >= 0"):
        assert_max_queries(-1)
    with pytest.raises(ValueError, match="int >= 0"):
        assert_num_queries(True)  # noqa: FBT003 - the point of the test
    pytester.makepyfile(
        test_bad_marker="""
        import pytest

        @pytest.mark.max_queries("five")
        def test_bad():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "use @pytest.mark.max_queries(n) with one int n >= 0" in result.stdout.str()
