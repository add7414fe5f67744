"""The README's "Readiness" section: its refusing_traffic app runs as written and answers as the comments say."""

from typing import Any

import httpx

from tests.support.asgi import serving
from tests.support.readme import readme_blocks


async def test_the_warm_up_route_refuses_traffic_while_it_runs() -> None:
    """Inside the README's warm-up block /ops/ready is 503 with the reason, /ops/live 200; after it, 200 again."""
    (code,) = readme_blocks("Readiness", "python")
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    seen: dict[str, httpx.Response] = {}
    async with serving(namespace["app"]) as client:  # the README's ops uses the global registry, shared as usual

        async def warm_caches() -> None:  # replaces the README's stand-in: look at the probes meanwhile
            seen["ready"] = await client.get("/ops/ready")
            seen["live"] = await client.get("/ops/live")

        namespace["warm_caches"] = warm_caches
        warmed = await client.post("/admin/warm-up")
        after = await client.get("/ops/ready")
    assert warmed.json() == {"status": "warm"}
    assert seen["ready"].status_code == 503
    assert seen["ready"].json()["output"] == "warming caches"
    assert seen["live"].status_code == 200
    assert after.status_code == 200
