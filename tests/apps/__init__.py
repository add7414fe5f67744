"""Small apps the tests start in subprocesses (uvicorn workers)."""
