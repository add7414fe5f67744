"""Per-statement telemetry: duration metric, spans, request tally, holds, captures, slow log.

Two paths feed the same recording (:meth:`StatementTelemetry.begin` and :meth:`StatementTelemetry.finish`): a
driver's own extension point where the adapter has one (``Adapter.times_statements``, see ``_adapters/``),
which leaves SQLSpec on its idle execution path, and otherwise SQLSpec's lifecycle hooks, described below.

SQLSpec's statement observers only see successful statements; failures reach only the ``on_error`` hook. So
sqlspec-ops registers three hooks per config: ``on_query_start`` notes the time (and starts the span),
``on_query_complete`` and ``on_error`` close the measurement. Hooks run synchronously in the caller's task,
so the start is kept in a context variable and the request's span is the parent of the statement span.

The hot path does no I/O and takes no lock beyond prometheus_client's own: two context-variable writes, one
histogram observation on a pre-bound label child, and (when tracing) one span whose name and attributes come
from a per-statement cache, so no SQL is parsed or masked per statement. ``benchmarks/statement_overhead.py``
measures it.
"""

import logging
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

from sqlspec.observability import ObservabilityConfig

from sqlspec_ops._adapters.base import Adapter, PoolTarget, error_details
from sqlspec_ops._capture import active as _captures
from sqlspec_ops._capture import record as _capture
from sqlspec_ops._holders import Holder, active_holder
from sqlspec_ops._metrics import OpsMetrics
from sqlspec_ops._requests import current_tally
from sqlspec_ops._sql import cache_key, shape_of
from sqlspec_ops._tracing import REQUEST_ID_ATTRIBUTE, fail_span, span_name_and_attributes

if TYPE_CHECKING:
    from contextvars import ContextVar as _ContextVar

    from opentelemetry.trace import Tracer
    from sqlspec.config import LifecycleConfig

__all__ = ("StatementTelemetry",)

logger = logging.getLogger("sqlspec_ops.queries")

# (start time, span or None, holder or None) of the statement running in this task; hooks of one statement run
# in one task.
_Started = tuple[float, Any, Holder | None]
_statement: ContextVar[_Started | None] = ContextVar("sqlspec_ops_statement", default=None)
_CANCELLED = "CancelledError"
_SHAPE_CACHE_SIZE = 4096


class StatementTelemetry:
    """The lifecycle hooks of one config."""

    def __init__(
        self,
        *,
        pool_name: str,
        target: PoolTarget,
        adapter: Adapter,
        metrics: OpsMetrics,
        slow_query_threshold: float | None = None,
    ) -> None:
        """Prepare the hooks (spans start once :meth:`bind_tracer` gives a tracer).

        Args:
            pool_name: The pool label value.
            target: Where the config points (span attributes).
            adapter: The config's adapter (knows its driver's error codes).
            metrics: Metric families.
            slow_query_threshold: Seconds after which a statement is logged as slow; None disables.

        """
        self.pool_name = pool_name
        self.target = target
        self.adapter = adapter
        self.slow_query_threshold = slow_query_threshold
        self._tracer: Tracer | None = None
        self._client_kind: Any = None
        self._histogram = metrics.operation_duration
        # Pre-bound label children: observing one costs no label lookup. Keyed by operation (successes) and
        # by (operation, error type) (failures), which are small closed sets.
        self._ok: dict[str, Any] = {}
        self._failed: dict[tuple[str, str], Any] = {}
        self._spans: dict[str, tuple[str, dict[str, Any]]] = {}
        # The pool proxy's "current holder" variable (set when the proxy is installed): statements are counted
        # into the hold of the connection they run on.
        self.holders: _ContextVar[Holder | None] | None = None

    def bind_tracer(self, tracer: "Tracer | None") -> None:
        """Start spans with this tracer (None: no spans).

        Called at startup rather than at construction: the app may install the global tracer provider after it
        built ``SQLSpecOps`` (in its lifespan, or through ``opentelemetry-instrument``).
        """
        if tracer is not None and self._client_kind is None:
            from opentelemetry.trace import SpanKind  # noqa: PLC0415 - `import sqlspec_ops` stays free of OTel

            self._client_kind = SpanKind.CLIENT
        self._tracer = tracer

    def observability_config(self) -> ObservabilityConfig:
        """Return the hooks as an ``ObservabilityConfig`` to merge into the SQLSpec config's own."""
        hooks = {
            "on_query_start": [self.on_query_start],
            "on_query_complete": [self.on_query_complete],
            "on_error": [self.on_error],
        }
        # SQLSpec's LifecycleConfig types the query hooks with several arguments; at run time every hook
        # receives one context dict (sqlspec.observability._dispatcher).
        return ObservabilityConfig(lifecycle=cast("LifecycleConfig", hooks))

    # -- hooks ----------------------------------------------------------------------------------------

    def on_query_start(self, context: dict[str, Any]) -> None:
        """Note when the statement started; start its span (a child of the current one)."""
        holders = self.holders
        _statement.set(
            self.begin(
                context.get("sql") or "",
                context.get("operation") or "UNKNOWN",
                context.get("correlation_id"),
                active_holder(holders) if holders is not None else None,
            )
        )

    def on_query_complete(self, context: dict[str, Any]) -> None:
        """Record a successful statement."""
        started = _statement.get()
        if started is None:
            return
        _statement.set(None)
        self.finish(
            started,
            context.get("operation") or "UNKNOWN",
            context.get("sql") or "",
            context.get("correlation_id"),
            failed=False,
        )

    def on_error(self, context: dict[str, Any]) -> None:
        """Record a failed statement with its error type (and the database's own code on the span)."""
        started = _statement.get()
        if started is None:
            return
        _statement.set(None)
        self.finish(
            started,
            context.get("operation") or "UNKNOWN",
            context.get("sql") or "",
            context.get("correlation_id"),
            failed=True,
            exc=context.get("exception"),
        )

    # -- the recording both paths share (SQLSpec's hooks above, a driver's own hook in _adapters) ------

    def begin(self, sql: str, operation: str, request_id: str | None, holder: Holder | None) -> _Started:
        """Start measuring one statement: its span (a child of the current one) and its holder's fields.

        Args:
            sql: The SQL text as sent to the driver (a cache key; never put into anything emitted as is).
            operation: The operation name (``SELECT``, ``INSERT``, ``DDL``...).
            request_id: The current request's ID (span attribute), or None.
            holder: The hold of the connection the statement runs on, or None.

        Returns:
            What :meth:`finish` needs: the start time, the span (or None) and the holder.

        """
        tracer = self._tracer
        span = None if tracer is None else self._start_span(tracer, sql, operation, request_id)
        now = perf_counter()
        if holder is not None:
            if holder.started:  # the previous statement on this connection was cut off and the hold goes on
                self.cancelled(holder, None, now)
            holder.started = now
            holder.span = span
            holder.operation = operation
            holder.sql_key = sql
            holder.telemetry = self
        return (now, span, holder)

    def finish(
        self,
        started: _Started,
        operation: str,
        sql: str,
        request_id: str | None,
        *,
        failed: bool,
        exc: BaseException | None = None,
    ) -> None:
        """Record one statement begun by :meth:`begin`: histogram, tally, hold, capture, span, slow log.

        Args:
            started: What :meth:`begin` returned.
            operation: The operation name.
            sql: The SQL text (masked before it is captured or logged).
            request_id: The current request's ID (slow-statement log), or None.
            failed: Whether the statement raised.
            exc: What it raised (its SQLSTATE or class is the ``error_type``); None when failed but not known.

        """
        duration = perf_counter() - started[0]
        _end_hold_statement(started[2], duration)
        span = started[1]
        if not failed:
            child = self._ok.get(operation)
            if child is None:
                child = self._ok[operation] = self._histogram.labels(
                    self.target.db_system, operation, self.pool_name, ""
                )
            _observe(child, duration)
            if _captures:  # sqlspec_ops.testing: the whole cost when no test captures statements
                _capture(self.pool_name, operation, sql, duration, failed=False)
            if span is not None:
                span.end()
            threshold = self.slow_query_threshold
            if threshold is not None and duration >= threshold:
                self._log_slow(sql, operation, request_id, duration, threshold)
            return
        error_type, status_code = error_details(self.adapter, exc) if exc is not None else ("_OTHER", None)
        key = (operation, error_type)
        child = self._failed.get(key)
        if child is None:
            child = self._failed[key] = self._histogram.labels(
                self.target.db_system, operation, self.pool_name, error_type
            )
        _observe(child, duration)
        if _captures:
            _capture(self.pool_name, operation, sql, duration, failed=True)
        if span is not None:
            fail_span(span, error_type, status_code)
            span.end()

    def cancelled(self, holder: Holder, exc: BaseException | None, now: float) -> None:
        """Record a statement no SQLSpec hook saw end: cancelled (``asyncio.timeout``, a client gone) mid-flight.

        SQLSpec's hooks see ``Exception`` only, so a ``CancelledError`` passes them by; the pool proxy finds the
        statement still marked running when the connection comes back (or when the next statement starts on
        it) and ends it here, counted with ``error_type`` naming the cancellation, its span failed with it.

        Args:
            holder: The hold the statement ran in.
            exc: What was propagating when it was found (None: not known; named ``CancelledError``).
            now: ``perf_counter()`` when it was found (the duration ends there).

        """
        duration = now - holder.started
        span = holder.span
        holder.started = 0.0
        holder.span = None
        holder.statements += 1
        holder.db_time += duration
        error_type = (
            error_details(self.adapter, exc)[0] if exc is not None and not isinstance(exc, Exception) else _CANCELLED
        )
        operation = holder.operation or "UNKNOWN"
        key = (operation, error_type)
        child = self._failed.get(key)
        if child is None:
            child = self._failed[key] = self._histogram.labels(
                self.target.db_system, operation, self.pool_name, error_type
            )
        child.observe(duration)
        tally = holder.tally
        if tally is not None:
            tally.count += 1
            tally.seconds += duration
        if _captures:
            _capture(self.pool_name, operation, holder.sql_key, duration, failed=True)
        if span is not None:
            fail_span(span, error_type, None)
            span.end()

    def summary(self, holder: Holder) -> str:
        """Return the masked summary of the statement a holder is running (for ``/ops/pools``; not hot)."""
        return shape_of(cache_key(holder.sql_key)).summary or holder.operation or "UNKNOWN"

    # -- helpers --------------------------------------------------------------------------------------

    def _start_span(self, tracer: "Tracer", sql: str, operation: str, request_id: str | None) -> Any:
        key = cache_key(sql)
        cached = self._spans.get(key)
        if cached is None:
            if len(self._spans) >= _SHAPE_CACHE_SIZE:  # bound the cache: SQL with inlined literals never repeats
                self._spans.clear()
            cached = self._spans[key] = span_name_and_attributes(shape_of(key), operation, self.target)
        attributes = cached[1]
        if request_id is not None:  # passed at start: one attribute copy instead of a locked set_attribute
            attributes = {**attributes, REQUEST_ID_ATTRIBUTE: request_id}
        return tracer.start_span(cached[0], kind=self._client_kind, attributes=attributes)

    def _log_slow(self, sql: str, operation: str, request_id: str | None, duration: float, threshold: float) -> None:
        shape = shape_of(cache_key(sql))
        logger.warning(
            "slow statement: %s took %.1f ms (threshold %.1f ms, pool %s, statement %s)",
            shape.summary or operation,
            duration * 1000,
            threshold * 1000,
            self.pool_name,
            shape.sql_hash,
            extra={
                "extra_fields": {
                    "request_id": request_id,
                    "pool": self.pool_name,
                    "db.operation.name": operation,
                    "db.query.summary": shape.summary,
                    "db.statement.hash": shape.sql_hash,
                    "duration_ms": round(duration * 1000, 3),
                    "threshold_ms": round(threshold * 1000, 3),
                }
            },
        )


def _end_hold_statement(holder: Holder | None, duration: float) -> None:
    if holder is not None:
        holder.started = 0.0
        holder.span = None
        holder.statements += 1
        holder.db_time += duration


def _observe(child: Any, duration: float) -> None:
    """Record one statement in its histogram child and in the current request's tally."""
    child.observe(duration)
    tally = current_tally()
    if tally is not None:
        tally.count += 1
        tally.seconds += duration
