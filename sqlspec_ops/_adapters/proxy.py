"""A delegating pool proxy that measures what SQLSpec's hooks cannot: acquire waits, holds, waiters, timeouts.

SQLSpec fires no hook before a connection is acquired and passes no acquire timeout to some drivers, so
sqlspec-ops installs a proxy as the config's ``connection_instance``. Every path a session takes goes through it:
``spec.provide_session(config)``, ``config.provide_session()``, ``config.provide_connection()`` and the FastAPI
plugin's per-request connection. Everything else (``close``, ``get_size``, ``get_stats``...) is delegated to the
driver's pool, which stays untouched: no driver class is patched.

:class:`InstrumentedPool` is the recorder every driver shares (opening, waits, holds, counts, gauges). SQLSpec
borrows from each driver's pool with that driver's own API, so each adapter module subclasses it with that API;
:class:`AcquireReleasePool` is the ``acquire()``/``release()`` style several drivers share.

In one process the connection gauges read the pool when scraped, so a borrow and its return cost three
``perf_counter()`` calls, three histogram observations (wait, use and held-but-idle time), a holder record and a
dict entry, and no coroutine of the proxy stays in the await chain while the driver takes the connection back.
Under ``PROMETHEUS_MULTIPROC_DIR`` a scrape reads the workers' files instead, so each borrow and return also writes
the pool's counts there.
"""

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Awaitable
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlspec_ops._adapters.base import Adapter, PoolCounts, PoolSizes, PoolTarget
from sqlspec_ops._context import request_tally_var
from sqlspec_ops._holders import LIBRARY_PACKAGES, Holder, active_holder, user_frames
from sqlspec_ops._loop_lag import recent_max_ms
from sqlspec_ops._metrics import OpsMetrics, multiprocess_mode

if TYPE_CHECKING:
    from sqlspec_ops._statements import StatementTelemetry

__all__ = ("AcquireReleasePool", "InstrumentedPool", "PoolAcquireTimeout", "PoolSnapshot")

logger = logging.getLogger("sqlspec_ops.pools")

_RECENT = 1024  # acquires kept for /ops/pools percentiles (per worker)
_NO_COUNTS = PoolCounts(open=0, idle=0)
_MAX_HOLDERS_SHOWN = 50


class PoolAcquireTimeout(TimeoutError):  # noqa: N818 - reads as what happened, like asyncio.TimeoutError
    """No connection became free within the acquire timeout."""


PoolAcquireTimeout.__module__ = "sqlspec_ops"  # public through the package root; tracebacks say so


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """A point-in-time view of one pool, for ``/ops/pools``."""

    open: bool
    used: int
    idle: int
    pending: int
    timeouts: int
    acquires: int
    waits: tuple[float, ...]
    holds: tuple[float, ...]
    opening: int = 0
    """Connections the driver counts but has neither ready nor handed out: being made, retried, checked, reset."""

    @property
    def size(self) -> int:
        """Connections open in the pool (handed out or idle)."""
        return self.used + self.idle


class InstrumentedPool:
    """Stands in for a driver's pool and records every borrow of a connection."""

    # The telemetry the driver itself times statements into while a connection is out (None: SQLSpec's hooks do
    # it); set by ``SQLSpecOps.install`` once ``Adapter.time_statements`` made the connections time them.
    statements: "StatementTelemetry | None" = None

    def __init__(
        self,
        config: Any,
        adapter: Adapter,
        *,
        name: str,
        target: PoolTarget,
        metrics: OpsMetrics,
        acquire_timeout: float | None = None,
        leak_threshold: float | None = None,
    ) -> None:
        """Build a proxy for a config whose driver pool is opened on first use (or adopted, see ``reattach``).

        Args:
            config: The SQLSpec config the pool belongs to.
            adapter: Adapter support for the config.
            name: The pool's name in metrics (``bind_key`` or ``host:port/database``).
            target: Where the pool points (shown in errors and ``/ops/pools``).
            metrics: The metric families to record into.
            acquire_timeout: Seconds an acquire may wait before failing with :class:`PoolAcquireTimeout`.
            leak_threshold: Seconds a connection may be held before :meth:`sweep_leaks` reports it (None: off;
                the acquiring stack is captured only when set).

        """
        self.config = config
        self.adapter = adapter
        self.name = name
        self.target = target
        self.acquire_timeout = acquire_timeout
        self.sizes: PoolSizes = adapter.sizes(config)
        self.pending = 0
        self.timeouts = 0
        self.acquires = 0
        self.recent_waits: deque[float] = deque(maxlen=_RECENT)
        self.recent_holds: deque[float] = deque(maxlen=_RECENT)
        self.leak_threshold = leak_threshold
        self._library = LIBRARY_PACKAGES | adapter.library_packages
        # What the connections announce as application_name, and the server's last view of this app.
        self.application_name: str | None = None
        self.server_view: dict[str, Any] | None = None
        # Connections handed out right now: key (id of the connection or its context) -> who holds it.
        self._held: dict[int, Holder] = {}
        # perf_counter() of the last connection that came back: readiness's evidence that a saturated pool moves.
        self.last_release: float | None = None
        # The innermost connection of this pool the current context holds (the statement hooks read it).
        self.current_holder: ContextVar[Holder | None] = ContextVar(f"sqlspec_ops_holder_{name}", default=None)
        self._held_idle = metrics.held_idle_time
        self._held_idle_children: dict[str, Any] = {}
        self._leaks = metrics.connection_leaks.labels(name) if leak_threshold is not None else None
        self.leaks = 0
        self._inner: Any = None
        self._open_lock: asyncio.Lock | None = None
        self._pending_gauge = metrics.pending_requests.labels(name)
        self._timeouts_counter = metrics.timeouts.labels(name)
        self._wait = metrics.wait_time.labels(name)
        self._use = metrics.use_time.labels(name)
        self._idle_gauge = metrics.connection_count.labels(name, "idle")
        self._used_gauge = metrics.connection_count.labels(name, "used")
        self._max_gauge = metrics.connection_max.labels(name)
        self._min_gauge = metrics.connection_idle_min.labels(name)
        # In one process the gauges read the pool when scraped, so borrowing does no gauge work. Under
        # several workers a scrape reads files, so every worker writes its pool's state when it changes;
        # nothing is written before the pool opens, so a master process that imports the app and forks
        # (gunicorn --preload) leaves no live values of its own to be added to its workers'.
        self._push = multiprocess_mode()
        if not self._push:
            self._idle_gauge.set_function(self.idle)
            self._used_gauge.set_function(self.used)
            self._pending_gauge.set_function(lambda: self.pending)
            self._publish_sizes()

    # -- the driver pool --------------------------------------------------------------------------------

    @property
    def inner(self) -> Any:
        """The driver's pool, or None while it is not open."""
        return self._inner

    @property
    def is_open(self) -> bool:
        """Whether the driver's pool exists."""
        return self._inner is not None

    def wrap(self, pool: Any) -> None:
        """Adopt a driver pool that was created elsewhere (by SQLSpec or the app)."""
        self._inner = pool
        self._publish_sizes()
        self.publish()

    async def open(self) -> Any:
        """Create the driver's pool if needed, the way SQLSpec does (its pool-create hooks fire).

        Returns:
            The driver's pool.

        """
        if self._inner is not None:
            return self._inner
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._inner is None:
                # SQLSpec's public create_pool() returns connection_instance, which is this proxy, so the
                # adapter's own factory (SQLSpec's subclass hook) is called; the lifecycle runtime is notified
                # the way create_pool() does it. Pinned by sqlspec<0.70 and tests/test_pools.py.
                pool = await self.config._create_pool()  # noqa: SLF001
                await self.config.get_observability_runtime().emit_pool_create_async(pool)
                self.wrap(pool)
        return self._inner

    async def close(self) -> None:
        """Close the driver's pool (SQLSpec's ``close_pool`` calls this)."""
        pool, self._inner = self._inner, None
        self._forget_holders()
        self.publish()
        if pool is not None:
            await self.adapter.close(pool)

    def reattach(self) -> None:
        """Stand in as the config's pool again after SQLSpec's ``close_pool()`` let go of the proxy.

        ``close_pool()`` (``close_all_pools()``, the FastAPI plugin's shutdown, an app recycling its pools) sets
        ``connection_instance`` to None, and the next session then creates a driver pool SQLSpec keeps to
        itself, unobserved. A driver pool created meanwhile is adopted (no second pool is opened), otherwise the
        proxy is put back and opens a pool when next needed. No I/O.
        """
        config = self.config
        current = config.connection_instance
        if current is self or isinstance(current, InstrumentedPool):
            return
        if current is not None:
            if self._inner is not None and self._inner is not current:
                return  # the app swapped pools behind our back while ours is open: leave both alone
            self.wrap(current)
        config.connection_instance = self

    def __getattr__(self, name: str) -> Any:
        """Delegate everything else (``get_size``, ``get_stats``, ``expire_connections``...) to the driver pool."""
        inner = self.__dict__.get("_inner")
        if inner is None:
            msg = f"pool {self.__dict__.get('name')!r} is not open yet; attribute {name!r} is unavailable"
            raise AttributeError(msg)
        return getattr(inner, name)

    # -- statistics -----------------------------------------------------------------------------------

    def used(self) -> int:
        """Return the connections handed out right now (given out by the proxy and not yet returned)."""
        return len(self._held)

    def idle(self) -> int:
        """Return the connections the driver's pool holds ready (zero while it is not open or cannot be read)."""
        return self._counts().idle

    def _counts(self) -> PoolCounts:
        inner = self._inner
        if inner is None:
            return _NO_COUNTS
        try:
            return self.adapter.counts(inner)
        except Exception:
            logger.debug("reading pool %s failed", self.name, exc_info=True)
            return _NO_COUNTS

    def publish(self) -> None:
        """Write the pool's connection counts into the gauges (multiprocess mode; otherwise read at scrape)."""
        if self._push:
            self._idle_gauge.set(self.idle())
            self._used_gauge.set(len(self._held))

    def _forget_holders(self) -> None:
        """Forget every holder: the pool is being closed, its connections are gone whoever held them."""
        for holder in self._held.values():
            holder.released = True
        self._held.clear()

    def _publish_sizes(self) -> None:
        self._max_gauge.set(self.sizes.max_size)
        self._min_gauge.set(self.sizes.min_size)

    def snapshot(self) -> PoolSnapshot:
        """Return the pool's state and recent samples (the driver's counts are read once)."""
        counts = self._counts()
        used = len(self._held)
        return PoolSnapshot(
            open=self.is_open,
            used=used,
            idle=counts.idle,
            opening=max(0, counts.open - counts.idle - used),
            pending=self.pending,
            timeouts=self.timeouts,
            acquires=self.acquires,
            waits=tuple(sorted(self.recent_waits)),
            holds=tuple(sorted(self.recent_holds)),
        )

    # -- bookkeeping shared by every borrow API -------------------------------------------------------

    def _begin_wait(self) -> float:
        self.pending += 1
        if self._push:
            self._pending_gauge.inc()
        return perf_counter()

    def _acquired(self, key: int, started: float, connection: Any) -> Holder:
        """Record a successful acquire of ``connection`` under ``key`` (its id, or its context's); return its hold."""
        now = perf_counter()
        self.pending -= 1
        waited = now - started
        self.acquires += 1
        self._wait.observe(waited)
        self.recent_waits.append(waited)
        var = self.current_holder
        previous = var.get()
        if previous is not None and previous.released:  # rare: an outer borrow of this pool came back first
            previous = active_holder(var)
        holder = Holder(
            connection,
            now,
            request_tally_var.get(),
            previous,
            user_frames(self._library) if self.leak_threshold is not None else None,
        )
        self._held[key] = holder
        var.set(holder)
        if self._push:
            self._pending_gauge.dec()
            self.publish()
        return holder

    def _acquire_failed(self, exc: BaseException, started: float) -> PoolAcquireTimeout | None:
        """Record a failed acquire; return the error to raise instead when it was a timeout."""
        self._end_pending()
        if not self.adapter.acquire_timeout_error(exc):
            return None
        self.timeouts += 1
        self._timeouts_counter.inc()
        return self._timeout_error(perf_counter() - started)

    def _released(self, key: int) -> None:
        """Record that the connection (or context) ``key`` came back."""
        holder = self._held.pop(key, None)
        if holder is not None:
            holder.released = True
            now = perf_counter()
            self.last_release = now
            if holder.started:  # a statement was cut off (cancelled, timed out): no SQLSpec hook saw its end
                holder.telemetry.cancelled(holder, sys.exc_info()[1], now)
            held = now - holder.acquired
            self._use.observe(held)
            self.recent_holds.append(held)
            route = holder.label_route
            child = self._held_idle_children.get(route)
            if child is None:
                child = self._held_idle_children[route] = self._held_idle.labels(self.name, route)
            child.observe(max(0.0, held - holder.db_time))
            if holder.leaked:
                self._log_returned(holder, held)
        if self._push:
            self.publish()

    def _returned(self) -> None:
        """Write the counts once the driver has the connection back (its idle count changed only now)."""
        if self._push:
            self.publish()

    # -- holders and leaks ------------------------------------------------------------------------------

    def holders(self) -> list[dict[str, Any]]:
        """Return who holds this pool's connections now, oldest first (at most 50), for ``/ops/pools``."""
        now = perf_counter()
        held = sorted(self._held.values(), key=lambda h: h.acquired)[:_MAX_HOLDERS_SHOWN]
        return [self._describe(holder, now) for holder in held]

    def _describe(self, holder: Holder, now: float) -> dict[str, Any]:
        current = None
        if holder.started and holder.telemetry is not None:
            current = holder.telemetry.summary(holder)
        return {
            "request_id": holder.request_id,
            "route": holder.route,
            "held_ms": round(holder.held(now) * 1000, 3),
            "state": self._state(holder),
            "statements": holder.statements,
            "db_time_ms": round(holder.db_time * 1000, 3),
            "current_statement": current,
            "acquired_at": holder.acquired_at,
        }

    def _state(self, holder: Holder) -> str:
        if holder.started:
            return "executing"
        try:
            in_transaction = self.adapter.transaction_state(holder.connection)
        except Exception:  # a connection closed under its holder has no state to read
            logger.debug("reading the transaction state of a %s connection failed", self.name, exc_info=True)
            in_transaction = None
        return "idle in transaction" if in_transaction else "idle"

    def sweep_leaks(self, *, event_loop_lag_ms: float | None = None) -> int:
        """Report each connection held longer than ``leak_threshold`` once (WARNING and counter).

        Returns:
            How many connections were newly reported.

        """
        threshold = self.leak_threshold
        if threshold is None or self._leaks is None:
            return 0
        now = perf_counter()
        found = 0
        for holder in list(self._held.values()):
            if holder.leaked or now - holder.acquired < threshold:
                continue
            holder.leaked = True
            found += 1
            self.leaks += 1
            self._leaks.inc()
            # The loop's recent lag goes with it: a blocked loop also keeps connections out longer.
            lag_ms = event_loop_lag_ms if event_loop_lag_ms is not None else recent_max_ms()
            self._log_leak(holder, now - holder.acquired, threshold, lag_ms)
        return found

    def _log_leak(self, holder: Holder, held: float, threshold: float, lag_ms: float | None) -> None:
        stack = holder.stack_lines()
        state = self._state(holder)
        fields: dict[str, Any] = {
            "pool": self.name,
            "request_id": holder.request_id,
            "route": holder.route,
            "held_s": round(held, 3),
            "state": state,
            "stack": stack,
        }
        if lag_ms is not None:
            fields["event_loop_lag_ms"] = lag_ms
        logger.warning(
            "connection leak suspected: pool %s connection held for %.1f s (leak_threshold %g s) by %s "
            "(request %s), %s; acquired at %s",
            self.name,
            held,
            threshold,
            holder.route,
            holder.request_id or "-",
            state,
            stack[0] if stack else "an unknown location",
            extra={"extra_fields": fields},
        )

    def _log_returned(self, holder: Holder, held: float) -> None:
        logger.info(
            "previously reported connection returned: pool %s connection came back after %.1f s (%s, request %s)",
            self.name,
            held,
            holder.route,
            holder.request_id or "-",
            extra={
                "extra_fields": {
                    "pool": self.name,
                    "request_id": holder.request_id,
                    "route": holder.route,
                    "held_s": round(held, 3),
                }
            },
        )

    def _end_pending(self) -> None:
        self.pending -= 1
        if self._push:
            self._pending_gauge.dec()

    def _timeout_error(self, waited: float) -> PoolAcquireTimeout:
        lag = recent_max_ms()
        # A blocked event loop makes every wait look long: say how late the loop has recently run.
        lag_text = "" if lag is None else f", event-loop lag recently up to {lag:.0f} ms"
        return PoolAcquireTimeout(
            f"timed out after {waited:.3f}s waiting for a connection from pool {self.name!r} "
            f"({self.adapter.name}, max_size={self.sizes.max_size}, {len(self._held)} in use, "
            f"{self.pending} other callers waiting{lag_text}). Raise max_size, hold connections for less time, "
            "or raise acquire_timeout."
        )

    def _timeout_for(self, requested: float | None) -> float | None:
        return self.acquire_timeout if requested is None else requested


async def _nothing() -> None:
    """Do nothing: what a release awaits once the pool was closed."""


class _Acquire:
    """What ``pool.acquire()`` returns: awaitable (SQLSpec's use) and an async context manager."""

    __slots__ = ("_connection", "_pool", "_timeout")

    def __init__(self, pool: "AcquireReleasePool", timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._connection: Any = None

    def __await__(self) -> Any:
        return self._pool._acquire(self._timeout).__await__()  # noqa: SLF001

    async def __aenter__(self) -> Any:
        self._connection = await self._pool._acquire(self._timeout)  # noqa: SLF001
        return self._connection

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.release(connection)


class AcquireReleasePool(InstrumentedPool):
    """The ``connection = await pool.acquire()`` / ``await pool.release(connection)`` borrow style."""

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        """Borrow a connection; await it or use it with ``async with``.

        Args:
            timeout: Seconds to wait for a free connection (asyncpg's keyword; default: ``acquire_timeout``).
                The proxy bounds the wait itself, so every driver honours it.

        """
        return _Acquire(self, timeout)

    def release(self, connection: Any, *args: Any, **kwargs: Any) -> Awaitable[None]:
        """Give a connection back and record how long it was held (await the result, as the driver's own).

        In one process the bookkeeping is done before the driver gets the connection back and the driver's own
        awaitable is handed back, so no coroutine of the proxy sits in the await chain while the driver resets
        the connection; under several workers the counts are written again once the driver has it back.
        """
        if self.statements is not None:
            self._disarm(connection)  # the driver's reset on release is not one of the app's statements
        # Counted as returned before the driver gets it back: the driver may hand it to a waiter at once.
        self._released(id(connection))
        inner = self._inner
        if inner is None:
            return _nothing()
        if self._push:
            return self._release_and_publish(inner, connection, args, kwargs)
        return inner.release(connection, *args, **kwargs)  # type: ignore[no-any-return]

    async def _release_and_publish(
        self, inner: Any, connection: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            await inner.release(connection, *args, **kwargs)
        finally:
            self._returned()

    def _arm(self, connection: Any, holder: Holder) -> None:
        """Start timing statements on a connection just handed out (drivers that time statements override)."""

    def _disarm(self, connection: Any) -> None:
        """Stop timing statements on a connection about to go back (drivers that time statements override)."""

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 - the caller's acquire timeout
        inner = self._inner if self._inner is not None else await self.open()
        if timeout is None:
            timeout = self.acquire_timeout
        started = self._begin_wait()
        try:
            if timeout is None:
                connection = await inner.acquire()
            else:
                async with asyncio.timeout(timeout):
                    connection = await inner.acquire()
        except BaseException as exc:
            timed_out = self._acquire_failed(exc, started)
            if timed_out is not None:
                raise timed_out from exc
            raise
        holder = self._acquired(id(connection), started, connection)
        if self.statements is not None:
            self._arm(connection, holder)
        return connection
