"""Wait for a condition with a deadline instead of sleeping a fixed time: ``eventually`` and its blocking twin.

Both poll ``predicate`` until it returns something truthy and fail with an ``AssertionError`` naming what did
not happen (and, when given, the output of whatever was being waited for). An exception the predicate raises
ends the wait at once, unless its class is in ``ignore`` (a server that is still starting refuses
connections). ``eventually`` is for code on the event loop (it never blocks the loop, and the predicate may be
a coroutine function); ``eventually_blocking`` is for synchronous tests and fixtures, which have no loop.
"""

import asyncio
import inspect
import time
from collections.abc import Callable

__all__ = ("eventually", "eventually_blocking")

Message = str | Callable[[], str]


class _Attempts:
    """The deadline of one wait and what the predicate last said."""

    def __init__(self, timeout: float, ignore: tuple[type[BaseException], ...]) -> None:
        if timeout <= 0:
            msg = f"timeout must be a positive number of seconds, got {timeout!r}"
            raise ValueError(msg)
        self.timeout = timeout
        self.ignore = ignore
        self.deadline = time.monotonic() + timeout
        self.last: object = None

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def failure(self, what: Message) -> AssertionError:
        described = what() if callable(what) else what
        return AssertionError(f"timed out after {self.timeout}s waiting for {described} (last: {self.last!r})")


async def eventually(
    predicate: Callable[[], object],
    *,
    timeout: float,  # noqa: ASYNC109 - the deadline of the whole wait, which asyncio.timeout cannot report on
    interval: float = 0.02,
    ignore: tuple[type[BaseException], ...] = (),
    what: Message = "the condition",
) -> None:
    """Await until ``predicate()`` (or the awaitable it returns) is truthy; fail after ``timeout`` seconds.

    Args:
        predicate: A function or coroutine function of no arguments.
        timeout: Seconds before the wait fails.
        interval: Seconds between attempts (the loop keeps running in between).
        ignore: Exception classes that count as "not yet" instead of ending the wait.
        what: What is being waited for, for the failure message (a callable is called only on failure).

    Raises:
        AssertionError: If the predicate was never truthy in time.

    """
    attempts = _Attempts(timeout, ignore)
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
        except ignore as exc:
            attempts.last = exc
        else:
            attempts.last = result
            if result:
                return
        if attempts.expired():
            raise attempts.failure(what)
        await asyncio.sleep(interval)


def eventually_blocking(
    predicate: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.2,
    ignore: tuple[type[BaseException], ...] = (),
    what: Message = "the condition",
) -> None:
    """Block until ``predicate()`` is truthy; fail after ``timeout`` seconds (for code without an event loop).

    Args:
        predicate: A function of no arguments (not a coroutine function).
        timeout: Seconds before the wait fails.
        interval: Seconds to sleep between attempts.
        ignore: Exception classes that count as "not yet" instead of ending the wait.
        what: What is being waited for, for the failure message (a callable is called only on failure).

    Raises:
        AssertionError: If the predicate was never truthy in time.
        TypeError: If the predicate returned an awaitable (use ``eventually`` on the event loop).

    """
    attempts = _Attempts(timeout, ignore)
    while True:
        try:
            result = predicate()
        except ignore as exc:
            attempts.last = exc
        else:
            if inspect.isawaitable(result):
                close = getattr(result, "close", None)
                if close is not None:
                    close()  # never awaited: close it so Python does not warn about it
                msg = "eventually_blocking got an awaitable; await eventually(...) on the event loop instead"
                raise TypeError(msg)
            attempts.last = result
            if result:
                return
        if attempts.expired():
            raise attempts.failure(what)
        time.sleep(interval)
