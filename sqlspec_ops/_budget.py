"""Connection budget: check that every worker on every replica fits into what each database server allows.

Each worker process has its own pools and only sees itself, so the fleet's demand on a database server is

    demand = replicas x workers x sum(max_size of the pools pointing at that server)

and the server allows the app's role (PostgreSQL)

    budget = max_connections - superuser_reserved_connections - reserved_connections (PG16+)

tightened by the connection limits of the role (``rolconnlimit``) and database (``datconnlimit``) the pools
use, when those are set. The same sum over ``min_size`` says whether the deploy can even start: the
PostgreSQL drivers' pools open ``min_size`` connections when they open. Each adapter reads its server's limits its
own way (``Adapter.read_limits``); this module groups, judges and reports.

Usage::

    from sqlspec_ops import check_pool_budget

    report = check_pool_budget(spec, workers=4, replicas=3)  # reads the limits from the servers
    report = check_pool_budget(spec, workers=4, replicas=3, max_connections=100)  # no I/O
    print(report.render())
    report.oversubscribed  # True when some server would run out of connections

:func:`check_pool_budget` is synchronous and works whether or not an event loop runs in the calling thread
(the servers are queried on a short-lived thread with its own loop). ``SQLSpecOps`` calls
:func:`check_pool_budget_async` at startup, through the pools it just opened.
"""

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlspec_ops._adapters.base import ServerRead, failure_name
from sqlspec_ops._budget_model import PoolDemand, ScopedLimit, ServerBudget, ServerLimits, group_by_server, judge_server
from sqlspec_ops._budget_text import log_warnings, render
from sqlspec_ops._databases import Database, discover
from sqlspec_ops._metrics import OpsMetrics
from sqlspec_ops._options import check_max_connections, check_positive_int, check_seconds
from sqlspec_ops._workers import WorkerCount, detect_workers

__all__ = ("BudgetReport", "check_pool_budget", "check_pool_budget_async", "standalone_connection")

logger = logging.getLogger("sqlspec_ops.budget")

Borrow = Callable[[Database], AbstractAsyncContextManager[Any]]
_DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """The connection budget of every server the app's pools point at."""

    workers: WorkerCount
    replicas: int
    servers: tuple[ServerBudget, ...] = ()
    embedded: tuple[PoolDemand, ...] = ()
    unsupported: tuple[str, ...] = ()

    @property
    def oversubscribed(self) -> bool:
        """Whether any server's demand exceeds its budget."""
        return any(s.verdict == "oversubscribed" for s in self.servers)

    @property
    def errors(self) -> tuple[ServerBudget, ...]:
        """Servers whose limits could not be read."""
        return tuple(s for s in self.servers if s.verdict == "unknown")

    @property
    def exit_code(self) -> int:
        """0 within budget, 1 oversubscribed (a definite finding wins), 2 when some server could not be read."""
        if self.oversubscribed:
            return 1
        return 2 if self.errors else 0

    def verdicts(self) -> dict[str, dict[str, Any]]:
        """Return server → verdict JSON (``/ops/pools`` adds it to each pool of that server)."""
        return {s.server: s.as_json() for s in self.servers}

    def as_json(self) -> dict[str, Any]:
        """Render the whole report."""
        return {
            "oversubscribed": self.oversubscribed,
            "workers": self.workers.as_json(),
            "replicas": self.replicas,
            "servers": [s.as_json() for s in self.servers],
            "no_server_limit": [p.as_json() for p in self.embedded],
            "unsupported": list(self.unsupported),
        }

    def render(self) -> str:
        """Render a readable report (what ``sqlspec-ops check`` prints)."""
        return render(self.workers, self.replicas, self.servers, self.embedded, self.unsupported)

    def __str__(self) -> str:
        """Return the readable report."""
        return self.render()

    def log_warnings(self, log: logging.Logger = logger, *, reported: Iterable[str] = ()) -> None:
        """Log the startup warnings (oversubscribed, min_size too large, limits unknown unless ``reported``)."""
        log_warnings(self.servers, log, reported=reported)

    def publish(self, metrics: OpsMetrics) -> None:
        """Set ``sqlspec_ops_connection_budget``/``_demand{server}`` and ``sqlspec_ops_workers``."""
        metrics.workers.set(self.workers.count)
        for server in self.servers:
            metrics.connection_demand.labels(server.server).set(server.demand)
            budget = server.budget
            if budget is not None:
                metrics.connection_budget.labels(server.server).set(budget)


def build_report(
    pools: Sequence[PoolDemand],
    *,
    workers: WorkerCount,
    replicas: int,
    limits: Mapping[str, ServerLimits | str],
    unsupported: Sequence[str] = (),
) -> BudgetReport:
    """Judge every server's demand against its limits (pure computation).

    Args:
        pools: Every supported pool (embedded ones are listed as "no server limit").
        workers: Workers per replica and where that number came from.
        replicas: Replicas (hosts, pods) running the app.
        limits: Server → its limits, or why they are not known.
        unsupported: Configs that are not counted.

    Returns:
        The report.

    """
    servers = tuple(
        judge_server(server, grouped, workers=workers, replicas=replicas, limits=limits.get(server, "not read"))
        for server, grouped in group_by_server(pools).items()
    )
    embedded = tuple(p for p in pools if p.server is None)
    return BudgetReport(workers, replicas, servers, embedded, tuple(unsupported))


async def check_pool_budget_async(
    configs: Any,
    *,
    workers: int | None = None,
    replicas: int = 1,
    max_connections: int | None = None,
    timeout: float = _DEFAULT_TIMEOUT,  # noqa: ASYNC109 - bounds several concurrent reads as one
    borrow: Borrow | None = None,
    unread_reason: str | None = None,
) -> BudgetReport:
    """Build the budget report, reading the servers' limits unless ``max_connections`` is given.

    Args:
        configs: A ``SQLSpec``, an iterable of its configs, or the ``Database`` records ``SQLSpecOps`` keeps.
        workers: Workers per replica (None: detect, see :func:`sqlspec_ops._workers.detect_workers`).
        replicas: Replicas running the app (a worker cannot see the others).
        max_connections: Take this as every server's budget instead of reading the server (no I/O).
        timeout: Seconds reading the servers may take.
        borrow: How to get a connection per database (default: a standalone connection, no pool slot).
        unread_reason: Do no I/O and give every server this reason for an ``unknown`` verdict (startup ran out
            of time); the ``max_connections`` override still applies.

    Returns:
        The report; unreachable servers are reported in it, not raised.

    Raises:
        ValueError: On an invalid option.
        TypeError: If ``configs`` is none of the above.

    """
    check_positive_int("replicas", replicas)
    check_max_connections(max_connections)
    check_seconds("timeout", timeout)
    databases = _databases(configs)
    worker_count = detect_workers(workers)
    pools, unsupported = _demands(databases)
    servers = group_by_server(pools)
    limits: Mapping[str, ServerLimits | str]
    if max_connections is not None:
        override = ServerLimits(max_connections=max_connections, source="override")
        limits = dict.fromkeys(servers, override)
    elif unread_reason is not None:
        limits = dict.fromkeys(servers, unread_reason)
    else:
        served = [db for db in databases if db.adapter is not None and db.target.server is not None]
        limits = await _read_limits(served, timeout=timeout, borrow=borrow or standalone_connection)
    return build_report(pools, workers=worker_count, replicas=replicas, limits=limits, unsupported=unsupported)


def check_pool_budget(
    configs: Any,
    *,
    workers: int | None = None,
    replicas: int = 1,
    max_connections: int | None = None,
    timeout: float = _DEFAULT_TIMEOUT,
) -> BudgetReport:
    """Check whether replicas x workers x pool sizes fit into what each database server allows.

    Synchronous, and safe to call from inside a running event loop: when the servers have to be read, that
    happens on a short-lived thread with its own loop, over standalone connections (no pool is created).

    Args:
        configs: A ``SQLSpec`` or an iterable of its configs.
        workers: Workers per replica (None: the option order of :func:`sqlspec_ops._workers.detect_workers`).
        replicas: Replicas (hosts, pods) running the app.
        max_connections: Take this number as every server's budget as given (nothing is subtracted) and do no
            I/O; otherwise ``max_connections`` minus the reserved slots and the role/database connection limits
            are read from each server.
        timeout: Seconds reading the servers may take.

    Returns:
        The report (see :class:`BudgetReport`: ``oversubscribed``, ``render()``, ``as_json()``).

    Raises:
        ValueError: On an invalid option.
        TypeError: If ``configs`` is not a ``SQLSpec`` or an iterable of configs.

    """
    check_seconds("timeout", timeout)
    return _run_in_thread(
        lambda: check_pool_budget_async(
            configs, workers=workers, replicas=replicas, max_connections=max_connections, timeout=timeout
        ),
        timeout,
    )


@asynccontextmanager
async def standalone_connection(db: Database) -> AsyncIterator[Any]:
    """Open a connection of the config's own (no pool slot, no pool created), and close it afterwards."""
    connection = await db.config.create_connection()
    try:
        yield connection
    finally:
        try:
            if db.adapter is not None:
                await db.adapter.close_connection(connection)
        except Exception:
            logger.debug("closing the budget connection failed", exc_info=True)


# -- helpers -----------------------------------------------------------------------------------------


def _databases(configs: Any) -> list[Database]:
    if isinstance(configs, list | tuple) and configs and all(isinstance(c, Database) for c in configs):
        return list(configs)
    return discover(configs)


def _demands(databases: Sequence[Database]) -> tuple[list[PoolDemand], list[str]]:
    pools: list[PoolDemand] = []
    unsupported: list[str] = []
    for db in databases:
        sizes = db.sizes
        if sizes is None:
            unsupported.append(f"{db.name} ({db.target.adapter})")
        else:
            pools.append(PoolDemand(db.name, db.target, sizes))
    return pools, unsupported


async def _read_limits(
    databases: Sequence[Database],
    *,
    timeout: float,  # noqa: ASYNC109 - bounds several concurrent reads as one
    borrow: Borrow,
) -> dict[str, ServerLimits | str]:
    """Read every server's limits, one connection per config, concurrently, all within ``timeout``.

    Returns:
        Server → its limits, or the error class (never a message: driver messages can name users and hosts)
        when no connection to it worked.

    """

    async def read(db: Database) -> ServerRead:
        async with asyncio.timeout(timeout), borrow(db) as connection:
            if db.adapter is None:  # callers hand over supported configs only
                msg = f"unsupported config {type(db.config).__name__}"
                raise TypeError(msg)
            return await db.adapter.read_limits(connection)

    results = await asyncio.gather(*(read(db) for db in databases), return_exceptions=True)
    by_server: dict[str, list[tuple[Database, ServerRead | BaseException]]] = {}
    for db, result in zip(databases, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # cancellation and friends are not ours to swallow
        by_server.setdefault(db.target.server or "", []).append((db, result))
    limits: dict[str, ServerLimits | str] = {}
    for server, entries in by_server.items():
        reads = [(db, r) for db, r in entries if isinstance(r, ServerRead)]
        if not reads:
            limits[server] = _error_class(next(r for _, r in entries if isinstance(r, BaseException)), timeout)
        else:
            limits[server] = _server_limits(reads)
    return limits


def _server_limits(reads: Sequence[tuple[Database, ServerRead]]) -> ServerLimits:
    """Merge what each pool's connection read: the server's limits, plus every role and database limit."""
    scoped: dict[tuple[str, str], tuple[int, list[str]]] = {}
    for db, read in reads:
        for kind, name, value in (
            ("role", read.role, read.role_limit),
            ("database", read.database, read.database_limit),
        ):
            if name is not None and value is not None:
                scoped.setdefault((kind, name), (value, []))[1].append(db.name)
    first = reads[0][1]
    return ServerLimits(
        max_connections=first.max_connections,
        reserved=first.reserved,
        source="server",
        note=first.note,
        other_clients=max((read.other_clients or 0 for _, read in reads), default=0),
        scoped=tuple(
            ScopedLimit("role" if kind == "role" else "database", name, value, tuple(pools))
            for (kind, name), (value, pools) in scoped.items()
        ),
    )


def _error_class(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"TimeoutError: no answer within {timeout:g}s"
    return failure_name(exc)


def _run_in_thread(make: Callable[[], Coroutine[Any, Any, BudgetReport]], timeout: float) -> BudgetReport:
    """Run a coroutine on a fresh loop in a thread of its own (the caller's thread may already run a loop).

    A daemon thread rather than an executor: a server that accepts and never answers must not keep the
    interpreter from exiting (executor threads are joined at exit).
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(make())
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="sqlspec-ops-budget", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)  # the reads are bounded by ``timeout`` themselves; this is a safety net
    if "error" in outcome:
        raise outcome["error"]
    if "value" not in outcome:
        msg = f"reading the database servers' limits did not finish within {timeout + 5.0:.0f}s"
        raise TimeoutError(msg)
    report: BudgetReport = outcome["value"]
    return report
