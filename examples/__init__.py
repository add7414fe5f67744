"""Runnable examples of sqlspec-ops (importable as ``examples.app`` for ``uvicorn`` and the tests)."""
