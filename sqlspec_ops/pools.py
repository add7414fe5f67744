"""A delegating pool proxy that measures what SQLSpec's hooks cannot: acquire waits, holds, waiters, timeouts.

SQLSpec fires no hook before a connection is acquired and never passes an acquire timeout to asyncpg, so
sqlspec-ops installs :class:`InstrumentedPool` as the config's ``connection_instance``. Every path a session
takes goes through it: ``spec.provide_session(config)``, ``config.provide_session()``,
``config.provide_connection()`` and the FastAPI plugin's per-request connection. Everything else
(``close``, ``get_size``, ``get_stats``...) is delegated to the driver's pool, which stays untouched: no
driver class is patched.

The proxy opens the driver's pool lazily, the first time a connection is needed (or at application startup),
so installing it never does I/O and reading its statistics never creates a pool.

In one process the connection gauges read the driver's pool when scraped, so borrowing a connection costs two
``perf_counter()`` calls, a histogram observation and a dict entry. Under ``PROMETHEUS_MULTIPROC_DIR`` a
scrape reads the workers' files instead, so each borrow and return also writes the pool's counts there.
"""

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from time import perf_counter
from types import TracebackType
from typing import Any

from sqlspec_ops.adapters import Adapter, PoolSizes, PoolTarget
from sqlspec_ops.metrics import OpsMetrics, multiprocess_mode

__all__ = ("InstrumentedPool", "PoolAcquireTimeout", "PoolSnapshot")

logger = logging.getLogger("sqlspec_ops.pools")

_RECENT = 1024  # acquires kept for /ops/pools percentiles (per worker)


class PoolAcquireTimeout(TimeoutError):  # noqa: N818 - reads as what happened, like asyncio.TimeoutError
    """No connection became free within the acquire timeout."""


class PoolSnapshot:
    """A point-in-time view of one pool, for ``/ops/pools``."""

    __slots__ = ("acquires", "holds", "idle", "open", "pending", "size", "timeouts", "used", "waits")

    def __init__(self, pool: "InstrumentedPool") -> None:
        """Capture the pool's counters and its recent samples."""
        self.open = pool.is_open
        self.size, self.idle = pool.read()
        self.used = self.size - self.idle
        self.pending = pool.pending
        self.timeouts = pool.timeouts
        self.acquires = pool.acquires
        self.waits = sorted(pool.recent_waits)
        self.holds = sorted(pool.recent_holds)


class _Acquire:
    """What ``pool.acquire()`` returns: awaitable (SQLSpec's use) and an async context manager (asyncpg's)."""

    __slots__ = ("_args", "_connection", "_kwargs", "_pool")

    def __init__(self, pool: "InstrumentedPool", args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._pool = pool
        self._args = args
        self._kwargs = kwargs
        self._connection: Any = None

    def __await__(self) -> Any:
        return self._pool._acquire(self._args, self._kwargs).__await__()  # noqa: SLF001

    async def __aenter__(self) -> Any:
        self._connection = await self._pool._acquire(self._args, self._kwargs)  # noqa: SLF001
        return self._connection

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.release(connection)


class _Closing:
    """What ``InstrumentedPool.close()`` returns: closes the driver's pool when first awaited, once."""

    __slots__ = ("_adapter", "_pool")

    def __init__(self, adapter: Adapter, pool: Any) -> None:
        self._adapter = adapter
        self._pool = pool

    def __await__(self) -> Generator[Any, None, None]:
        return self._close().__await__()

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._adapter.close(pool)


class InstrumentedPool:
    """Stands in for a driver's pool and records every borrow of a connection."""

    def __init__(
        self,
        config: Any,
        adapter: Adapter,
        *,
        name: str,
        target: PoolTarget,
        metrics: OpsMetrics,
        acquire_timeout: float | None = None,
        inner: Any = None,
    ) -> None:
        """Build a proxy around an existing driver pool, or around none yet (opened on first use).

        Args:
            config: The SQLSpec config the pool belongs to.
            adapter: Adapter support for the config.
            name: The pool's name in metrics (``bind_key`` or ``host:port/database``).
            target: Where the pool points (shown in errors and ``/ops/pools``).
            metrics: The metric families to record into.
            acquire_timeout: Seconds an acquire may wait before failing with :class:`PoolAcquireTimeout`.
            inner: An already created driver pool to wrap.

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
        self._borrowed: dict[int, float] = {}
        self._inner: Any = None
        self._open_lock: asyncio.Lock | None = None
        self._closing: _Closing | None = None
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
            self._idle_gauge.set_function(lambda: self.read()[1])
            self._used_gauge.set_function(self._used_now)
            self._pending_gauge.set_function(lambda: self.pending)
            self._publish_sizes()
        if inner is not None:
            self.wrap(inner)

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
                # adapter's own factory is called; the lifecycle runtime is notified like SQLSpec does.
                pool = await self.config._create_pool()  # noqa: SLF001
                await self.config.get_observability_runtime().emit_pool_create_async(pool)
                self.wrap(pool)
        return self._inner

    def close(self) -> "_Closing":
        """Close the driver's pool (SQLSpec's ``close_pool`` calls this): await the result.

        SQLSpec's asyncmy config closes in asyncmy's two steps instead, ``close()`` then ``await wait_closed()``,
        which finishes the same close.
        """
        pool, self._inner = self._inner, None
        self._borrowed.clear()
        self._publish_counts(0, 0)
        self._closing = _Closing(self.adapter, pool)
        return self._closing

    async def wait_closed(self) -> None:
        """Finish a ``close()`` nobody awaited (asyncmy's two-step close)."""
        closing, self._closing = self._closing, None
        if closing is not None:
            await closing

    def reattach(self) -> None:
        """Stand in as the config's pool again after SQLSpec's ``close_pool()`` let go of the proxy.

        ``close_pool()`` (``close_all_pools()``, the FastAPI plugin's shutdown, an app recycling its pools) sets
        ``connection_instance`` to None, and the next session then creates a driver pool SQLSpec keeps to
        itself, unobserved. The readiness ping calls this: a driver pool created meanwhile is adopted (no second
        pool is opened), otherwise the proxy is put back and opens a pool when next needed. No I/O.
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

    @property
    def is_closed(self) -> bool:
        """Mirror of SQLSpec's aiosqlite pool attribute, used by its ``close_pool``."""
        return self._inner is None or bool(getattr(self._inner, "is_closed", False))

    def __getattr__(self, name: str) -> Any:
        """Delegate everything else (``get_size``, ``get_stats``, ``expire_connections``...) to the driver pool."""
        inner = self.__dict__.get("_inner")
        if inner is None:
            msg = f"pool {self.__dict__.get('name')!r} is not open yet; attribute {name!r} is unavailable"
            raise AttributeError(msg)
        return getattr(inner, name)

    # -- statistics -----------------------------------------------------------------------------------

    def read(self) -> tuple[int, int]:
        """Return ``(open, idle)`` connections; zeros while the pool is not open or cannot be read."""
        inner = self._inner
        if inner is None:
            return 0, 0
        try:
            return self.adapter.read(inner)
        except Exception:
            logger.debug("reading pool %s failed", self.name, exc_info=True)
            return 0, 0

    def publish(self) -> None:
        """Write the pool's connection counts into the gauges (multiprocess mode; otherwise read at scrape)."""
        if self._push:
            size, idle = self.read()
            self._publish_counts(size, idle)

    def _publish_counts(self, size: int, idle: int) -> None:
        if self._push:
            self._idle_gauge.set(idle)
            self._used_gauge.set(size - idle)

    def _publish_sizes(self) -> None:
        self._max_gauge.set(self.sizes.max_size)
        self._min_gauge.set(self.sizes.min_size)

    def _used_now(self) -> int:
        size, idle = self.read()
        return size - idle

    def snapshot(self) -> PoolSnapshot:
        """Return the pool's state and recent samples."""
        return PoolSnapshot(self)

    # -- borrowing ------------------------------------------------------------------------------------

    def acquire(self, *args: Any, **kwargs: Any) -> _Acquire:
        """Borrow a connection (asyncpg and aiosqlite style); await it or use it with ``async with``."""
        return _Acquire(self, args, kwargs)

    async def release(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        """Give a connection back and record how long it was held."""
        started = self._borrowed.pop(id(connection), None)
        inner = self._inner
        try:
            if inner is not None:
                await inner.release(connection, *args, **kwargs)
        finally:
            if started is not None:
                held = perf_counter() - started
                self._use.observe(held)
                self.recent_holds.append(held)
            if self._push:
                self.publish()

    async def _acquire(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        inner = self._inner if self._inner is not None else await self.open()
        timeout = kwargs.pop("timeout", None) if self.adapter.name == "asyncpg" else None
        timeout = self.acquire_timeout if timeout is None else timeout
        started = self._start_wait()
        try:
            if timeout is None:
                connection = await inner.acquire(*args, **kwargs)
            else:
                async with asyncio.timeout(timeout):
                    connection = await inner.acquire(*args, **kwargs)
        except BaseException as exc:
            self._end_wait(started, failed=exc)
            raise
        now = self._end_wait(started)
        self._borrowed[id(connection)] = now
        if self._push:
            self.publish()
        return connection

    @asynccontextmanager
    async def connection(self, timeout: float | None = None, **kwargs: Any) -> AsyncIterator[Any]:  # noqa: ASYNC109 - psycopg_pool's signature
        """Borrow a connection psycopg-style (``async with pool.connection() as conn``)."""
        inner = self._inner if self._inner is not None else await self.open()
        timeout = self.acquire_timeout if timeout is None else timeout
        context = inner.connection(timeout=timeout, **kwargs) if timeout is not None else inner.connection(**kwargs)
        started = self._start_wait()
        try:
            connection = await context.__aenter__()
        except BaseException as exc:
            self._end_wait(started, failed=exc)
            raise
        borrowed = self._end_wait(started)
        if self._push:
            self.publish()
        try:
            yield connection
        except BaseException as exc:
            await self._return_context(context, borrowed, exc)
            raise
        else:
            await self._return_context(context, borrowed, None)

    async def _return_context(self, context: Any, borrowed: float, exc: BaseException | None) -> None:
        try:
            await context.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
        finally:
            held = perf_counter() - borrowed
            self._use.observe(held)
            self.recent_holds.append(held)
            if self._push:
                self.publish()

    @asynccontextmanager
    async def get_connection(self) -> AsyncIterator[Any]:
        """Borrow a connection the way SQLSpec's aiosqlite ``provide_connection`` does."""
        pooled = await self._acquire((), {})
        try:
            yield pooled.connection
        finally:
            await self.release(pooled)

    def _start_wait(self) -> float:
        self.pending += 1
        if self._push:
            self._pending_gauge.inc()
        return perf_counter()

    def _end_wait(self, started: float, failed: BaseException | None = None) -> float:
        now = perf_counter()
        self.pending -= 1
        if self._push:
            self._pending_gauge.dec()
        if failed is None:
            waited = now - started
            self.acquires += 1
            self._wait.observe(waited)
            self.recent_waits.append(waited)
        elif self.adapter.acquire_timeout_error(failed):
            self.timeouts += 1
            self._timeouts_counter.inc()
            raise self._timeout_error(now - started) from failed
        return now

    def _timeout_error(self, waited: float) -> PoolAcquireTimeout:
        size, idle = self.read()
        return PoolAcquireTimeout(
            f"timed out after {waited:.3f}s waiting for a connection from pool {self.name!r} "
            f"({self.adapter.name}, max_size={self.sizes.max_size}, {size - idle} in use, "
            f"{self.pending} other callers waiting). Raise max_size, hold connections for less time, "
            "or raise acquire_timeout."
        )
