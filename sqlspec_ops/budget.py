"""Connection budget: check that every worker on every replica fits into what PostgreSQL allows.

Each worker process has its own pools and only sees itself, so the fleet's demand on a database server is

    demand = replicas x workers x sum(max_size of the pools pointing at that server)

and the server allows non-superusers

    budget = max_connections - superuser_reserved_connections - reserved_connections (PG16+)

tightened by the connection limits of the role (``rolconnlimit``) and database (``datconnlimit``) the pools
use, when those are set. The same sum over ``min_size`` says whether the deploy can even start: asyncpg and
psycopg open ``min_size`` connections per pool when the pool opens.

Usage::

    from sqlspec_ops import check_pool_budget

    report = check_pool_budget(spec, workers=4, replicas=3)  # reads the limits from the servers
    report = check_pool_budget(spec, workers=4, replicas=3, max_connections=100)  # no I/O
    print(report.render())
    report.oversubscribed  # True when some server would run out of connections

:func:`check_pool_budget` is synchronous and works whether or not an event loop runs in the calling thread
(the servers are queried on a short-lived thread with its own loop). Async code uses
:func:`check_pool_budget_async`, which ``SQLSpecOps`` calls at startup through the open pools.
"""

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlspec_ops.adapters import adapter_for, describe_config, failure_name, named_configs
from sqlspec_ops.adapters_asyncmy import MySQLLimits
from sqlspec_ops.metrics import OpsMetrics
from sqlspec_ops.workers import WorkerCount, detect_workers

__all__ = (
    "BudgetReport",
    "Limit",
    "PoolDemand",
    "ServerBudget",
    "ServerLimits",
    "budget_without_limits",
    "build_report",
    "check_pool_budget",
    "check_pool_budget_async",
    "fetch_limits",
    "named_configs",
    "override_limits",
    "pool_demands",
    "standalone_connection",
)

logger = logging.getLogger("sqlspec_ops.budget")

Verdict = Literal["within budget", "oversubscribed", "unknown"]
Borrow = Callable[[Any], AbstractAsyncContextManager[Any]]

# One round trip; every value is read as text (``SHOW``/``current_setting`` return text) and parsed here.
# ``current_setting(name, true)`` gives NULL instead of an error for ``reserved_connections`` before PG16.
_LIMITS_SQL = """
SELECT current_setting('max_connections'),
       current_setting('superuser_reserved_connections'),
       current_setting('reserved_connections', true),
       current_setting('server_version_num'),
       current_user::text,
       (SELECT rolconnlimit FROM pg_catalog.pg_roles WHERE rolname = current_user)::text,
       current_database()::text,
       (SELECT datconnlimit FROM pg_catalog.pg_database WHERE datname = current_database())::text
"""

_DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PoolDemand:
    """One pool's share of the demand: its sizes and whether the config or the driver's default set them."""

    name: str
    adapter: str
    target: str
    server: str | None
    max_size: int
    min_size: int
    max_explicit: bool
    min_explicit: bool

    def as_json(self) -> dict[str, Any]:
        """Render for reports."""
        return {
            "name": self.name,
            "adapter": self.adapter,
            "target": self.target,
            "max_size": self.max_size,
            "max_size_from": "config" if self.max_explicit else "driver default",
            "min_size": self.min_size,
            "min_size_from": "config" if self.min_explicit else "driver default",
        }


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one server allows, as read from it (or the ``max_connections`` override)."""

    max_connections: int
    superuser_reserved_connections: int = 0
    reserved_connections: int = 0
    server_version_num: int | None = None
    source: Literal["server", "override"] = "server"
    # (kind, name, limit, names of the pools it applies to) for role/database limits that are set
    scoped: tuple[tuple[Literal["role", "database"], str, int, tuple[str, ...]], ...] = ()
    explanation: str | None = None  # how the adapter computed the capacity, when it is not PostgreSQL's way

    @property
    def capacity(self) -> int:
        """Connections non-superusers may open on the whole server."""
        return self.max_connections - self.superuser_reserved_connections - self.reserved_connections

    def explain(self) -> str:
        """Say how the capacity was computed."""
        if self.source == "override":
            return f"max_connections override {self.max_connections} (taken as the budget as given)"
        if self.explanation is not None:
            return self.explanation
        text = (
            f"max_connections {self.max_connections} - superuser_reserved_connections "
            f"{self.superuser_reserved_connections}"
        )
        if self.server_version_num is None or self.server_version_num >= 160000:  # noqa: PLR2004 - PG16
            text += f" - reserved_connections {self.reserved_connections}"
        return text


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit a server imposes (server-wide, per role, per database) and the demand it has to carry."""

    kind: Literal["server", "role", "database"]
    name: str
    limit: int
    pools: tuple[str, ...]
    demand: int
    min_demand: int
    fits_max_size: int

    @property
    def exceeded(self) -> bool:
        """Whether the demand is larger than the limit."""
        return self.demand > self.limit

    def as_json(self) -> dict[str, Any]:
        """Render for reports."""
        return {
            "kind": self.kind,
            "name": self.name,
            "limit": self.limit,
            "pools": list(self.pools),
            "demand": self.demand,
            "min_size_demand": self.min_demand,
            "exceeded": self.exceeded,
        }


@dataclass(frozen=True, slots=True)
class ServerBudget:
    """The verdict for one database server (``host:port``)."""

    server: str
    pools: tuple[PoolDemand, ...]
    workers: WorkerCount
    replicas: int
    limits: ServerLimits | None = None
    constraints: tuple[Limit, ...] = ()
    error: str | None = None

    @property
    def processes(self) -> int:
        """Worker processes in the fleet: replicas x workers."""
        return self.replicas * self.workers.count

    @property
    def demand(self) -> int:
        """Connections the fleet may open: replicas x workers x sum of max_size."""
        return self.processes * sum(p.max_size for p in self.pools)

    @property
    def min_demand(self) -> int:
        """Connections opening the pools takes: replicas x workers x sum of min_size."""
        return self.processes * sum(p.min_size for p in self.pools)

    @property
    def budget(self) -> int | None:
        """The tightest limit that covers every pool of this server (None when unknown)."""
        covering = [c.limit for c in self.constraints if len(c.pools) == len(self.pools)]
        return min(covering) if covering else None

    @property
    def verdict(self) -> Verdict:
        """``oversubscribed`` when any limit is exceeded, ``unknown`` when the limits could not be read."""
        if not self.constraints:
            return "unknown"
        return "oversubscribed" if any(c.exceeded for c in self.constraints) else "within budget"

    @property
    def min_exceeded(self) -> bool:
        """Whether opening the pools alone (their min_size) needs more than some limit allows."""
        return any(c.min_demand > c.limit for c in self.constraints)

    @property
    def fits_max_size(self) -> int | None:
        """The largest max_size every pool of this server can have (all equal) and fit; None if none fits."""
        if not self.constraints:
            return None
        fits = min(c.fits_max_size for c in self.constraints)
        return fits if fits >= 1 else None

    @property
    def fits_workers(self) -> int | None:
        """The most workers per replica that fit with the current pool sizes; None if not even one does."""
        if not self.constraints:
            return None
        per_worker = [
            (c.limit, self.replicas * sum(p.max_size for p in self.pools if p.name in c.pools))
            for c in self.constraints
        ]
        fits = min((limit // need for limit, need in per_worker if need > 0), default=None)
        return fits if fits is not None and fits >= 1 else None

    def as_json(self) -> dict[str, Any]:
        """Render the verdict (what ``/ops/pools`` shows next to each pool of this server)."""
        body: dict[str, Any] = {
            "server": self.server,
            "verdict": self.verdict,
            "pools": [p.name for p in self.pools],
            "workers": self.workers.as_json(),
            "replicas": self.replicas,
            "demand": self.demand,
            "min_size_demand": self.min_demand,
            "budget": self.budget,
            "max_size_that_fits": self.fits_max_size,
            "workers_that_fit": self.fits_workers,
        }
        if self.limits is not None:
            body["budget_from"] = self.limits.explain()
            body["limits"] = [c.as_json() for c in self.constraints]
        if self.min_exceeded:
            body["min_size_exceeds_budget"] = True
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """The connection budget of every server the app's pools point at."""

    workers: WorkerCount
    replicas: int
    servers: tuple[ServerBudget, ...] = ()
    embedded: tuple[PoolDemand, ...] = ()
    unsupported: tuple[str, ...] = field(default=())

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
        return "\n".join(_render_lines(self))

    def __str__(self) -> str:
        """Return the readable report."""
        return self.render()

    def log_warnings(self, log: logging.Logger = logger, *, reported: Iterable[str] = ()) -> None:
        """Log one structured WARNING per oversubscribed server, one per server whose min_size demand alone
        exceeds the budget, and one per server whose limits could not be read (unless ``reported`` names it:
        startup has already warned that its database is unreachable).
        """  # noqa: D205 - the summary says it all; the wrap is for line length
        skip = set(reported)
        for server in self.servers:
            if server.verdict == "unknown":
                if server.server in skip:
                    continue
                log.warning(
                    "connection budget of %s unknown: could not read its limits (%s); demand is %d connections",
                    server.server,
                    server.error,
                    server.demand,
                    extra={"extra_fields": _fields(server, error=server.error)},
                )
                continue
            if server.verdict == "oversubscribed":
                log.warning("%s", _oversubscribed_message(server), extra={"extra_fields": _fields(server)})
            if server.min_exceeded:
                log.warning("%s", _min_message(server), extra={"extra_fields": _fields(server, min_size=True)})

    def publish(self, metrics: OpsMetrics) -> None:
        """Set ``sqlspec_ops_connection_budget``/``_demand{server}`` and ``sqlspec_ops_workers``."""
        metrics.workers.set(self.workers.count)
        for server in self.servers:
            metrics.connection_demand.labels(server.server).set(server.demand)
            budget = server.budget
            if budget is not None:
                metrics.connection_budget.labels(server.server).set(budget)


# -- building blocks ----------------------------------------------------------------------------------


def pool_demands(
    named: Sequence[tuple[str, Any]],
) -> tuple[list[tuple[PoolDemand, Any]], list[PoolDemand], list[str]]:
    """Split configs into server pools (with their config), embedded pools and unsupported configs.

    Args:
        named: ``(name, config)`` pairs.

    Returns:
        Pools on a database server paired with their config, pools with no server (SQLite), and the
        names of configs whose adapter sqlspec-ops does not support (not counted).

    """
    served: list[tuple[PoolDemand, Any]] = []
    embedded: list[PoolDemand] = []
    unsupported: list[str] = []
    for name, config in named:
        adapter = adapter_for(config)
        target = describe_config(config)
        if adapter is None:
            unsupported.append(f"{name} ({target.adapter})")
            continue
        sizes = adapter.sizes(config)
        pool = PoolDemand(
            name=name,
            adapter=adapter.name,
            target=target.label,
            server=target.server,
            max_size=sizes.max_size,
            min_size=sizes.min_size,
            max_explicit=sizes.max_explicit,
            min_explicit=sizes.min_explicit,
        )
        if pool.server is None:
            embedded.append(pool)
        else:
            served.append((pool, config))
    return served, embedded, unsupported


def override_limits(served: Iterable[PoolDemand], max_connections: int) -> dict[str, ServerLimits | str]:
    """Give every server of ``served`` the ``max_connections`` override as its budget (no I/O).

    Args:
        served: Pools on database servers.
        max_connections: The budget to use for each server, as given.

    Returns:
        Server → limits, for :func:`build_report`.

    """
    limits = ServerLimits(max_connections=max_connections, source="override")
    return {pool.server: limits for pool in served if pool.server is not None}


@asynccontextmanager
async def standalone_connection(config: Any) -> AsyncIterator[Any]:
    """Open a connection of the config's own (no pool slot, no pool created), and close it afterwards."""
    connection = await config.create_connection()
    try:
        yield connection
    finally:
        try:
            closing = connection.close()
            if closing is not None:  # asyncmy's close() is synchronous
                await closing
        except Exception:
            logger.debug("closing the budget connection failed", exc_info=True)


@dataclass(frozen=True, slots=True)
class _Read:
    """What one config's connection saw."""

    server_wide: tuple[int, int, int, int | None]
    role: str
    role_limit: int
    database: str
    database_limit: int
    explanation: str | None = None


async def fetch_limits(
    served: Sequence[tuple[PoolDemand, Any]],
    *,
    timeout: float = _DEFAULT_TIMEOUT,  # noqa: ASYNC109 - bounds several concurrent reads as one
    borrow: Borrow = standalone_connection,
) -> dict[str, ServerLimits | str]:
    """Read every server's limits, one connection per config, concurrently, all within ``timeout``.

    Args:
        served: Pools on database servers with their configs (from :func:`pool_demands`).
        timeout: Seconds the whole read may take.
        borrow: How to get a connection for a config (default: a standalone one; startup borrows from the
            open pool instead, which costs no extra connection).

    Returns:
        Server → its limits, or the error class (never a message: driver messages can name users and hosts)
        when no connection to it worked.

    """

    async def read(config: Any) -> _Read:
        async with asyncio.timeout(timeout), borrow(config) as connection:
            adapter = adapter_for(config)
            if adapter is None:  # pool_demands() only hands over supported configs
                msg = f"unsupported config {type(config).__name__}"
                raise TypeError(msg)
            return await _read_limits(adapter, connection)

    results = await asyncio.gather(*(read(config) for _, config in served), return_exceptions=True)
    by_server: dict[str, list[tuple[PoolDemand, _Read | BaseException]]] = {}
    for (pool, _), result in zip(served, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # cancellation and friends are not ours to swallow
        by_server.setdefault(pool.server or "", []).append((pool, result))
    limits: dict[str, ServerLimits | str] = {}
    for server, entries in by_server.items():
        reads = [(pool, r) for pool, r in entries if isinstance(r, _Read)]
        if not reads:
            limits[server] = _error_class(next(r for _, r in entries if isinstance(r, BaseException)), timeout)
            continue
        mc, su, reserved, version = reads[0][1].server_wide
        scoped: dict[tuple[Literal["role", "database"], str], tuple[int, list[str]]] = {}
        for pool, r in reads:
            pairs: tuple[tuple[Literal["role", "database"], str, int], ...] = (
                ("role", r.role, r.role_limit),
                ("database", r.database, r.database_limit),
            )
            for kind, name, value in pairs:
                if value >= 0:  # -1: no limit
                    scoped.setdefault((kind, name), (value, []))[1].append(pool.name)
        limits[server] = ServerLimits(
            max_connections=mc,
            superuser_reserved_connections=su,
            reserved_connections=reserved,
            server_version_num=version,
            source="server",
            scoped=tuple((kind, name, value, tuple(pools)) for (kind, name), (value, pools) in scoped.items()),
            explanation=reads[0][1].explanation,
        )
    return limits


def build_report(
    served: Sequence[PoolDemand],
    *,
    workers: WorkerCount,
    replicas: int,
    limits: Mapping[str, ServerLimits | str],
    embedded: Sequence[PoolDemand] = (),
    unsupported: Sequence[str] = (),
) -> BudgetReport:
    """Judge every server's demand against its limits (pure computation).

    Args:
        served: Pools on database servers.
        workers: Workers per replica and where that number came from.
        replicas: Replicas (hosts, pods) running the app.
        limits: Server → its limits, or an error class when they could not be read.
        embedded: Pools with no server (listed as "no server limit").
        unsupported: Configs that are not counted.

    Returns:
        The report.

    """
    processes = replicas * workers.count
    servers: list[ServerBudget] = []
    by_server: dict[str, list[PoolDemand]] = {}
    for pool in served:
        by_server.setdefault(pool.server or "", []).append(pool)
    for server, pools in by_server.items():
        found = limits.get(server, "not read")
        if isinstance(found, str):
            servers.append(ServerBudget(server, tuple(pools), workers, replicas, error=found))
            continue
        scopes: list[tuple[Literal["server", "role", "database"], str, int, tuple[str, ...]]] = [
            ("server", server, found.capacity, tuple(p.name for p in pools))
        ]
        scopes += found.scoped
        constraints = tuple(
            _limit(kind=kind, name=name, value=value, names=names, pools=pools, processes=processes)
            for kind, name, value, names in scopes
        )
        servers.append(ServerBudget(server, tuple(pools), workers, replicas, limits=found, constraints=constraints))
    return BudgetReport(workers, replicas, tuple(servers), tuple(embedded), tuple(unsupported))


async def check_pool_budget_async(
    configs: Any,
    *,
    workers: int | None = None,
    replicas: int = 1,
    max_connections: int | None = None,
    timeout: float = _DEFAULT_TIMEOUT,  # noqa: ASYNC109 - bounds several concurrent reads as one
    borrow: Borrow = standalone_connection,
) -> BudgetReport:
    """Build the budget report, reading the servers' limits unless ``max_connections`` is given.

    Args:
        configs: A ``SQLSpec`` or an iterable of its configs.
        workers: Workers per replica (None: detect, see :func:`sqlspec_ops.workers.detect_workers`).
        replicas: Replicas running the app (a worker cannot see the others).
        max_connections: Take this as every server's budget instead of reading the server (no I/O).
        timeout: Seconds reading the servers may take.
        borrow: How to get a connection per config (default: a standalone connection).

    Returns:
        The report; unreachable servers are reported in it, not raised.

    """
    named, worker_count = _prepare(configs, workers, replicas, max_connections, timeout)
    demands = pool_demands(named)
    served = demands[0]
    if max_connections is not None:
        limits = override_limits([p for p, _ in served], max_connections)
    else:
        limits = await fetch_limits(served, timeout=timeout, borrow=borrow)
    return _judge(demands, worker_count, replicas, limits)


def budget_without_limits(
    named: Sequence[tuple[str, Any]],
    *,
    workers: int | None,
    replicas: int,
    max_connections: int | None,
    reason: str,
) -> BudgetReport:
    """Judge what needs no I/O (startup ran out of time before the servers' limits were read).

    Args:
        named: ``(name, config)`` pairs.
        workers: Workers per replica (None: detect).
        replicas: Replicas running the app.
        max_connections: The override, which needs no server; None leaves every verdict ``unknown``.
        reason: Why the limits were not read (shown as the error of ``unknown`` verdicts).

    Returns:
        The report (demand is always known).

    """
    demands = pool_demands(named)
    pools = [pool for pool, _ in demands[0]]
    limits: dict[str, ServerLimits | str] = (
        override_limits(pools, max_connections)
        if max_connections is not None
        else {pool.server: reason for pool in pools if pool.server is not None}
    )
    return _judge(demands, detect_workers(workers), replicas, limits)


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
        workers: Workers per replica (None: the option order of :func:`sqlspec_ops.workers.detect_workers`).
        replicas: Replicas (hosts, pods) running the app.
        max_connections: Take this number as every server's budget as given (nothing is subtracted) and do no
            I/O; otherwise ``max_connections - superuser_reserved_connections - reserved_connections`` and
            the role/database connection limits are read from each server.
        timeout: Seconds reading the servers may take.

    Returns:
        The report (see :class:`BudgetReport`: ``oversubscribed``, ``render()``, ``as_json()``).

    Raises:
        ValueError: On an invalid option.
        TypeError: If ``configs`` is not a ``SQLSpec`` or an iterable of configs.

    """
    named, worker_count = _prepare(configs, workers, replicas, max_connections, timeout)
    demands = pool_demands(named)
    served = demands[0]
    if max_connections is not None or not served:
        limits = override_limits([p for p, _ in served], max_connections) if max_connections is not None else {}
    else:
        limits = _run_in_thread(lambda: fetch_limits(served, timeout=timeout), timeout)
    return _judge(demands, worker_count, replicas, limits)


def _judge(
    demands: tuple[list[tuple[PoolDemand, Any]], list[PoolDemand], list[str]],
    workers: WorkerCount,
    replicas: int,
    limits: Mapping[str, ServerLimits | str],
) -> BudgetReport:
    served, embedded, unsupported = demands
    return build_report(
        [pool for pool, _ in served],
        workers=workers,
        replicas=replicas,
        limits=limits,
        embedded=embedded,
        unsupported=unsupported,
    )


# -- helpers -----------------------------------------------------------------------------------------


def _prepare(
    configs: Any, workers: int | None, replicas: int, max_connections: int | None, timeout: float
) -> tuple[list[tuple[str, Any]], WorkerCount]:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        msg = f"replicas must be a positive integer, got {replicas!r}"
        raise ValueError(msg)
    if max_connections is not None and (
        isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1
    ):
        msg = f"max_connections must be a positive integer or None (read it from the server), got {max_connections!r}"
        raise ValueError(msg)
    if timeout <= 0:
        msg = f"timeout must be a positive number of seconds, got {timeout!r}"
        raise ValueError(msg)
    return named_configs(configs), detect_workers(workers)


def _run_in_thread(make: Callable[[], Any], timeout: float) -> dict[str, ServerLimits | str]:
    """Run a coroutine on a fresh loop in a daemon thread (the caller's thread may already run a loop)."""
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
    result: dict[str, ServerLimits | str] = outcome["value"]
    return result


def _parse(row: Sequence[Any]) -> _Read:
    mc, su, reserved, version, role, role_limit, database, database_limit = row
    return _Read(
        server_wide=(int(mc), int(su), int(reserved) if reserved not in (None, "") else 0, int(version)),
        role=str(role),
        role_limit=int(role_limit) if role_limit is not None else -1,
        database=str(database),
        database_limit=int(database_limit) if database_limit is not None else -1,
    )


async def _read_limits(adapter: Any, connection: Any) -> _Read:
    read_limits = getattr(adapter, "read_limits", None)
    if read_limits is not None:  # MySQL: see AsyncmyAdapter.read_limits
        return _read_mysql(await read_limits(connection))
    return _parse(await adapter.fetch_row(connection, _LIMITS_SQL))


def _read_mysql(limits: MySQLLimits) -> _Read:
    """MySQL reserves nothing below max_connections; max_user_connections limits the account (the "role")."""
    account_limit = limits.account_limit
    return _Read(
        server_wide=(limits.max_connections, 0, 0, None),
        role=limits.account,
        role_limit=account_limit if account_limit is not None else -1,
        database="",
        database_limit=-1,
        explanation=limits.explain(),
    )


def _limit(
    *,
    kind: Literal["server", "role", "database"],
    name: str,
    value: int,
    names: tuple[str, ...],
    pools: Sequence[PoolDemand],
    processes: int,
) -> Limit:
    covered = [p for p in pools if p.name in names]
    return Limit(
        kind=kind,
        name=name,
        limit=value,
        pools=names,
        demand=processes * sum(p.max_size for p in covered),
        min_demand=processes * sum(p.min_size for p in covered),
        fits_max_size=max(0, value) // (processes * len(covered)) if covered else 0,
    )


def _error_class(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"TimeoutError: no answer within {timeout:g}s"
    return failure_name(exc)


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _sizes_text(pools: Sequence[PoolDemand], *, min_size: bool = False) -> str:
    """Say ``max_size 20 (pools primary 10 + analytics 10)`` or ``max_size 10 (pool primary)``."""
    key = "min_size" if min_size else "max_size"
    sizes = [(p.name, p.min_size if min_size else p.max_size) for p in pools]
    if len(sizes) == 1:
        return f"{key} {sizes[0][1]} (pool {sizes[0][0]})"
    parts = " + ".join(f"{name} {size}" for name, size in sizes)
    return f"{key} {sum(size for _, size in sizes)} (pools {parts})"


def _worker_text(workers: WorkerCount) -> str:
    return f"{_plural(workers.count, 'worker')} ({workers.source})"


def _fleet_text(server: ServerBudget) -> str:
    return f"{_plural(server.replicas, 'replica')} x {_worker_text(server.workers)}"


def _binding(server: ServerBudget, *, min_size: bool = False) -> Limit:
    """Pick the limit to quote: the most exceeded one (or the server's)."""
    demand: Callable[[Limit], int] = (lambda c: c.min_demand) if min_size else (lambda c: c.demand)
    return max(server.constraints, key=lambda c: demand(c) - c.limit)


def _limit_text(server: ServerBudget, limit: Limit) -> str:
    if limit.kind == "server" and server.limits is not None:  # constraints exist only with limits
        return server.limits.explain()
    return f"the connection limit of {limit.kind} {limit.name!r}"


def _oversubscribed_message(server: ServerBudget) -> str:
    limit = _binding(server)
    fits = server.fits_max_size
    advice = (
        f"set max_size to at most {fits} per pool"
        if fits is not None
        else "no max_size fits: run fewer workers or replicas"
    )
    workers = server.fits_workers
    if workers is not None and workers < server.workers.count:
        advice += f", or run at most {_plural(workers, 'worker')} per replica"
    covered = [p for p in server.pools if p.name in limit.pools]
    return (
        f"connection budget exceeded on {server.server}: demand {limit.demand} = {_fleet_text(server)} x "
        f"{_sizes_text(covered)} > budget {limit.limit} ({_limit_text(server, limit)}); {advice}"
    )


def _min_message(server: ServerBudget) -> str:
    limit = _binding(server, min_size=True)
    covered = [p for p in server.pools if p.name in limit.pools]
    fits = limit.limit // (server.processes * max(1, len(covered)))
    return (
        f"min_size demand on {server.server} exceeds the budget, the deploy will fail at startup (every worker "
        f"opens min_size connections per pool): {limit.min_demand} = {_fleet_text(server)} x "
        f"{_sizes_text(covered, min_size=True)} > budget {limit.limit} ({_limit_text(server, limit)}); "
        f"set min_size to at most {fits} per pool"
    )


def _fields(server: ServerBudget, *, min_size: bool = False, error: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "server": server.server,
        "pools": [p.name for p in server.pools],
        "replicas": server.replicas,
        "workers": server.workers.count,
        "workers_source": server.workers.source,
        "demand": server.demand,
        "min_size_demand": server.min_demand,
        "budget": server.budget,
    }
    if error is not None:
        fields["error_type"] = error
        return fields
    limit = _binding(server, min_size=min_size)
    fields["limit_kind"] = limit.kind
    fields["limit"] = limit.limit
    if min_size:
        fields["deploy_fails_at_startup"] = True
    else:
        fields["suggested_max_size"] = server.fits_max_size
        fields["workers_that_fit"] = server.fits_workers
    return fields


def _render_lines(report: BudgetReport) -> Iterable[str]:
    processes = report.replicas * report.workers.count
    yield (
        f"connection budget: {_plural(report.replicas, 'replica')} x {_worker_text(report.workers)} "
        f"= {_plural(processes, 'process', 'processes')} holding each pool"
    )
    if report.workers.detail:
        yield f"  note: {report.workers.detail}"
    for server in report.servers:
        yield ""
        yield from _render_server(server, processes)
    for pool in report.embedded:
        yield ""
        yield f"{pool.target}: no server limit (pool {pool.name}, {pool.adapter}, max_size {pool.max_size})"
    for name in report.unsupported:
        yield ""
        yield f"{name}: not counted (sqlspec-ops does not support this adapter)"


def _render_server(server: ServerBudget, processes: int) -> Iterable[str]:
    yield f"{server.server}: {server.verdict.upper()}"
    for pool in server.pools:
        yield (
            f"  pool {pool.name} ({pool.adapter}, {pool.target}): "
            f"max_size {pool.max_size} ({'config' if pool.max_explicit else 'driver default'}), "
            f"min_size {pool.min_size} ({'config' if pool.min_explicit else 'driver default'})"
        )
    total_max = sum(p.max_size for p in server.pools)
    total_min = sum(p.min_size for p in server.pools)
    yield f"  demand:   {server.demand} = {processes} x {total_max} (sum of max_size)"
    yield f"  min_size: {server.min_demand} = {processes} x {total_min} (sum of min_size: opened at startup)"
    limits = server.limits
    if limits is None:
        yield f"  budget:   unknown: could not read the server's limits ({server.error})"
        return
    yield f"  budget:   {server.budget} = {limits.explain()}"
    for limit in server.constraints:
        if limit.kind != "server":
            yield (
                f"  limit:    {limit.kind} {limit.name!r} allows {limit.limit} "
                f"(demand {limit.demand} from pools {', '.join(limit.pools)})"
            )
    fits = server.fits_max_size
    yield f"  max_size that fits per pool: {fits if fits is not None else 'none (run fewer workers or replicas)'}"
    if server.verdict == "oversubscribed":
        yield f"  -> {_oversubscribed_message(server)}"
    if server.min_exceeded:
        yield f"  -> {_min_message(server)}"
