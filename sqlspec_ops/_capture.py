"""The process-wide registry of open statement captures (``sqlspec_ops.testing`` is its public face).

Captures must see statements from every thread and task of the process (Starlette's ``TestClient`` serves the
app in another thread), so they are kept in one module-level list rather than a context variable. The
statement hooks check ``if active:`` before calling :func:`record`: with no capture open that check is the
whole cost. The lock is taken only while a capture opens or closes and while a statement is recorded into
the open ones; it is never held across an await.

Only the SQL text is kept, masked (literals replaced by ``?``, comments dropped) before it is stored, and
parameters are never passed in: nothing a capture holds can quote a value a statement ran with.
"""

import threading
from typing import NamedTuple

__all__ = ("CapturedStatement", "Recorder", "active", "close_recorder", "open_recorder", "record")

# Masked text per raw SQL text: tests repeat the same few statements, so each is masked once. Bounded
# because SQL with inlined literals never repeats.
_MASK_CACHE_SIZE = 1024
_masked: dict[str, str] = {}
_lock = threading.Lock()


class CapturedStatement(NamedTuple):
    """One statement seen by a capture."""

    sql: str
    """The SQL text with literals replaced by ``?`` and comments dropped (placeholders stay)."""
    operation: str
    """SQLSpec's operation type: ``SELECT``, ``INSERT``, ``DDL``..."""
    pool: str
    """The pool name (the config's ``bind_key``, else ``host:port/database``)."""
    duration: float
    """Seconds the statement took."""
    failed: bool
    """Whether the statement raised."""


class Recorder:
    """The statements recorded while one capture was open, in the order they finished."""

    __slots__ = ("statements",)

    def __init__(self) -> None:
        self.statements: list[CapturedStatement] = []


# The open captures. A list mutated in place (never rebound), so `_capture.active` and any alias of it stay
# the same object; an empty list is false, which is the hooks' whole check when nothing captures.
active: list[Recorder] = []


def open_recorder() -> Recorder:
    """Start recording statements into a new recorder.

    Returns:
        The recorder; pass it to :func:`close_recorder` when done.

    """
    recorder = Recorder()
    with _lock:
        active.append(recorder)
    return recorder


def close_recorder(recorder: Recorder) -> None:
    """Stop recording into ``recorder`` (the others stay open; closing twice is harmless)."""
    with _lock:
        for index, candidate in enumerate(active):
            if candidate is recorder:
                del active[index]
                break


def _mask(sql: str) -> str:
    masked = _masked.get(sql)
    if masked is None:
        # tracing is loaded already whenever statements are recorded (the hooks live next to it); importing
        # here keeps `sqlspec_ops.testing` light at pytest start.
        from sqlspec_ops._sql import MAX_SQL, mask_literals  # noqa: PLC0415

        masked = mask_literals(sql[:MAX_SQL])
        if len(_masked) >= _MASK_CACHE_SIZE:
            _masked.clear()
        _masked[sql] = masked
    return masked


def record(pool: str, operation: str, sql: str, duration: float, *, failed: bool) -> None:
    """Record one finished statement in every open capture.

    Args:
        pool: The pool name.
        operation: SQLSpec's operation type.
        sql: The SQL text as sent to the driver; it is masked before it is stored.
        duration: Seconds the statement took.
        failed: Whether it raised.

    """
    statement = CapturedStatement(_mask(sql), operation, pool, duration, failed)
    with _lock:
        for recorder in active:
            recorder.statements.append(statement)
