"""Query budgets in tests: count the statements SQLSpec runs and fail on N+1 patterns.

Every statement run through a config instrumented by ``SQLSpecOps`` is seen, in any thread or task of the
process, while a capture is open (an app served by Starlette's ``TestClient`` runs in another thread, one
behind httpx's ``ASGITransport`` in the test's own event loop)::

    from sqlspec_ops.testing import assert_max_queries, assert_num_queries, capture_queries

    with assert_max_queries(2):  # AssertionError listing the statements when more ran
        client.get("/authors")

    async with capture_queries() as queries:
        await client.get("/authors")
    assert queries.count == 2

The failure lists the statements grouped by shape (literals masked, parameters never read), repeated ones
first: ``SELECT title FROM books WHERE author_id = ? ran 60 times: N+1?``.

This module is also a pytest plugin, loaded through the ``pytest11`` entry point ``sqlspec_ops`` (disable it
with ``-p no:sqlspec_ops``): the fixture ``sqlspec_queries`` is a capture open for the whole test, and the
marker ``@pytest.mark.max_queries(n)`` fails a test whose body (its fixtures' set-up and tear-down excluded)
runs more than ``n`` statements, with the same report. Loading the plugin imports nothing beyond the
standard library and pytest, and with no capture open a statement pays one truthiness check.
"""

from collections.abc import Generator
from types import TracebackType
from typing import Self

import pytest

from sqlspec_ops import _capture
from sqlspec_ops._capture import CapturedStatement

__all__ = (
    "CapturedStatement",
    "QueryBudget",
    "QueryCapture",
    "assert_max_queries",
    "assert_num_queries",
    "capture_queries",
    "format_statements",
    "sqlspec_queries",
)

_MARKER = "max_queries"
_MAX_LINE_SQL = 300  # a long statement's head tells which one it is; its tail would bury the report


class QueryCapture:
    """The statements run while it is open (``with`` or ``async with``), in the order they finished."""

    def __init__(self) -> None:
        self._recorder: _capture.Recorder | None = None
        self._closed: tuple[CapturedStatement, ...] | None = None

    @property
    def statements(self) -> tuple[CapturedStatement, ...]:
        """The statements seen so far (all of them once the capture is closed)."""
        if self._closed is not None:
            return self._closed
        if self._recorder is None:
            return ()
        return tuple(self._recorder.statements)

    @property
    def count(self) -> int:
        """How many statements ran while the capture was open (failed ones included)."""
        return len(self.statements)

    def report(self) -> str:
        """Return the statements grouped by shape, repeated ones first (see :func:`format_statements`)."""
        return format_statements(self.statements)

    def _open(self) -> None:
        if self._recorder is not None or self._closed is not None:
            msg = "a query capture can be opened only once; call capture_queries() again for a new one"
            raise RuntimeError(msg)
        self._recorder = _capture.open_recorder()

    def _close(self) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        _capture.close_recorder(recorder)
        self._closed = tuple(recorder.statements)
        self._recorder = None

    def __enter__(self) -> Self:
        """Start capturing."""
        self._open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop capturing."""
        self._close()

    async def __aenter__(self) -> Self:
        """Start capturing (``async with``)."""
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop capturing (``async with``)."""
        __tracebackhide__ = True  # a budget's failure points at the test's `async with`, not here
        self.__exit__(exc_type, exc, tb)


class QueryBudget(QueryCapture):
    """A capture that fails with an ``AssertionError`` on leaving when too many (or too few) statements ran.

    Args:
        limit: The number of statements allowed.
        exact: Require exactly ``limit`` statements instead of at most ``limit``.

    Raises:
        ValueError: If ``limit`` is not an int >= 0.

    """

    def __init__(self, limit: int, *, exact: bool) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            msg = f"a query budget is a number of statements (an int >= 0), got {limit!r}"
            raise ValueError(msg)
        super().__init__()
        self.limit = limit
        self.exact = exact

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop capturing and check the budget, unless the block raised (its error is the one to see)."""
        __tracebackhide__ = True
        super().__exit__(exc_type, exc, tb)
        if exc_type is None:
            failure = _budget_failure(self.statements, self.limit, exact=self.exact)
            if failure is not None:
                raise AssertionError(failure)


def capture_queries() -> QueryCapture:
    """Return a capture of the statements run while it is open.

    Returns:
        A context manager (``with`` or ``async with``) with ``.count`` and ``.statements``.

    """
    return QueryCapture()


def assert_max_queries(n: int) -> QueryBudget:
    """Fail the block with an ``AssertionError`` listing the statements when more than ``n`` ran.

    Args:
        n: The most statements the block may run.

    Returns:
        A context manager (``with`` or ``async with``); it is also a capture (``.count``, ``.statements``).

    """
    return QueryBudget(n, exact=False)


def assert_num_queries(n: int) -> QueryBudget:
    """Fail the block with an ``AssertionError`` listing the statements unless exactly ``n`` ran.

    Args:
        n: How many statements the block must run.

    Returns:
        A context manager (``with`` or ``async with``); it is also a capture (``.count``, ``.statements``).

    """
    return QueryBudget(n, exact=True)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _budget_failure(statements: tuple[CapturedStatement, ...], limit: int, *, exact: bool) -> str | None:
    count = len(statements)
    if count == limit or (count < limit and not exact):
        return None
    expected = f"exactly {limit}" if exact else f"at most {limit}"
    report = format_statements(statements)
    headline = f"{_plural(count, 'statement')} ran, {expected} expected"
    return f"{headline}:\n{report}" if report else headline


def format_statements(statements: tuple[CapturedStatement, ...] | list[CapturedStatement]) -> str:
    """Group statements by shape, repeated ones first with their counts, one line per shape.

    Args:
        statements: Captured statements (their SQL is already masked).

    Returns:
        Lines like ``SELECT name FROM users WHERE id = ? ran 3 times: N+1?``; the pool is named when there
        are several, and failures are counted. Empty when there are no statements.

    """
    groups: dict[tuple[str, str], list[CapturedStatement]] = {}
    for statement in statements:
        groups.setdefault((statement.pool, statement.sql), []).append(statement)
    several_pools = len({pool for pool, _ in groups}) > 1
    # sorted() is stable: equally repeated shapes keep the order they first ran in.
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    lines = []
    for (pool, sql), members in ordered:
        text = sql if len(sql) <= _MAX_LINE_SQL else f"{sql[:_MAX_LINE_SQL]}…"
        line = f"  {text} ran {len(members)} times: N+1?" if len(members) > 1 else f"  {text}"
        notes = []
        if several_pools:
            notes.append(f"pool {pool}")
        failed = sum(1 for member in members if member.failed)
        if failed:
            notes.append(f"{failed} failed")
        lines.append(f"{line} ({', '.join(notes)})" if notes else line)
    return "\n".join(lines)


# -- pytest plugin ------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, so ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(n): fail the test when its body runs more than n SQLSpec statements (sqlspec-ops)",
    )


@pytest.fixture
def sqlspec_queries() -> Generator[QueryCapture]:
    """Capture the statements run during the test (including those of fixtures set up after this one)."""
    with capture_queries() as capture:
        yield capture


def _marker_limit(marker: pytest.Mark) -> int:
    args = marker.args or (tuple(marker.kwargs.values()) if set(marker.kwargs) == {"n"} else ())
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int) or args[0] < 0:
        msg = f"use @pytest.mark.{_MARKER}(n) with one int n >= 0 (the most statements the test may run)"
        raise pytest.UsageError(msg)
    return args[0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Enforce ``@pytest.mark.max_queries(n)`` over the test's body."""
    marker = item.get_closest_marker(_MARKER)
    if marker is None:
        return (yield)
    limit = _marker_limit(marker)
    with capture_queries() as capture:
        result = yield
    failure = _budget_failure(capture.statements, limit, exact=False)
    if failure is not None:
        pytest.fail(f"@pytest.mark.{_MARKER}({limit}): {failure}", pytrace=False)
    return result
