"""Where the repository and its README are, for tests that run its files or read its documentation."""

from pathlib import Path

__all__ = ("README", "ROOT")

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
