"""The package version, in one place (pyproject.toml reads it)."""

__all__ = ("__version__",)

__version__ = "0.2.0"
