"""The README's "Endpoints" and "Pool metrics" sections: the example app runs and answers as they show."""

import asyncio
import contextlib
import json
import re
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI

from sqlspec_ops import PoolAcquireTimeout
from tests.support.asgi import serving
from tests.support.postgres import PostgresServer
from tests.support.readme import readme_blocks
from tests.support.waiting import eventually

TOKEN = "readme-ops-token"  # noqa: S105 - a test credential


def as_pattern(line: str) -> re.Pattern[str]:
    """Turn a README output line into a regex in which every number may differ."""
    return re.compile(re.sub(r"\d+(?:\\\.\d+)?", r"\\d+(?:\\.\\d+)?", re.escape(line.strip())))


async def borrow(spec: Any, config: Any) -> BaseException | None:
    """Run one session and return what it raised (None when it worked)."""
    try:
        async with spec.provide_session(config) as db:
            await db.select_value("SELECT 1")
    except BaseException as exc:
        return exc
    return None


@pytest.mark.slow
async def test_readme_endpoints_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README app serves every endpoint as the table says, its 503 body and its timeout error as shown."""
    (example,) = readme_blocks("Endpoints", "python")
    (failing_body,) = readme_blocks("Endpoints", "json")
    (timeout_line,) = readme_blocks("Pool metrics", "text")
    with PostgresServer() as server:
        monkeypatch.setenv("DATABASE_URL", server.dsn)
        monkeypatch.setenv("SQLSPEC_OPS_TOKEN", TOKEN)
        namespace: dict[str, Any] = {"__name__": "readme_endpoints"}
        exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
        app: FastAPI = namespace["app"]
        plugin, spec, primary = namespace["plugin"], namespace["spec"], namespace["primary"]
        release = asyncio.Event()

        @app.get("/hold")
        async def hold(db: Annotated[Any, Depends(plugin.provide_session())]) -> dict[str, int]:
            value = await db.select_value("SELECT 1")
            await release.wait()
            return {"value": value}

        authorized = {"Authorization": f"Bearer {TOKEN}"}
        async with serving(app) as client:
            assert (await client.get("/ops/live")).json() == {"status": "pass"}
            for path in ("/ops/ready", "/ops/health"):
                ready = await client.get(path)
                assert ready.status_code == 200
                assert ready.headers["content-type"] == "application/health+json"
            for path in ("/ops/metrics", "/ops/pools"):
                assert (await client.get(path)).status_code == 401
                assert (await client.get(path, headers=authorized)).status_code == 200
            openmetrics = await client.get(
                "/ops/metrics", headers={**authorized, "Accept": "application/openmetrics-text; version=1.0.0"}
            )
            assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
            (pool,) = (await client.get("/ops/pools", headers=authorized)).json()["pools"]
            expected = {"target", "min_size", "max_size", "idle", "used", "pending", "acquire_wait_ms", "hold_time_ms"}
            assert expected | {"timeouts", "budget"} <= set(pool)

            holders = [asyncio.create_task(client.get("/hold")) for _ in range(10)]  # max_size=10, all borrowed
            pool = primary.connection_instance
            await eventually(
                lambda: pool.get_idle_size() == 0 and pool.get_size() == 10,
                timeout=10,
                what="the ten /hold requests to borrow every connection",
            )

            errors = await asyncio.gather(*(borrow(spec, primary) for _ in range(4)))
            assert all(isinstance(error, PoolAcquireTimeout) for error in errors), errors
            shown = [f"{type(e).__module__}.{type(e).__qualname__}: {e}" for e in errors]
            assert any(as_pattern(timeout_line).fullmatch(line) for line in shown), (timeout_line, shown)
            release.set()
            assert {(await h).status_code for h in holders} == {200}

            server.stop()
            shown_body = json.loads(failing_body)
            bodies: list[object] = []

            async def ready_answers_as_shown() -> bool:
                # Probes right after the stop may still meet a connection the server is closing (another error
                # class); the README shows the answer for a server that is down, once the cached pass expired.
                failing = await client.get("/ops/ready")
                body = failing.json()
                with contextlib.suppress(KeyError, IndexError, TypeError):
                    body["checks"]["primary:connections"][0]["observedValue"] = 1.552
                bodies.append((failing.status_code, body))
                return failing.status_code == 503 and body == shown_body

            await eventually(
                ready_answers_as_shown, timeout=10, what=lambda: f"the README's 503 body, got {bodies[-3:]}"
            )
