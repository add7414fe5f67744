"""The README's "Endpoints" and "Pool metrics" sections: the example app runs and answers as they show."""

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI

from sqlspec_ops import PoolAcquireTimeout
from tests.support.asgi import serving
from tests.support.postgres import PostgresServer

README = Path(__file__).resolve().parent.parent / "README.md"
TOKEN = "readme-ops-token"  # noqa: S105 - a test credential


def section(title: str) -> str:
    """Return the text of one ``## title`` section of the README."""
    return README.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(title: str, language: str) -> list[str]:
    """Return the fenced blocks of one language in a README section."""
    return [str(b) for b in re.findall(rf"```{language}\n(.*?)```", section(title), re.DOTALL)]


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
    (example,) = blocks("Endpoints", "python")
    (failing_body,) = blocks("Endpoints", "json")
    (timeout_line,) = blocks("Pool metrics", "text")
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
            deadline = time.monotonic() + 10
            while primary.connection_instance.get_idle_size() or primary.connection_instance.get_size() < 10:
                assert time.monotonic() < deadline, "the ten /hold requests never borrowed every connection"
                await asyncio.sleep(0.01)

            errors = await asyncio.gather(*(borrow(spec, primary) for _ in range(4)))
            assert all(isinstance(error, PoolAcquireTimeout) for error in errors), errors
            shown = [f"{type(e).__module__}.{type(e).__qualname__}: {e}" for e in errors]
            assert any(as_pattern(timeout_line).fullmatch(line) for line in shown), (timeout_line, shown)
            release.set()
            assert {(await h).status_code for h in holders} == {200}

            server.stop()
            await asyncio.sleep(1.1)  # health_cache_ttl
            failing = await client.get("/ops/ready")
            assert failing.status_code == 503
            body, shown_body = failing.json(), json.loads(failing_body)
            body["checks"]["primary:connections"][0]["observedValue"] = 1.552
            assert body == shown_body
