"""Event-loop lag: how late the loop runs a callback that was due, sampled by one timer per worker.

A blocked event loop (a synchronous call in a handler, CPU-bound work) inflates every acquire wait and hold time
sqlspec-ops measures, and an operator would read it as a slow database. Every ``interval`` seconds one timer
callback (``loop.call_at``, no task, nothing per request) notes how late it ran into
``sqlspec_ops_event_loop_lag_seconds`` and into a recent maximum, which ``/ops/pools`` (``event_loop_lag_ms``),
the pool-timeout message and the leak warning quote through :func:`recent_max_ms`.

A block is seen by the first timer due during it: one longer than ``interval`` is measured to within
``interval``, a shorter one may be under-measured by up to its own length.
"""

import asyncio
import logging
from typing import Any

__all__ = ("LoopLagSampler", "recent_max_ms")

logger = logging.getLogger("sqlspec_ops")

_WINDOW = 30.0  # seconds: the recent maximum covers the last one to two windows

# The samplers running in this worker (one per SQLSpecOps that started; usually exactly one).
_running: "list[LoopLagSampler]" = []


def recent_max_ms() -> float | None:
    """Return the largest event-loop lag of the last 30 to 60 seconds in this worker, in ms (None when not sampled)."""
    return max((sampler.recent_max_ms() for sampler in _running), default=None)


class LoopLagSampler:
    """One self-rescheduling timer on the running loop; observations go into a histogram."""

    def __init__(self, histogram: Any, *, interval: float) -> None:
        """Configure the sampler (nothing runs before :meth:`start`).

        Args:
            histogram: The ``sqlspec_ops_event_loop_lag_seconds`` histogram (anything with ``observe``).
            interval: Seconds between samples.

        """
        self._histogram = histogram
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        # Two windows of maxima: the current one and the one before, so the recent maximum never drops to 0
        # the instant a window turns over.
        self._window_start = 0.0
        self._current_max = 0.0
        self._previous_max = 0.0
        self.samples = 0

    def start(self) -> None:
        """Start sampling on the running loop; this worker's :func:`recent_max_ms` reads this sampler."""
        if self._handle is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._window_start = loop.time()
        self._schedule(loop.time())
        _running.append(self)

    def stop(self) -> None:
        """Cancel the timer; :func:`recent_max_ms` stops reading this sampler."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        if self in _running:
            _running.remove(self)

    def recent_max_ms(self) -> float:
        """Return the largest lag of the current and the previous window, in milliseconds."""
        return round(max(self._current_max, self._previous_max) * 1000, 3)

    def _schedule(self, now: float) -> None:
        loop = self._loop
        if loop is None:
            return
        self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        loop = self._loop
        if loop is None or self._handle is None:
            return
        now = loop.time()
        lag = max(0.0, now - self._due)  # the loop may run a timer up to its clock resolution early
        try:
            self._histogram.observe(lag)
        except Exception:
            logger.debug("recording event-loop lag failed", exc_info=True)
        self.samples += 1
        if now - self._window_start >= _WINDOW:
            self._previous_max, self._current_max = self._current_max, 0.0
            self._window_start = now
        self._current_max = max(self._current_max, lag)
        self._schedule(now)
