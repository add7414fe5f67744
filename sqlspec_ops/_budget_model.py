"""The connection-budget model: pools' demand, servers' limits and the verdict per server (pure computation)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlspec_ops._adapters.base import PoolSizes, PoolTarget
from sqlspec_ops._workers import WorkerCount

__all__ = (
    "Limit",
    "PoolDemand",
    "ScopedLimit",
    "ServerBudget",
    "ServerLimits",
    "Verdict",
    "group_by_server",
    "judge_server",
)

Verdict = Literal["within budget", "oversubscribed", "unknown"]
LimitKind = Literal["server", "role", "database"]


@dataclass(frozen=True, slots=True)
class PoolDemand:
    """One pool's share of the demand: where it points and its sizes."""

    name: str
    target: PoolTarget
    sizes: PoolSizes

    @property
    def adapter(self) -> str:
        """The pool's adapter name."""
        return self.target.adapter

    @property
    def server(self) -> str | None:
        """``host:port`` of the server (None for embedded databases)."""
        return self.target.server

    @property
    def max_size(self) -> int:
        """The pool's max size."""
        return self.sizes.max_size

    @property
    def min_size(self) -> int:
        """The pool's min size."""
        return self.sizes.min_size

    def as_json(self) -> dict[str, Any]:
        """Render for reports."""
        return {
            "name": self.name,
            "adapter": self.adapter,
            "target": self.target.label,
            "max_size": self.max_size,
            "max_size_from": self.sizes.source("max"),
            "min_size": self.min_size,
            "min_size_from": self.sizes.source("min"),
        }


@dataclass(frozen=True, slots=True)
class ScopedLimit:
    """A connection limit of one role or one database, and the pools it applies to."""

    kind: Literal["role", "database"]
    name: str
    limit: int
    pools: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one server allows, as read from it (or the ``max_connections`` override)."""

    max_connections: int
    reserved: tuple[tuple[str, int], ...] = ()
    """Slots kept for superusers and the like, by setting name: subtracted from ``max_connections``."""
    source: Literal["server", "override"] = "server"
    scoped: tuple[ScopedLimit, ...] = ()
    note: str | None = None
    """What the adapter adds to the explanation (MySQL: how its extra admin connection is counted)."""
    other_clients: int = 0
    """Other clients' connections the server showed when the limits were read: they use the same slots."""

    @property
    def capacity(self) -> int:
        """Connections the app's role may open on the whole server (after other clients' connections)."""
        return self.max_connections - sum(value for _, value in self.reserved) - self.other_clients

    def explain(self) -> str:
        """Say how the capacity was computed."""
        if self.source == "override":
            return f"max_connections override {self.max_connections} (taken as the budget as given)"
        parts = [f"max_connections {self.max_connections}", *(f"{k} {v}" for k, v in self.reserved)]
        if self.other_clients:
            parts.append(f"other clients' connections {self.other_clients} (seen in pg_stat_activity)")
        text = " - ".join(parts)
        return f"{text}; {self.note}" if self.note else text


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit a server imposes (server-wide, per role, per database) and the demand it has to carry."""

    kind: LimitKind
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


def judge_server(
    server: str,
    pools: Sequence[PoolDemand],
    *,
    workers: WorkerCount,
    replicas: int,
    limits: ServerLimits | str,
) -> ServerBudget:
    """Judge one server's demand against its limits, or record why they are unknown (``limits`` is a reason).

    Args:
        server: ``host:port``.
        pools: The pools pointing at it.
        workers: Workers per replica and where that number came from.
        replicas: Replicas (hosts, pods) running the app.
        limits: What the server allows, or why that is not known.

    Returns:
        The server's verdict.

    """
    if isinstance(limits, str):
        return ServerBudget(server, tuple(pools), workers, replicas, error=limits)
    processes = replicas * workers.count
    scopes: list[tuple[LimitKind, str, int, tuple[str, ...]]] = [
        ("server", server, limits.capacity, tuple(p.name for p in pools))
    ]
    scopes += [(s.kind, s.name, s.limit, s.pools) for s in limits.scoped]
    constraints = tuple(
        _limit(kind, name, value, [p for p in pools if p.name in names], names, processes)
        for kind, name, value, names in scopes
    )
    return ServerBudget(server, tuple(pools), workers, replicas, limits=limits, constraints=constraints)


def _limit(  # noqa: PLR0917 - private, called once
    kind: LimitKind, name: str, value: int, covered: Sequence[PoolDemand], names: tuple[str, ...], processes: int
) -> Limit:
    return Limit(
        kind=kind,
        name=name,
        limit=value,
        pools=names,
        demand=processes * sum(p.max_size for p in covered),
        min_demand=processes * sum(p.min_size for p in covered),
        fits_max_size=max(0, value) // (processes * len(covered)) if covered else 0,
    )


def group_by_server(pools: Sequence[PoolDemand]) -> Mapping[str, list[PoolDemand]]:
    """Group pools on database servers by ``host:port`` (embedded pools are left out)."""
    grouped: dict[str, list[PoolDemand]] = {}
    for pool in pools:
        if pool.server is not None:
            grouped.setdefault(pool.server, []).append(pool)
    return grouped
