"""The status page at /ops/: renders every value escaped and every gap as n/a, and is guarded like /ops/pools."""

import asyncio
import base64
import math
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlspec import SQLSpec
from sqlspec.adapters.asyncpg import AsyncpgConfig
from sqlspec.driver import AsyncDriverAdapterBase

from sqlspec_ops import SQLSpecOps
from sqlspec_ops._status_page import render_status_page, service_name
from tests.support.asgi import serving
from tests.support.postgres import APP_PASSWORD, PostgresServer

TOKEN = "page-t0ken-for-tests"  # noqa: S105 - a test credential
XSS = "<script>alert(1)</script>"
ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;"
SECRET_PARAMETER = "sk_live_Zq8s3cr3tParam"  # noqa: S105 - a secret-shaped SQL parameter the page must never show


class _Elements(HTMLParser):
    """Collect the start tags of a document with their attributes, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def elements(page: str) -> _Elements:
    """Parse ``page``."""
    parser = _Elements()
    parser.feed(page)
    parser.close()
    return parser


def scripts_without_nonce(page: str, nonce: str) -> int:
    """Count ``<script>`` elements that the page's CSP nonce would not allow (injected ones)."""
    return sum(1 for tag, attrs in elements(page).tags if tag == "script" and attrs.get("nonce") != nonce)


def basic(password: str, user: str = "oncall") -> dict[str, str]:
    """An HTTP Basic ``Authorization`` header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def holder(request_id: str, held_ms: float, **extra: Any) -> dict[str, Any]:
    """One entry of a pool's ``holders`` list as SPEC.md pins it."""
    return {
        "request_id": request_id,
        "route": "/users/{user_id}",
        "held_ms": held_ms,
        "state": "executing",
        "statements": 2,
        "db_time_ms": 3.5,
        "current_statement": "SELECT * FROM users WHERE id = ?",
        "acquired_at": "app/routes.py:42 get_user",
        **extra,
    }


def pools_body(**pool: Any) -> dict[str, Any]:
    """A ``/ops/pools`` body with one pool named ``main`` (plus ``pool`` overrides)."""
    verdict = {
        "server": "db:5432",
        "verdict": "within budget",
        "pools": ["main"],
        "workers": {"count": 4, "source": "WEB_CONCURRENCY"},
        "replicas": 2,
        "demand": 80,
        "min_size_demand": 8,
        "budget": 97,
        "budget_from": "max_connections 100 - superuser_reserved_connections 3",
        "max_size_that_fits": 12,
        "workers_that_fit": 4,
    }
    entry = {
        "name": "main",
        "adapter": "asyncpg",
        "target": "db:5432/app",
        "max_size": 10,
        "min_size": 1,
        "size": 4,
        "used": 3,
        "idle": 1,
        "pending": 0,
        "timeouts": 0,
        "acquire_wait_ms": {"p50": 0.1, "p95": 1.0, "p99": 2.0, "max": 3.0, "samples": 10},
        "hold_time_ms": {"p50": 5.0, "p95": 9.0, "p99": 12.0, "max": 20.0, "samples": 10},
        "budget": verdict,
        **pool,
    }
    return {
        "worker_pid": 4242,
        "pools": [entry],
        "event_loop_lag_ms": 1.5,
        "budget": {"workers": {"count": 4, "source": "WEB_CONCURRENCY"}, "replicas": 2, "servers": [verdict]},
    }


def render(pools: dict[str, Any], health: dict[str, Any] | None = None, refresh: float | None = 5.0) -> str:
    """Render the page with a fixed nonce."""
    return render_status_page(
        service="svc",
        health=health or {"status": "pass", "checks": {}},
        pools=pools,
        nonce="N0NCE",
        refresh_seconds=refresh,
    )


# -- the renderer ----------------------------------------------------------------------------------------


def test_every_value_from_the_data_is_escaped() -> None:
    """Pool names, routes, statements, outputs and errors containing markup render as text, never as elements."""
    health = {"status": "fail", "checks": {f"{XSS}:connections": [{"status": "fail", "output": XSS, "adapter": XSS}]}}
    body = pools_body(
        name=XSS,
        target=XSS,
        problems=[XSS],
        holders=[holder(XSS, 10, route=XSS, current_statement=XSS, acquired_at=XSS, state=XSS)],
        server={"this_app": {XSS: 1}, "other_clients": 0},
    )
    page = render_status_page(service=XSS, health=health, pools=body, nonce='"><script>x', refresh_seconds=5)
    assert XSS not in page
    assert page.count(ESCAPED_XSS) >= 10
    assert scripts_without_nonce(page, '"><script>x') == 0
    # negative control: the same check spots one injected element
    assert scripts_without_nonce(page.replace(ESCAPED_XSS, XSS, 1), '"><script>x') == 1
    assert f"<title>{ESCAPED_XSS}: database status</title>" in page


def test_holders_oldest_first_with_leaks_marked_in_words() -> None:
    """Holders are listed longest-held first; rows held past the leak threshold carry a class and words."""
    body = pools_body(
        leak_threshold_s=30,
        holders=[holder("young", 1500.0), holder("old", 45_000.0), holder("middle", 29_000.0)],
    )
    page = render(body)
    order = [page.index(f"<code>{rid}</code>") for rid in ("old", "middle", "young")]
    assert order == sorted(order)
    rows = re.findall(r"<tr( class=\"leak\")?><td><code>(\w+)</code>", page)
    assert rows == [(' class="leak"', "old"), ("", "middle"), ("", "young")]
    assert page.count("past leak threshold (30 s)") == 1
    assert "45.00 s" in page

    off = render(pools_body(leak_threshold_s=None, holders=[holder("old", 45_000.0)]))
    assert "past leak threshold" not in off
    assert "Leak detection is off." in off
    assert "No connection is held right now." in render(pools_body(holders=[]))


def test_missing_keys_render_as_na() -> None:
    """Empty bodies and a pool without statistics render every section with n/a instead of failing."""
    page = render({}, health={})
    for heading in ("Readiness", "Pools", "Connection budget", "Event loop", "Workers"):
        assert f">{heading}</h2>" in page
    assert "n/a" in page
    bare = render({"pools": [{"name": "legacy", "note": "sqlspec-ops does not support this adapter yet"}]})
    assert "Pool legacy" in bare
    assert "Holders: n/a" in bare
    assert "Server view: n/a" in bare


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        "name",
        "used",
        "idle",
        "max_size",
        "size",
        "pending",
        "holders",
        "server",
        "budget",
        "acquire_wait_ms",
        "leak_threshold_s",
        "acquire_timeout_s",
        "problems",
        "note",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pool=st.dictionaries(_KEYS, _JSON, max_size=8),
    top=st.dictionaries(st.sampled_from(["worker_pid", "event_loop_lag_ms", "budget", "scope"]), _JSON),
    checks=_JSON,
)
def test_odd_values_never_crash_the_page(pool: dict[str, Any], top: dict[str, Any], checks: Any) -> None:
    """Any JSON value under any known key (wrong types, NaN, nested junk) still renders a whole page."""
    page = render({**top, "pools": [pool, "not a pool"]}, health={"status": 3, "checks": checks})
    assert page.endswith("</html>\n")
    assert "</main>" in page


def test_utilisation_and_states_carry_words() -> None:
    """A saturated pool shows its numbers and the word "saturated"; every coloured badge has a word in it."""
    page = render(pools_body(used=10, idle=0, size=10, pending=3, timeouts=7, acquire_timeout_s=2))
    assert "used <strong>10</strong>" in page
    assert "pending <strong>3</strong>" in page
    assert "timeouts <strong>7</strong> (acquire timeout 2 s)" in page
    assert ">saturated</span>" in page
    assert ">callers waiting</span>" in page
    assert 'aria-label="10 used, 0 idle of at most 10"' in page
    badges = re.findall(r'<span class="st st-\w+">([^<]*)</span>', page)
    assert badges
    assert all(word.strip() for word in badges)
    assert ">saturated</span>" not in render(pools_body())


def test_budget_sentences_name_the_numbers() -> None:
    """Within budget, oversubscribed and unknown verdicts each read as one sentence with the numbers."""
    within = render(pools_body())
    assert (
        'db:5432 is <span class="st st-pass">within budget</span>: 2 replica(s) &times; 4 worker(s) of pools main '
        "may open 80 connections (min_size alone 8) of a budget of 97 (max_connections 100 - "
        "superuser_reserved_connections 3)."
    ) in within
    body = pools_body()
    body["budget"]["servers"][0].update(verdict="oversubscribed", demand=160, max_size_that_fits=4)
    over = render(body)
    assert ">oversubscribed</span>: 2 replica(s) &times; 4 worker(s) of pools main may open 160 connections" in over
    assert "Largest max_size that fits: 4; workers that fit: 4." in over
    body["budget"]["servers"][0].update(verdict="unknown", error="ConnectionRefusedError")
    assert "the server's limits could not be read (ConnectionRefusedError)." in render(body)


def test_server_view_loop_lag_and_worker() -> None:
    """The database's view, a missing privilege, the loop lag and the answering worker's pid are on the page."""
    seen = {"this_app": {"active": 2, "idle": 5}, "other_clients": 7, "idle_in_transaction": 1}
    page = render(pools_body(server={**seen, "oldest_transaction_s": 12.5, "waiting_on_lock": 3}))
    assert "active 2, idle 5" in page
    assert "<td>12.5 s</td>" in page
    assert re.search(r"Waiting on a lock</th><td>3</td>", page)
    missing = render(pools_body(server={"error": "needs pg_read_all_stats"}))
    assert ">unavailable</span> needs pg_read_all_stats" in missing
    assert "worker pid <strong>4242</strong>" in page
    assert "4 worker(s) per replica (from WEB_CONCURRENCY)" in page
    blocked = render({**pools_body(), "event_loop_lag_ms": 250.0})
    assert ">blocked</span>" in blocked
    assert ">ok</span>" in page


def test_markup_is_accessible_and_self_contained() -> None:
    """Every header cell has a scope, the only script and style carry the nonce, and nothing points elsewhere."""
    page = render(pools_body(holders=[holder("r1", 5.0)], server={"this_app": {}}))
    tags = elements(page).tags
    headers = [attrs for tag, attrs in tags if tag == "th"]
    assert headers
    assert all(attrs.get("scope") in {"col", "row"} for attrs in headers)
    assert [attrs.get("nonce") for tag, attrs in tags if tag in {"script", "style"}] == ["N0NCE", "N0NCE"]
    links = [attrs.get("href") or attrs.get("src") or "" for _, attrs in tags if "href" in attrs or "src" in attrs]
    assert links
    assert not [link for link in links if "//" in link or ":" in link.removeprefix("data:")]
    assert 'name="viewport"' in page
    without_script = render(pools_body(), refresh=None)
    assert "<script" not in without_script
    assert 'id="refresh-control"' not in without_script


def test_service_name_precedence() -> None:
    """OTEL_SERVICE_NAME wins, then the app's title unless it is FastAPI's default, then sqlspec-ops."""
    assert service_name(title="Billing", environ={"OTEL_SERVICE_NAME": "billing-api"}) == "billing-api"
    assert service_name(title="Billing", environ={}) == "Billing"
    assert service_name(title="FastAPI", environ={}) == "sqlspec-ops"
    assert service_name(title=None, environ={"OTEL_SERVICE_NAME": "  "}) == "sqlspec-ops"


def test_non_finite_numbers_are_na() -> None:
    """NaN, infinity and booleans are not numbers on the page."""
    page = render(pools_body(used=math.nan, idle=math.inf, max_size=True, pending="3"))
    assert "used <strong>n/a</strong>" in page
    assert "pending <strong>n/a</strong>" in page
    assert '<svg class="bar"' not in page


# -- served by the app, on PostgreSQL -----------------------------------------------------------------------


def page_app(pg: PostgresServer, registry: CollectorRegistry, *, bind_key: str = "main", **options: Any) -> FastAPI:
    """An app with one asyncpg pool (the DSN carries the password) and a route that holds a connection."""
    spec = SQLSpec()
    config = spec.add_config(
        AsyncpgConfig(connection_config={"dsn": pg.dsn, "min_size": 1, "max_size": 3}, bind_key=bind_key)
    )

    async def session() -> AsyncIterator[AsyncDriverAdapterBase]:
        async with spec.provide_session(config) as db:
            yield db

    app = FastAPI(title="Page Test Service")

    @app.get(f"/hold/{XSS}/{{seconds}}")
    async def hold(seconds: float, db: Annotated[AsyncDriverAdapterBase, Depends(session)]) -> dict[str, Any]:
        value = await db.select_value(
            "SELECT :secret::text FROM pg_sleep(:seconds)", {"secret": SECRET_PARAMETER, "seconds": seconds}
        )
        return {"echo_length": len(value)}

    SQLSpecOps(spec, registry=registry, **options).instrument(app)
    return app


def csp_directives(header: str) -> dict[str, list[str]]:
    """Split a Content-Security-Policy header into its directives."""
    parts = (part.split() for part in header.split(";") if part.strip())
    return {part[0]: part[1:] for part in parts}


async def test_page_asks_for_basic_and_takes_the_token_as_password_or_bearer(
    pg: PostgresServer, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without credentials the page challenges Basic; Basic any:token and the bearer open it; wrong ones do not."""
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    app = page_app(pg, registry, token=TOKEN)
    async with serving(app) as client:
        anonymous = await client.get("/ops/")
        wrong = await client.get("/ops/", headers=basic(f"{TOKEN}x"))
        user_only = await client.get("/ops/", headers=basic("", user=TOKEN))
        garbage = await client.get("/ops/", headers={"Authorization": "Basic %%%"})
        with_basic = await client.get("/ops/", headers=basic(TOKEN, user="anyone"))
        with_bearer = await client.get("/ops/", headers={"Authorization": f"Bearer {TOKEN}"})
        pools_with_basic = await client.get("/ops/pools", headers=basic(TOKEN))
        redirect = await client.get("/ops")

    for refused in (anonymous, wrong, user_only, garbage):
        assert refused.status_code == 401
        challenges = refused.headers.get_list("www-authenticate")
        assert 'Basic realm="sqlspec-ops", charset="UTF-8"' in challenges
        assert any(c.startswith("Bearer") for c in challenges)
        assert "<html" not in refused.text
    for page in (with_basic, with_bearer):
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>Page Test Service: database status</title>" in page.text
        assert TOKEN not in page.text
        assert TOKEN not in repr(page.headers)
    assert pools_with_basic.status_code == 200
    assert redirect.status_code == 307
    assert redirect.headers["location"] == "/ops/"


async def test_page_headers_are_strict_and_the_nonce_is_fresh(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """The page carries a nonce-only CSP with no external source, nosniff, no-store and no-referrer."""
    async with serving(page_app(pg, registry)) as client:
        first = await client.get("/ops/")
        second = await client.get("/ops/")
    assert first.status_code == 200
    headers = first.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    csp = csp_directives(headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    [script_nonce] = csp["script-src"]
    assert csp["style-src"] == [script_nonce]
    assert re.fullmatch(r"'nonce-[A-Za-z0-9_-]{20,}'", script_nonce)
    nonce = script_nonce.removeprefix("'nonce-").removesuffix("'")
    assert scripts_without_nonce(first.text, nonce) == 0
    assert f'<style nonce="{nonce}">' in first.text
    every_source = [source for sources in csp.values() for source in sources]
    assert not [s for s in every_source if "http" in s or "*" in s or "unsafe" in s]
    assert csp_directives(second.headers["content-security-policy"])["script-src"] != [script_nonce]


async def test_live_page_escapes_bind_key_and_shows_no_secret(pg: PostgresServer, registry: CollectorRegistry) -> None:
    """With a connection held by a request whose route and bind key contain markup, the page shows them escaped
    and never the DSN password or the statement's parameter."""  # noqa: D205, D209 - one sentence
    app = page_app(pg, registry, bind_key=XSS, token=TOKEN)
    async with serving(app) as client:
        holding = asyncio.create_task(client.get(f"/hold/{XSS}/1.5"))
        page = ""
        for _ in range(100):  # until the held connection shows on the page
            page = (await client.get("/ops/", headers=basic(TOKEN))).text
            if "used <strong>1</strong>" in page:
                break
            await asyncio.sleep(0.02)
        pools = (await client.get("/ops/pools", headers=basic(TOKEN))).text
        assert (await holding).status_code == 200
    assert "used <strong>1</strong>" in page
    assert f"Pool {ESCAPED_XSS}" in page
    assert XSS not in page
    assert ">pass</span>" in page
    assert SECRET_PARAMETER not in page
    assert APP_PASSWORD not in page
    assert APP_PASSWORD not in pools  # the JSON behind it, as a control that the names are what we grep for
    assert scripts_without_nonce(page, page.split('<script nonce="', 1)[1].split('"', 1)[0]) == 0


async def test_live_page_lists_the_holder_with_its_route_escaped(
    pg: PostgresServer, registry: CollectorRegistry
) -> None:
    """A request holding a connection appears in the holders table with its request ID and escaped route."""
    app = page_app(pg, registry)
    async with serving(app) as client:
        holding = asyncio.create_task(client.get(f"/hold/{XSS}/1.5", headers={"X-Request-ID": "holder-req-1"}))
        page = ""
        for _ in range(100):
            page = (await client.get("/ops/")).text
            if "used <strong>1</strong>" in page:
                break
            await asyncio.sleep(0.02)
        await holding
    assert "<code>holder-req-1</code>" in page
    assert f"<code>/hold/{ESCAPED_XSS}/{{seconds}}</code>" in page
    assert SECRET_PARAMETER not in page
