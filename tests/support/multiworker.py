"""Talk to each worker of a multi-worker server running ``tests/apps/multiworker.py``, and read its pool totals.

Every response of that app carries ``X-Worker-PID``, so a test knows which worker answered.
"""

import asyncio
import subprocess

import httpx

from tests.support.promql import parse_samples, sample_value
from tests.support.waiting import eventually

__all__ = ("MAX_SIZE", "MIN_SIZE", "POOL", "WORKERS", "from_each_worker", "pool_totals", "worker_env")

POOL = {"db_client_connection_pool_name": "main"}
WORKERS = 2
MIN_SIZE, MAX_SIZE = 1, 3


def worker_env(env: dict[str, str], dsn: str) -> dict[str, str]:
    """Return ``env`` configured for the multiworker app (its database and pool sizes), without a token."""
    env = {k: v for k, v in env.items() if k not in ("SQLSPEC_OPS_TOKEN", "WEB_CONCURRENCY")}
    env.update(
        SQLSPEC_OPS_TEST_DSN=dsn, SQLSPEC_OPS_TEST_MIN_SIZE=str(MIN_SIZE), SQLSPEC_OPS_TEST_MAX_SIZE=str(MAX_SIZE)
    )
    return env


async def from_each_worker(
    client: httpx.AsyncClient,
    url: str,
    *,
    exclude: frozenset[int] = frozenset(),
    within: float = 30,
    process: "subprocess.Popen[bytes] | None" = None,
) -> dict[int, httpx.Response]:
    """GET ``url`` on fresh connections until two different live workers answered; return one answer each."""
    answers: dict[int, httpx.Response] = {}

    async def every_worker_answered() -> bool:
        assert process is None or process.poll() is None, f"the server exited with {process.returncode}"
        batch = await asyncio.gather(*(client.get(url) for _ in range(4)))
        for response in batch:
            pid = int(response.headers["x-worker-pid"])
            if pid not in exclude and response.status_code == 200:
                answers.setdefault(pid, response)
        return len(answers) >= WORKERS

    await eventually(
        every_worker_answered,
        timeout=within,
        interval=0.05,
        ignore=(httpx.TransportError,),
        what=lambda: f"{WORKERS} workers to answer {url} (only {sorted(answers)} did)",
    )
    return answers


def pool_totals(text: str) -> dict[str, float | None]:
    """Pick the pool families of one scrape."""
    samples = parse_samples(text)

    def value(name: str, **labels: str) -> float | None:
        return sample_value(samples, name, **POOL, **labels)

    return {
        "max": value("db_client_connection_max"),
        "idle_min": value("db_client_connection_idle_min"),
        "idle": value("db_client_connection_count", db_client_connection_state="idle"),
        "used": value("db_client_connection_count", db_client_connection_state="used"),
        "pending": value("db_client_connection_pending_requests"),
        "timeouts": value("db_client_connection_timeouts_total"),
        "waits": value("db_client_connection_wait_time_seconds_count"),
        "holds": value("db_client_connection_use_time_seconds_count"),
    }
