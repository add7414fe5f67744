"""``ops.refusing_traffic(reason)``: take the instance out of rotation while a block runs, keep it alive.

While at least one block is held, ``/ops/ready`` (and ``/ops/health``) answer 503 with the reasons as ``output``;
``/ops/live`` is unaffected, so the orchestrator stops sending traffic without restarting the process. Blocks
compose: nested and concurrent ones each add their reason and take away only their own, in any order, whether
the block ends normally or raises.
"""

import itertools
from types import TracebackType
from typing import Self

__all__ = ("RefusingTraffic", "TrafficRefusals")


class TrafficRefusals:
    """The reasons this worker currently refuses traffic for (usually none)."""

    def __init__(self) -> None:
        """Start with no refusal."""
        self._held: dict[int, str] = {}
        self._ids = itertools.count()

    def hold(self, reason: str) -> "RefusingTraffic":
        """Return a context manager (``with`` and ``async with``) that refuses traffic for ``reason`` while held.

        Raises:
            ValueError: If ``reason`` is not a non-empty string.

        """
        if not isinstance(reason, str) or not reason.strip():
            msg = f"refusing_traffic() needs a reason (a non-empty string) to show in /ready, got {reason!r}"
            raise ValueError(msg)
        return RefusingTraffic(self, reason.strip())

    @property
    def reasons(self) -> tuple[str, ...]:
        """The reasons held right now, oldest first, each once."""
        return tuple(dict.fromkeys(self._held.values()))

    def _enter(self, reason: str) -> int:
        token = next(self._ids)
        self._held[token] = reason
        return token

    def _exit(self, token: int) -> None:
        self._held.pop(token, None)


class RefusingTraffic:
    """One hold of :class:`TrafficRefusals`; reusable, and each ``with`` counts once."""

    __slots__ = ("_reason", "_refusals", "_tokens")

    def __init__(self, refusals: TrafficRefusals, reason: str) -> None:
        """Keep what to hold (nothing is refused before the block is entered)."""
        self._refusals = refusals
        self._reason = reason
        self._tokens: list[int] = []

    def __enter__(self) -> Self:
        """Start refusing traffic."""
        self._tokens.append(self._refusals._enter(self._reason))  # noqa: SLF001
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop refusing traffic for this block (also when it raised; the exception propagates)."""
        if self._tokens:
            self._refusals._exit(self._tokens.pop())  # noqa: SLF001

    async def __aenter__(self) -> Self:
        """Start refusing traffic (``async with``)."""
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop refusing traffic for this block (``async with``)."""
        self.__exit__(exc_type, exc, tb)
