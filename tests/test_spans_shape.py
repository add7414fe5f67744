"""What a statement span says about its SQL: masked text, summary, collection, name, error type and SQLSTATE."""

import sqlite3

import asyncpg
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlspec.exceptions import DataError, SQLParsingError

from sqlspec_ops._adapters.aiosqlite import AiosqliteAdapter
from sqlspec_ops._adapters.asyncpg import AsyncpgAdapter
from sqlspec_ops._adapters.base import PoolTarget, error_details
from sqlspec_ops._adapters.psycopg import PsycopgAdapter
from sqlspec_ops._sql import mask_literals, shape_of
from sqlspec_ops._tracing import span_name_and_attributes

POSTGRES = PoolTarget(adapter="asyncpg", db_system="postgresql", host="db.internal", port=6432, database="shop")


@pytest.mark.parametrize(
    ("sql", "masked"),
    [
        ("SELECT * FROM t WHERE a = 'x' AND b = 42", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT 'it''s', E'it\\'s', $$a'b$$, $q$x$q$, B'1010', X'FF'", "SELECT ?, ?, ?, ?, ?, ?"),
        ("SELECT .5, 1e3, 2.5E-3, 0x1F, 1_000", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT * FROM t WHERE flag = TRUE OR other = false", "SELECT * FROM t WHERE flag = ? OR other = ?"),
        ('SELECT * FROM t1 WHERE c2 = $1 AND "col 3" = $2', 'SELECT * FROM t1 WHERE c2 = $1 AND "col 3" = $2'),
        ("SELECT %s, %(name)s, :name, ?, ?1", "SELECT %s, %(name)s, :name, ?, ?1"),
        ("SELECT x::int4, y::numeric(10, 2)", "SELECT x::int4, y::numeric(?, ?)"),
        (
            "SELECT * FROM t WHERE id IN (1, 2, 3) AND k NOT IN ('a', 'b')",
            "SELECT * FROM t WHERE id IN (?) AND k NOT IN (?)",
        ),
        ("SELECT * FROM t WHERE id = ANY($1)", "SELECT * FROM t WHERE id = ANY($1)"),
        ("SELECT 1 -- the user's 'secret'\nFROM t /* 42 */", "SELECT ? FROM t"),
        ("SELECT '-- not a comment', 1", "SELECT ?, ?"),
        ("SELECT 'unterminated secret", "SELECT ?"),
        ("SELECT $$unterminated secret", "SELECT ?"),
        ("SELECT *\n  FROM   t\n WHERE a = 1", "SELECT * FROM t WHERE a = ?"),
    ],
)
def test_mask_literals_replaces_every_literal_and_keeps_placeholders(sql: str, masked: str) -> None:
    """Strings, numbers, booleans and comments become ``?`` or vanish; placeholders, casts and identifiers stay."""
    assert mask_literals(sql) == masked


@given(secret=st.text(min_size=1, max_size=40), number=st.integers(min_value=10**6))
def test_no_string_or_number_literal_survives_masking(secret: str, number: int) -> None:
    """Whatever a quoted literal contains (quotes, backslashes, comment markers), none of it reaches the text."""
    marker = f"zq{secret}"
    sql = f"SELECT * FROM t WHERE a = '{marker.replace(chr(39), chr(39) * 2)}' AND b = {number} AND c = $1"
    masked = mask_literals(sql)
    assert "zq" not in masked
    assert str(number) not in masked
    assert masked.endswith("AND b = ? AND c = $1")


@pytest.mark.parametrize(
    ("sql", "summary", "collection"),
    [
        ("SELECT count(*) FROM items WHERE id = $1", "SELECT items", "items"),
        ("SELECT * FROM public.items", "SELECT public.items", "public.items"),
        ('SELECT * FROM "Song List"', 'SELECT "Song List"', '"Song List"'),
        ("SELECT * FROM songs, artists WHERE songs.artist_id = artists.id", "SELECT songs artists", None),
        ("SELECT * FROM orders o JOIN customers c ON o.cid = c.id", "SELECT orders customers", None),
        ("SELECT * FROM t WHERE id IN (SELECT tid FROM u)", "SELECT t SELECT u", None),
        ("INSERT INTO shipping (a) SELECT a FROM orders WHERE id = $1", "INSERT shipping SELECT orders", None),
        (
            "INSERT INTO items (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
            "INSERT items",
            "items",
        ),
        ("UPDATE ONLY items SET n = n + 1 WHERE id = $1", "UPDATE items", "items"),
        ("DELETE FROM items WHERE id = ANY($1)", "DELETE items", "items"),
        ("SELECT * FROM items WHERE id = $1 FOR UPDATE", "SELECT items", "items"),
        ("SELECT EXTRACT(YEAR FROM ts) FROM events", "SELECT events", "events"),
        ("SELECT a FROM t WHERE a IS DISTINCT FROM b", "SELECT t", "t"),
        ("SELECT * FROM generate_series(1, 10)", "SELECT", None),
        ("WITH r AS (SELECT * FROM orders) SELECT * FROM r", "SELECT orders SELECT r", None),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET x = s.x", "MERGE t s", None),
        ("CREATE TABLE IF NOT EXISTS items (id int)", "CREATE TABLE items", "items"),
        ("CREATE UNIQUE INDEX CONCURRENTLY items_name ON items (name)", "CREATE INDEX items_name", None),
        ("DROP TABLE IF EXISTS items", "DROP TABLE items", "items"),
        ("TRUNCATE TABLE items", "TRUNCATE items", "items"),
        ("CALL refresh_stats($1)", "CALL refresh_stats", None),
        ("SELECT 1", "SELECT", None),
        ("BEGIN", "BEGIN", None),
        ("SELECT * FROM items /*traceparent='00-4bf9-00f0-01'*/", "SELECT items", "items"),
    ],
)
def test_summary_and_single_collection(sql: str, summary: str, collection: str | None) -> None:
    """The summary lists operations and targets in order; a collection is named only when it is the only one."""
    shape = shape_of(sql)
    assert (shape.summary, shape.collection) == (summary, collection)


def test_span_name_and_attributes_follow_the_stable_conventions() -> None:
    """The span is named after the summary and carries the target's namespace, address and port."""
    name, attributes = span_name_and_attributes(shape_of("SELECT * FROM items WHERE sku = 'A-1'"), "SELECT", POSTGRES)
    assert name == "SELECT items"
    assert attributes == {
        "db.system.name": "postgresql",
        "db.operation.name": "SELECT",
        "db.namespace": "shop",
        "db.collection.name": "items",
        "db.query.summary": "SELECT items",
        "db.query.text": "SELECT * FROM items WHERE sku = ?",
        "server.address": "db.internal",
        "server.port": 6432,
    }


def test_sqlite_spans_have_no_server_attributes() -> None:
    """An embedded database has no server address or port to report."""
    target = PoolTarget(adapter="aiosqlite", db_system="sqlite", database="app.db")
    _, attributes = span_name_and_attributes(shape_of("SELECT 1"), "SELECT", target)
    assert "server.address" not in attributes
    assert "server.port" not in attributes


def test_statement_hash_ignores_literals() -> None:
    """Statements differing only in literals share a hash; different statements do not."""
    assert shape_of("SELECT * FROM t WHERE a = 1").sql_hash == shape_of("SELECT * FROM t WHERE a = 2").sql_hash
    assert shape_of("SELECT * FROM t WHERE a = 1").sql_hash != shape_of("SELECT * FROM u WHERE a = 1").sql_hash


def _wrapped(driver_error: BaseException, message: str) -> DataError:
    """Return a SQLSpec error raised from a driver error, as SQLSpec's exception handler does."""
    wrapped = DataError(message)
    wrapped.__cause__ = driver_error
    return wrapped


def test_error_details_read_the_sqlstate_of_the_wrapped_driver_error() -> None:
    """The asyncpg and psycopg errors wrapped by SQLSpec give their SQLSTATE as both error type and status code."""
    asyncpg_error = _wrapped(asyncpg.exceptions.DivisionByZeroError("division by zero"), "database error")
    assert error_details(AsyncpgAdapter(), asyncpg_error) == ("22012", "22012")
    psycopg_error = _wrapped(psycopg.errors.UniqueViolation("Key (name)=(alice) already exists"), "database error")
    assert error_details(PsycopgAdapter(), psycopg_error) == ("23505", "23505")


def test_error_details_without_a_driver_error() -> None:
    """SQLSpec's ``[SQLSTATE]`` prefix is used when the cause is gone; otherwise the innermost class names the error."""
    assert error_details(AsyncpgAdapter(), DataError("PostgreSQL database error [22012]: division by zero")) == (
        "22012",
        "22012",
    )
    assert error_details(AsyncpgAdapter(), DataError("value [ABCDE] rejected")) == (
        "sqlspec.exceptions.DataError",
        None,
    )
    assert error_details(AsyncpgAdapter(), SQLParsingError("bad")) == ("sqlspec.exceptions.SQLParsingError", None)
    assert error_details(AsyncpgAdapter(), TimeoutError()) == ("TimeoutError", None)


def test_error_details_for_sqlite() -> None:
    """SQLite errors give their error name (``SQLITE_ERROR``...) as status code."""
    connection = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as caught:
        connection.execute("SELECT * FROM missing_table")
    connection.close()
    assert error_details(AiosqliteAdapter(), _wrapped(caught.value, "sqlite error")) == ("SQLITE_ERROR", "SQLITE_ERROR")


def test_huge_statements_are_read_only_up_to_a_bound() -> None:
    """A megabyte-long INSERT with inlined literals gives a bounded, fully masked text and keeps its summary."""
    rows = ", ".join(f"({index}, 'secret-row-{index}')" for index in range(40_000))
    shape = shape_of(f"INSERT INTO bulk (id, name) VALUES {rows}")
    assert len(shape.text) <= 4096
    assert "secret-row" not in shape.text
    assert (shape.summary, shape.collection) == ("INSERT bulk", "bulk")
