"""The status page in a real headless Chromium, against the example app served by uvicorn on PostgreSQL.

One module-scoped run starts ``examples/app.py`` under uvicorn (``DATABASE_URL`` on the test server, a token
set), puts it under light load with one connection held by a sleeping request (``/demo/slow``), and has
Chromium log in with HTTP Basic, dump the DOM, record its network log and take the screenshot committed at
``docs/status-page.png``. The tests compare the DOM's structure and words, never pixels.
"""

import contextlib
import json
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.paths import ROOT
from tests.support.postgres import PostgresServer
from tests.support.processes import ServerProcess, clean_env, running_server

pytestmark = pytest.mark.slow

TOKEN = "browser-t0ken-for-tests"  # noqa: S105 - a test credential
HOLDER_ID = "held-by-chromium-test"
SCREENSHOT = ROOT / "docs" / "status-page.png"
WINDOW = (1100, 1700)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-pings",
    "--hide-scrollbars",
    # the browser's own background requests (update checks) must not leave the machine: nothing resolves
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--enable-logging=stderr",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)
# The page's outline: what an on-call reader scans, in order (headings of the example's two pools).
OUTLINE = [
    ("h1", "sqlspec-ops example: database status"),
    ("h2", "Readiness"),
    ("h2", "Pools"),
    ("h3", "Pool primary"),
    ("h4", "Connections held now"),
    ("h4", "What the database sees"),
    ("h3", "Pool analytics"),
    ("h4", "Connections held now"),
    ("h4", "What the database sees"),
    ("h2", "Connection budget"),
    ("h2", "Event loop"),
    ("h2", "Workers"),
]
TABLE_HEADS = [
    ["Database", "Adapter", "Status", "Ping", "Output"],
    ["", "p50", "p95", "p99", "max", "samples"],
    # the primary pool's holders (the sleeping request), then the analytics pool's timings
    ["Request ID", "Route", "Held", "State", "Statements", "DB time", "Current statement", "Acquired at"],
    ["", "p50", "p95", "p99", "max", "samples"],
]


def chromium() -> str:
    """Return Chromium's path; fail (never skip) when it is missing, since CI must run this test."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: scripts/test installs Debian's 'chromium' package (as root)")
    return path


def run_chromium(url: str, work: Path, *outputs: str) -> tuple[str, str, list[dict[str, Any]]]:
    """Open ``url`` in a fresh profile; return stdout, stderr and the network log's request starts."""
    work.mkdir(parents=True, exist_ok=True)
    netlog = work / "netlog.json"
    profile = tempfile.mkdtemp(prefix="profile-", dir=work)
    argv = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--log-net-log={netlog}", *outputs, url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr, request_starts(netlog)


def request_starts(netlog: Path) -> list[dict[str, Any]]:
    """Return the params of every URL request Chromium started (its NetLog ``URL_REQUEST_START_JOB`` events)."""
    text = netlog.read_text()
    try:
        log = json.loads(text)
    except ValueError:  # a log cut short at exit lacks its closing brackets
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [event["params"] for event in log["events"] if event["type"] == start and "url" in event.get("params", {})]


def loads_of_page(starts: list[dict[str, Any]], site: str) -> list[str]:
    """Return the URLs a page of ``site`` loaded (the browser's own background requests have another key)."""
    return [p["url"] for p in starts if str(p.get("network_isolation_key", "")).startswith(site)]


def foreign(urls: list[str], origin: str) -> list[str]:
    """Return the URLs that are not on ``origin``."""
    return [url for url in urls if not url.startswith(origin + "/")]


_BLOCKS = frozenset(
    {"p", "div", "section", "article", "header", "main", "caption", "tr", "th", "td", "h1", "h2", "h3", "h4"}
)


class _Dom(HTMLParser):
    """The outline, table heads, attributes and visible text of a dumped DOM (blocks and cells apart)."""

    def __init__(self) -> None:
        super().__init__()
        self.outline: list[tuple[str, str]] = []
        self.heads: list[list[str]] = []
        self.attrs: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._heading: str | None = None
        self._in_thead = False
        self._cell: list[str] | None = None
        self._hidden = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs.append((tag, dict(attrs)))
        self._hidden = tag in {"style", "script", "title"}
        if tag in _BLOCKS:
            self.text.append(" ")
        if tag in {"h1", "h2", "h3", "h4"}:
            self._heading = tag
            self.outline.append((tag, ""))
        elif tag == "thead":
            self._in_thead = True
            self.heads.append([])
        elif tag == "th" and self._in_thead:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        self._hidden = False
        if tag in _BLOCKS:
            self.text.append(" ")
        if tag == self._heading:
            self._heading = None
        elif tag == "thead":
            self._in_thead = False
        elif tag == "th" and self._cell is not None:
            self.heads[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.text.append(data)
        if self._heading is not None:
            tag, text = self.outline[-1]
            self.outline[-1] = (tag, text + data)
        if self._cell is not None:
            self._cell.append(data)

    def words(self) -> str:
        """Return the document's text with whitespace collapsed."""
        return re.sub(r"\s+", " ", "".join(self.text)).strip()


def parse_dom(dom: str) -> _Dom:
    """Parse a dumped DOM."""
    parser = _Dom()
    parser.feed(dom)
    parser.close()
    return parser


@dataclass
class Browsed:
    """What one Chromium visit of the example's status page produced."""

    origin: str
    dom: str
    refreshed: str
    stderr: str
    starts: list[dict[str, Any]]
    pools: dict[str, Any]
    screenshot_started: float


def _keep_busy(server: ServerProcess, stop: threading.Event, path: str, headers: dict[str, str]) -> None:
    """Request ``path`` again and again until ``stop`` is set (a holder, or background load)."""
    with httpx.Client(base_url=server.base_url, timeout=30.0, headers=headers) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                client.get(path)


def _primary_used(server: ServerProcess) -> int:
    pools = httpx.get(f"{server.base_url}/ops/pools", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    return int(next(p for p in pools["pools"] if p["name"] == "primary")["used"])


def _serves(server: ServerProcess) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return bool(server.get("/ops/live").status_code == 200)
    return False


@pytest.fixture(scope="module")
def browsed(pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Browsed:
    """Serve the example on PostgreSQL, hold a connection, and visit /ops/ with Chromium (DOM and screenshot)."""
    chromium()
    work = tmp_path_factory.mktemp("chromium")
    env = clean_env(DATABASE_URL=pg.dsn, SQLSPEC_OPS_TOKEN=TOKEN, LOG_FORMAT="json", POOL_MIN_SIZE="1")
    env["POOL_MAX_SIZE"] = "4"
    for name in ("OTEL_SERVICE_NAME", "ANALYTICS_DATABASE_URL", "ACQUIRE_TIMEOUT"):
        env.pop(name, None)
    command = ["uvicorn", "examples.app:app", "--host", "127.0.0.1", "--port", "{port}"]
    with running_server(command, env) as server:
        server.wait_for(lambda: _serves(server), "the example app to serve /ops/live")
        for n in range(5):  # some history for the percentiles
            created = httpx.post(
                f"{server.base_url}/users", json={"name": f"u{n}", "email": f"{time.time_ns()}@b.test"}, timeout=10
            )
            assert created.status_code == 201, created.text
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_keep_busy, args=(server, stop, "/demo/slow?seconds=10", {"X-Request-ID": HOLDER_ID})
            ),
            threading.Thread(target=_keep_busy, args=(server, stop, "/dashboard", {})),
        ]
        for thread in threads:
            thread.start()
        try:
            server.wait_for(lambda: _primary_used(server) >= 1, "the sleeping request to hold a connection", 30)
            pools = httpx.get(
                f"{server.base_url}/ops/pools", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            ).json()
            # Chromium's way to send HTTP Basic without a prompt; the page itself never carries the token.
            url = f"http://oncall:{TOKEN}@127.0.0.1:{server.port}/ops/"
            dom, stderr, starts = run_chromium(url, work / "dom", "--dump-dom")
            screenshot_started = time.time()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            _, shot_stderr, shot_starts = run_chromium(url, work / "shot", f"--screenshot={SCREENSHOT}")
            # virtual time lets the refresh timer fire twice before the DOM is dumped
            refreshed, refresh_stderr, refresh_starts = run_chromium(
                url, work / "refresh", "--virtual-time-budget=12000", "--dump-dom"
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    return Browsed(
        origin=f"http://127.0.0.1:{server.port}",
        dom=dom,
        refreshed=refreshed,
        stderr=stderr + shot_stderr + refresh_stderr,
        starts=starts + shot_starts + refresh_starts,
        pools=pools,
        screenshot_started=screenshot_started,
    )


def test_dom_shows_pools_readiness_budget_and_the_answering_worker(browsed: Browsed) -> None:
    """Chromium's DOM has the page's outline, both pools, pass words, the held connection and the budget sentence."""
    dom = parse_dom(browsed.dom)
    words = dom.words()
    assert dom.outline == OUTLINE
    assert dom.heads[: len(TABLE_HEADS)] == TABLE_HEADS
    assert re.search(r"Overall: pass .*? primary asyncpg pass [\d.]+ ms analytics asyncpg pass", words), words
    used = re.search(r"Pool primary .*? used (\d+), idle (\d+), max 4", words)
    assert used, words
    assert int(used.group(1)) >= 1  # the sleeping request's connection
    [server] = browsed.pools["budget"]["servers"]
    sentence = (
        f"{server['server']} is within budget: 1 replica(s) \u00d7 1 worker(s) of pools primary, analytics may open "
        f"{server['demand']} connections (min_size alone {server['min_size_demand']}) of a budget of "
        f"{server['budget']} ({server['budget_from']})."
    )
    assert sentence in words
    assert f"served by worker pid {browsed.pools['worker_pid']}." in words
    assert TOKEN not in browsed.dom
    # the refresh toggle is shown by the inline script: the nonce let it run under the CSP
    assert ("p", {"id": "refresh-control"}) in browsed_tags(dom, "p")


def browsed_tags(dom: _Dom, tag: str) -> list[tuple[str, dict[str, str | None]]]:
    """Return the elements named ``tag``."""
    return [(name, attrs) for name, attrs in dom.attrs if name == tag]


def test_page_loads_nothing_from_another_origin(browsed: Browsed) -> None:
    """The network log shows the page loading only itself, the DOM points nowhere else and the CSP refused nothing."""
    loads = loads_of_page(browsed.starts, "http://127.0.0.1")
    assert loads
    assert foreign(loads, browsed.origin) == []
    assert all(url.startswith(f"{browsed.origin}/ops/") for url in loads), loads
    dom = parse_dom(browsed.dom)
    pointers = [v for _, attrs in dom.attrs for k, v in attrs.items() if k in {"src", "href", "action"} and v]
    assert pointers
    assert [p for p in pointers if "//" in p or (":" in p and not p.startswith("data:"))] == []
    assert "Content Security Policy" not in browsed.stderr  # Chromium logs every violation with these words


def test_refresh_swaps_in_a_fresh_page_under_the_csp(browsed: Browsed) -> None:
    """After the refresh timer fired, the page says it was updated and keeps its whole outline."""
    dom = parse_dom(browsed.refreshed)
    assert re.search(r'id="refresh-note"[^>]*>updated ', browsed.refreshed), browsed.refreshed[-2000:]
    assert dom.outline == OUTLINE
    assert "refresh failed" not in dom.words()


def test_network_check_sees_a_page_that_loads_from_elsewhere(tmp_path: Path) -> None:
    """Negative control: the checks above report a page that loads from another origin and breaks its CSP."""

    class _Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (
                b'<!doctype html><title>x</title><img src="http://assets.example.invalid/pixel.png"><script>1</script>'
            )
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Security-Policy", "script-src 'none'")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ARG002 - the base class's signature
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=httpd.serve_forever)
    thread.start()
    try:
        origin = f"http://127.0.0.1:{httpd.server_address[1]}"
        _, stderr, starts = run_chromium(f"{origin}/", tmp_path, "--dump-dom")
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()
    assert foreign(loads_of_page(starts, "http://127.0.0.1"), origin) == ["http://assets.example.invalid/pixel.png"]
    assert "Content Security Policy" in stderr


def test_screenshot_is_regenerated(browsed: Browsed) -> None:
    """The run wrote docs/status-page.png anew: a PNG of the window's size."""
    data = SCREENSHOT.read_bytes()
    assert SCREENSHOT.stat().st_mtime >= browsed.screenshot_started - 1
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == WINDOW


def test_dom_lists_the_sleeping_request_as_holder(browsed: Browsed) -> None:
    """The holders table of the primary pool shows the sleeping request's ID and route, executing."""
    words = parse_dom(browsed.dom).words()
    assert re.search(rf"Pool primary .*?{HOLDER_ID} /demo/slow [\d.]+ (ms|s) executing", words), words
