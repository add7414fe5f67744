"""The connection budget in words: the report ``sqlspec-ops check`` prints and the startup warnings."""

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlspec_ops._budget_model import Limit, PoolDemand, ServerBudget
from sqlspec_ops._workers import WorkerCount

__all__ = ("log_warnings", "render")


def render(
    workers: WorkerCount,
    replicas: int,
    servers: Sequence[ServerBudget],
    embedded: Sequence[PoolDemand],
    unsupported: Sequence[str],
) -> str:
    """Render a readable report (what ``sqlspec-ops check`` prints)."""
    return "\n".join(_render_lines(workers, replicas, servers, embedded, unsupported))


def log_warnings(servers: Sequence[ServerBudget], log: logging.Logger, *, reported: Iterable[str] = ()) -> None:
    """Log one structured WARNING per oversubscribed server, per server whose min_size demand alone exceeds the
    budget, and per server whose limits could not be read (unless ``reported`` names it: startup has already
    warned that its database is unreachable).
    """  # noqa: D205 - the summary says it all; the wrap is for line length
    skip = set(reported)
    for server in servers:
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


def _render_lines(
    workers: WorkerCount,
    replicas: int,
    servers: Sequence[ServerBudget],
    embedded: Sequence[PoolDemand],
    unsupported: Sequence[str],
) -> Iterable[str]:
    processes = replicas * workers.count
    yield (
        f"connection budget: {_plural(replicas, 'replica')} x {_worker_text(workers)} "
        f"= {_plural(processes, 'process', 'processes')} holding each pool"
    )
    if workers.detail:
        yield f"  note: {workers.detail}"
    for server in servers:
        yield ""
        yield from _render_server(server, processes)
    for pool in embedded:
        yield ""
        yield f"{pool.target.label}: no server limit (pool {pool.name}, {pool.adapter}, max_size {pool.max_size})"
    for name in unsupported:
        yield ""
        yield f"{name}: not counted (sqlspec-ops does not support this adapter)"


def _render_server(server: ServerBudget, processes: int) -> Iterable[str]:
    yield f"{server.server}: {server.verdict.upper()}"
    for pool in server.pools:
        yield (
            f"  pool {pool.name} ({pool.adapter}, {pool.target.label}): "
            f"max_size {pool.max_size} ({pool.sizes.source('max')}), "
            f"min_size {pool.min_size} ({pool.sizes.source('min')})"
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
