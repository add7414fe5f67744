"""What the throwaway database servers of the test harness share: a temporary directory, ``with``, cleanup."""

import shutil
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ("ThrowawayServer",)


class ThrowawayServer:
    """A server the tests start in a temporary directory of its own and remove with it."""

    _tmp: Path

    def start(self) -> Self:
        """Start the server (subclasses)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server (subclasses)."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start the server for a ``with`` block."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server and delete its files."""
        self.cleanup()
