"""Prometheus metric families, multiprocess mode and exposition.

Names follow the OpenTelemetry database semantic conventions translated to Prometheus
(``db.client.connection.count`` → ``db_client_connection_count``, units become suffixes). Nothing is
registered at import time: :func:`metrics_for` creates the families on a registry the first time it is
asked and hands the same families back afterwards, so several ``SQLSpecOps`` objects can share one registry.

Under several workers (``PROMETHEUS_MULTIPROC_DIR`` set before the process starts) prometheus_client writes
every value to per-process files and :func:`render` merges them, so a scrape of any worker returns the
totals of all live workers. Custom collectors do not work in that mode, which is why pool state is pushed
into gauges when it changes instead of being read at scrape time. Gauges use the ``live*`` modes and a
worker's files are dropped when it exits (or found dead by the next worker that starts).
"""

import contextlib
import os
import re
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.openmetrics import exposition as openmetrics

__all__ = (
    "CREATE_TIME_BUCKETS",
    "HELD_IDLE_BUCKETS",
    "LOOP_LAG_BUCKETS",
    "OPERATION_BUCKETS",
    "POOL_LABEL",
    "POOL_TIME_BUCKETS",
    "OpsMetrics",
    "metrics_for",
    "multiprocess_dir",
    "multiprocess_mode",
    "reap_dead_workers",
    "release_worker",
    "render",
)

POOL_LABEL = "db_client_connection_pool_name"
# Advisory boundaries of the stable ``db.client.operation.duration`` convention.
OPERATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
# The connection-time conventions give no boundaries. These resolve a healthy pool (sub-millisecond acquires)
# and a starving one (waits of whole hold times, up to a driver's 30 s timeout), with 50 ms steps between
# 0.1 s and 0.3 s, where waits of a saturated web pool cluster: histogram_quantile() interpolates linearly
# inside a bucket, so coarse buckets there would turn a 200 ms median into a 250-350 ms estimate.
POOL_TIME_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

# Held-but-idle time is labelled by route, so it has a child per route and pool: boundaries only where an
# operator's question changes, from gaps between statements (milliseconds) through "a request awaited something
# else while holding it" (seconds) to an LLM or HTTP call made under a held connection (tens of seconds, minutes).
# Ten buckets instead of the pool-time set's 23 keep /ops/metrics of an app with many routes small.
HELD_IDLE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)
# Opening a connection: a millisecond on loopback to seconds over TLS across regions or through a busy proxy.
CREATE_TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Event-loop lag from "fine" (1 ms) to "the worker is stuck" (5 s), dense where a blocking call starts to hurt.
LOOP_LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip

_by_registry: "weakref.WeakKeyDictionary[CollectorRegistry, OpsMetrics]" = weakref.WeakKeyDictionary()


class OpsMetrics:
    """Every family sqlspec-ops exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create and register the families.

        Args:
            registry: Where the families are registered.

        """
        pool = (POOL_LABEL,)
        self.connection_count = Gauge(
            "db_client_connection_count",
            "Connections currently open in the pool, by state (idle or used).",
            (*pool, "db_client_connection_state"),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.connection_max = Gauge(
            "db_client_connection_max",
            "Maximum number of connections the pool may open.",
            pool,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.connection_idle_min = Gauge(
            "db_client_connection_idle_min",
            "Minimum number of connections the pool keeps open.",
            pool,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pending_requests = Gauge(
            "db_client_connection_pending_requests",
            "Callers currently waiting for a connection from the pool.",
            pool,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.timeouts = Counter(
            "db_client_connection_timeouts",
            "Connection acquires that timed out.",
            pool,
            registry=registry,
        )
        self.wait_time = Histogram(
            "db_client_connection_wait_time_seconds",
            "Time it took to obtain a connection from the pool.",
            pool,
            registry=registry,
            buckets=POOL_TIME_BUCKETS,
        )
        self.use_time = Histogram(
            "db_client_connection_use_time_seconds",
            "Time between borrowing a connection and returning it to the pool.",
            pool,
            registry=registry,
            buckets=POOL_TIME_BUCKETS,
        )
        self.operation_duration = Histogram(
            "db_client_operation_duration_seconds",
            "Duration of database client operations (failed ones included, with error_type).",
            ("db_system_name", "db_operation_name", POOL_LABEL, "error_type"),
            registry=registry,
            buckets=OPERATION_BUCKETS,
        )
        self.connection_budget = Gauge(
            "sqlspec_ops_connection_budget",
            "Connections the database server allows this app (max_connections minus reserved slots).",
            ("server",),
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.connection_demand = Gauge(
            "sqlspec_ops_connection_demand",
            "Connections this app may open on the server: replicas x workers x sum of pool max sizes.",
            ("server",),
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.workers = Gauge(
            "sqlspec_ops_workers",
            "Worker processes per replica, as detected (or configured) at startup.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.database_up = Gauge(
            "sqlspec_ops_database_up",
            "Result of the last readiness ping of the database (1 reachable, 0 not).",
            pool,
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.connection_create_time = Histogram(
            "db_client_connection_create_time_seconds",
            "Time it took to create a new connection.",
            pool,
            registry=registry,
            buckets=CREATE_TIME_BUCKETS,
        )
        self.connection_leaks = Counter(
            "sqlspec_ops_connection_leaks",
            "Connections held longer than leak_threshold.",
            pool,
            registry=registry,
        )
        self.held_idle_time = Histogram(
            "sqlspec_ops_connection_held_idle_seconds",
            "Time a connection was held without running a statement (hold time minus statement time).",
            (*pool, "http_route"),
            registry=registry,
            buckets=HELD_IDLE_BUCKETS,
        )
        self.event_loop_lag = Histogram(
            "sqlspec_ops_event_loop_lag_seconds",
            "How late the event loop ran a sampling callback.",
            registry=registry,
            buckets=LOOP_LAG_BUCKETS,
        )
        # The server's view is one server-wide fact that every worker reads: the latest reading wins, never a sum.
        self.server_connections = Gauge(
            "sqlspec_ops_server_connections",
            "This app's backends on the database server, by state (pg_stat_activity).",
            (*pool, "state"),
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.server_other_connections = Gauge(
            "sqlspec_ops_server_other_connections",
            "Backends of other clients on the database server (pg_stat_activity).",
            pool,
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.server_oldest_transaction = Gauge(
            "sqlspec_ops_server_oldest_transaction_seconds",
            "Age of the oldest open transaction of this app on the database server.",
            pool,
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.server_lock_waits = Gauge(
            "sqlspec_ops_server_lock_waits",
            "This app's backends waiting on a lock on the database server.",
            pool,
            registry=registry,
            multiprocess_mode="livemostrecent",
        )


def metrics_for(registry: CollectorRegistry | None = None) -> OpsMetrics:
    """Return the families registered on ``registry`` (prometheus_client's global one by default).

    Args:
        registry: Target registry; created families are reused on later calls.

    Returns:
        The shared :class:`OpsMetrics` of that registry.

    """
    registry = REGISTRY if registry is None else registry
    metrics = _by_registry.get(registry)
    if metrics is None:
        metrics = _by_registry[registry] = OpsMetrics(registry)
    return metrics


def multiprocess_dir() -> str | None:
    """Return the multiprocess directory when prometheus_client runs in multiprocess mode, else None.

    The mode is fixed when prometheus_client is imported (it picks file-backed values if the variable is set
    then), so a variable set later is ignored here too: rendering files nobody writes would show nothing.
    """
    if not multiprocess_mode():
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112 - prometheus_client's legacy name


def multiprocess_mode() -> bool:
    """Tell whether prometheus_client writes metric values to per-process files (``PROMETHEUS_MULTIPROC_DIR``)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def render(registry: CollectorRegistry | None, accept: str | None) -> tuple[bytes, str]:
    """Render the exposition a scraper asked for (OpenMetrics when its ``Accept`` header says so).

    Args:
        registry: The registry to render in single-process mode (global one by default).
        accept: The scraper's ``Accept`` header.

    Returns:
        The body and its content type.

    """
    path = multiprocess_dir()
    if path is not None:
        source = CollectorRegistry()
        MultiProcessCollector(source, path=path)  # type: ignore[no-untyped-call]
    else:
        source = REGISTRY if registry is None else registry
    encoder, content_type = choose_encoder(accept or "")
    fast = _fast_openmetrics(encoder)
    if fast is not None:
        body = fast(source)
        # Only names outside the legacy character set are written quoted ({"name"... or ,"label"=...); quotes
        # inside label values and help texts are escaped, so these byte pairs cannot come from them.
        if b'{"' not in body and b',"' not in body:
            return body, content_type
    return encoder(source), content_type


def _fast_openmetrics(encoder: Callable[[CollectorRegistry], bytes]) -> Callable[[CollectorRegistry], bytes] | None:
    """Return the OpenMetrics encoder with ``allow-utf-8`` escaping when the scraper got ``underscores``.

    prometheus_client escapes every sample name character by character in its default ``underscores`` mode
    (about 40 % of a render with 8 pools). For names in the legacy character set, which is all of ours,
    both modes write the same bytes; :func:`render` falls back to the negotiated mode when a registry holds
    a name that would differ.
    """
    if not isinstance(encoder, partial) or encoder.func is not openmetrics.generate_latest:
        return None
    if encoder.keywords.get("escaping") != openmetrics.UNDERSCORES:
        return None
    return partial(encoder.func, *encoder.args, **{**encoder.keywords, "escaping": openmetrics.ALLOWUTF8})


_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def reap_dead_workers() -> list[int]:
    """Drop the live-gauge files of workers that are gone (crashed without cleaning up).

    Uvicorn has no ``child_exit`` hook to call ``mark_process_dead`` from, so every worker does it for
    its dead siblings when it starts.

    Returns:
        The PIDs whose files were removed.

    """
    path = multiprocess_dir()
    if path is None:
        return []
    dead: set[int] = set()
    for entry in Path(path).glob("gauge_live*.db"):
        match = _LIVE_FILE.fullmatch(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not _alive(pid):
            dead.add(pid)
    for pid in dead:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return sorted(dead)


def release_worker() -> None:
    """Remove this worker's live gauges at shutdown so the totals stop counting it."""
    path = multiprocess_dir()
    if path is not None:
        with contextlib.suppress(OSError):
            mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
