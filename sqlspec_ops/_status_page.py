"""The HTML status page at ``{prefix}/``: one self-contained document for the person on call.

:func:`render_status_page` is a pure function of the ``/ready`` and ``/pools`` JSON bodies. Every value in them
is data (pool names, routes, statement summaries, error outputs come from the app and its clients), so every
value goes through :func:`html.escape`; every key may be missing or of an odd type and renders as "n/a" instead
of failing the page during the incident it is meant for. The page loads nothing: the styles and the optional
refresh script are inline, allowed by the response's CSP nonce, and the utilisation bars are inline SVG. Every
colour has a word beside it. Without JavaScript the page shows everything; the script only refreshes it.
"""

import html
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ("DEFAULT_SERVICE", "render_status_page", "service_name")

DEFAULT_SERVICE = "sqlspec-ops"
_FASTAPI_DEFAULT_TITLE = "FastAPI"
_NA = "n/a"
_STATES = frozenset({"pass", "warn", "fail"})
_LAG_WARN_MS = 100.0  # a loop blocked this long delays every request on the worker: worth a word
_PERCENTILES = ("p50", "p95", "p99", "max")

_STYLE = """
:root{color-scheme:light dark;--fg:#1b1f24;--muted:#5b6470;--bg:#fff;--line:#d5d9de;--pass:#1a7f37;
--warn:#9a6700;--fail:#cf222e;--used:#0969da;--idle:#8fb9ea;--free:#eaeef2}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9aa4ae;--bg:#0d1117;--line:#30363d;
--pass:#3fb950;--warn:#d29922;--fail:#f85149;--used:#2f81f7;--idle:#1f4b82;--free:#21262d}}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg);
margin:0 auto;max-width:72rem;padding:.75rem}
h1{font-size:1.35rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.4rem 0 .4rem;border-bottom:1px solid var(--line)}
h3{font-size:1.05rem;margin:1rem 0 .3rem}h4{font-size:.95rem;margin:.8rem 0 .3rem}
p{margin:.3rem 0}.muted{color:var(--muted)}code{font-size:.9em;overflow-wrap:anywhere}
.scroll{overflow-x:auto}table{border-collapse:collapse;min-width:100%;font-size:.9rem}
th,td{border-bottom:1px solid var(--line);padding:.25rem .5rem;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.n{white-space:nowrap}td.n .flag{display:block;white-space:normal}
@media (max-width:40rem){th,td{padding:.2rem .3rem}article{padding:.2rem .45rem .5rem}body{padding:.5rem}}
.st{font-weight:600;padding:0 .35rem;border-radius:.25rem;border:1px solid currentColor}
.st-pass{color:var(--pass)}.st-warn{color:var(--warn)}.st-fail{color:var(--fail)}.st-unknown{color:var(--muted)}
tr.leak td{background:color-mix(in srgb,var(--fail) 14%,transparent)}
.flag,.reason{color:var(--fail);font-weight:600}
svg.bar{display:block;width:100%;max-width:36rem;height:1rem;margin:.3rem 0}
.b-used{fill:var(--used)}.b-idle{fill:var(--idle)}.b-free{fill:var(--free)}
.key{display:inline-block;width:.8em;height:.8em;margin:0 .25em 0 .6em;vertical-align:-.05em}
article{border:1px solid var(--line);border-radius:.4rem;padding:.2rem .75rem .6rem;margin:.6rem 0}
#refresh-control{font-size:.9rem}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
"""

_SCRIPT = """
(function () {
  var control = document.getElementById("refresh-control");
  var box = document.getElementById("refresh");
  var note = document.getElementById("refresh-note");
  var key = "sqlspec-ops-refresh";
  control.hidden = false;
  try { box.checked = sessionStorage.getItem(key) !== "off"; } catch (e) { box.checked = true; }
  box.addEventListener("change", function () {
    try { sessionStorage.setItem(key, box.checked ? "on" : "off"); } catch (e) {}
    note.textContent = box.checked ? "" : "paused";
  });
  setInterval(function () {
    if (!box.checked || document.hidden) { return; }
    // origin + path: a URL typed with user:password@ would otherwise make the relative request invalid
    var url = location.origin + location.pathname;
    fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.text();
    }).then(function (text) {
      // only <main>: parsing the new <head> would check its style against this page's nonce (and complain)
      var main = text.slice(text.indexOf("<main"), text.lastIndexOf("</main>") + 7);
      var fresh = new DOMParser().parseFromString(main, "text/html").getElementById("content");
      if (!fresh) { throw new Error("no content"); }
      document.getElementById("content").replaceWith(document.adoptNode(fresh));
      note.textContent = "updated " + new Date().toLocaleTimeString();
    }).catch(function (error) {
      note.textContent = "refresh failed (" + error.message + "): showing the page from before";
    });
  }, __INTERVAL_MS__);
})();
"""

# Hidden until the script shows it: without JavaScript there is nothing to toggle.
_REFRESH_CONTROL = """<p id="refresh-control" hidden><label><input type="checkbox" id="refresh" checked> refresh every \
{every}</label> <span id="refresh-note" class="muted" aria-live="polite"></span></p>
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<link rel="icon" href="data:,">
<style nonce="{nonce}">{style}</style>
</head>
<body>
<header>
<h1>{service}: database status</h1>
{refresh}</header>
<main id="content">
{readiness}
{pools}
{budget}
{loop}
{workers}
<p class="muted">Machine-readable: <a href="ready">ready</a> · <a href="pools">pools</a> ·
<a href="metrics">metrics</a></p>
</main>
{script}
</body>
</html>
"""


def service_name(*, title: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """Name the service on the page: ``OTEL_SERVICE_NAME``, else the app's title unless FastAPI's default.

    Args:
        title: The app's title.
        environ: Environment to read (default: ``os.environ``).

    Returns:
        The name (``sqlspec-ops`` when nothing names the service).

    """
    env = os.environ if environ is None else environ
    configured = env.get("OTEL_SERVICE_NAME", "").strip()
    if configured:
        return configured
    if title and title.strip() and title != _FASTAPI_DEFAULT_TITLE:
        return title.strip()
    return DEFAULT_SERVICE


def render_status_page(
    *,
    service: str,
    health: dict[str, Any],
    pools: dict[str, Any],
    nonce: str,
    refresh_seconds: float | None,
) -> str:
    """Render the whole page.

    Args:
        service: The service's name (in the ``<title>`` and the heading).
        health: The ``/ready`` body (``application/health+json``).
        pools: The ``/pools`` body.
        nonce: The CSP nonce that allows the inline style and script (fresh per response).
        refresh_seconds: How often the script refreshes the page; None leaves the script out.

    Returns:
        The HTML document.

    """
    interval = _number(refresh_seconds)
    script = ""
    if interval is not None and interval > 0:
        # max() keeps a tiny value from hammering the endpoint; the interval is a number, never user text
        code = _SCRIPT.replace("__INTERVAL_MS__", str(max(1000, int(interval * 1000))))
        script = f'<script nonce="{_e(nonce)}">{code}</script>'
    body = _dict(pools)
    return _PAGE.format(
        title=_e(f"{service}: database status"),
        service=_e(service),
        nonce=_e(nonce),
        style=_STYLE,
        refresh=_REFRESH_CONTROL.format(every=_e(_seconds(interval))) if script else "",
        readiness=_readiness(_dict(health)),
        pools=_pools(body),
        budget=_budget(body),
        loop=_loop(body),
        workers=_workers(body),
        script=script,
    )


# -- sections -------------------------------------------------------------------------------------------


def _readiness(health: dict[str, Any]) -> str:
    rows = []
    for key, entries in _dict(health.get("checks")).items():
        name = str(key).removesuffix(":connections")
        for check in _list(entries) or [{}]:
            entry = _dict(check)
            rows.append(
                _row(
                    [
                        _e(name),
                        _text(entry.get("adapter")),
                        _state(entry.get("status")),
                        _ms(entry.get("observedValue")),
                        _text(entry.get("output"), empty=""),
                    ],
                    header=True,
                    numeric={3},
                )
            )
    table = (
        _table("Readiness per database", ["Database", "Adapter", "Status", "Ping", "Output"], rows, numeric={3})
        if rows
        else "<p>No database is checked.</p>"
    )
    # A reason at the top level is why the whole instance is out of rotation (ops.refusing_traffic): say it first.
    output = health.get("output")
    reason = f' <span class="reason">Refusing traffic: {_e(str(output))}</span>' if output else ""
    return (
        '<section aria-labelledby="h-ready"><h2 id="h-ready">Readiness</h2>'
        f"<p>Overall: {_state(health.get('status'))}{reason}</p>{table}</section>"
    )


def _pools(body: dict[str, Any]) -> str:
    pools = [_dict(p) for p in _list(body.get("pools"))]
    articles = "".join(_pool(pool, index) for index, pool in enumerate(pools)) or "<p>No pool is configured.</p>"
    return f'<section aria-labelledby="h-pools"><h2 id="h-pools">Pools</h2>{articles}</section>'


def _pool(pool: dict[str, Any], index: int) -> str:
    heading = f"p{index}"
    parts = [
        f'<article aria-labelledby="{heading}"><h3 id="{heading}">Pool {_text(pool.get("name"))}</h3>',
        f'<p class="muted">{_text(pool.get("adapter"))} · {_text(pool.get("target"))}</p>',
    ]
    parts.extend(f'<p class="flag">Problem: {_e(problem)}</p>' for problem in _list(pool.get("problems")))
    if pool.get("note") is not None:
        parts.append(f"<p>{_e(pool['note'])}</p>")
    if "max_size" in pool or "used" in pool:
        parts.append(_utilisation(pool))
        parts.append(_timings(pool))
    parts.append(_holders(pool))
    parts.append(_server_view(pool.get("server")))
    parts.append("</article>")
    return "".join(parts)


def _utilisation(pool: dict[str, Any]) -> str:
    used, idle, size, pending = (_number(pool.get(k)) for k in ("used", "idle", "size", "pending"))
    maximum = _number(pool.get("max_size"))
    bar = ""
    if maximum is not None and maximum > 0 and used is not None:
        used_w = _clamp(used / maximum * 100)
        idle_w = _clamp((idle or 0) / maximum * 100, 100 - used_w)
        label = f"{_count(used)} used, {_count(idle)} idle of at most {_count(maximum)}"
        bar = (
            f'<svg class="bar" viewBox="0 0 100 4" preserveAspectRatio="none" role="img" aria-label="{_e(label)}">'
            f'<rect class="b-free" x="0" y="0" width="100" height="4"/>'
            f'<rect class="b-used" x="0" y="0" width="{used_w:.2f}" height="4"/>'
            f'<rect class="b-idle" x="{used_w:.2f}" y="0" width="{idle_w:.2f}" height="4"/></svg>'
        )
    saturated = used is not None and maximum is not None and maximum > 0 and used >= maximum
    state = _state("warn", "saturated") if saturated else ""
    if pending is not None and pending > 0:
        state += " " + _state("warn", "callers waiting")
    timeout = pool.get("acquire_timeout_s")
    timeout_text = "waits without limit" if timeout is None else f"acquire timeout {_seconds(_number(timeout))}"
    return (
        f"{bar}<p>"
        f'<svg class="key" aria-hidden="true"><rect class="b-used" width="100%" height="100%"/></svg>used '
        f"<strong>{_count(used)}</strong>, "
        f'<svg class="key" aria-hidden="true"><rect class="b-idle" width="100%" height="100%"/></svg>idle '
        f"<strong>{_count(idle)}</strong>, "
        f'<svg class="key" aria-hidden="true"><rect class="b-free" width="100%" height="100%"/></svg>max '
        f"<strong>{_count(maximum)}</strong> (open {_count(size)}, min {_count(pool.get('min_size'))}) · "
        f"pending <strong>{_count(pending)}</strong> · timeouts <strong>{_count(pool.get('timeouts'))}</strong> "
        f"({_e(timeout_text)}) · acquires {_count(pool.get('acquires'))} {state}</p>"
    )


def _timings(pool: dict[str, Any]) -> str:
    rows = []
    for label, key in (("Acquire wait", "acquire_wait_ms"), ("Hold time", "hold_time_ms")):
        stats = _dict(pool.get(key))
        cells = [_e(label), *(_ms(stats.get(p)) for p in _PERCENTILES), _count(stats.get("samples"))]
        rows.append(_row(cells, header=True, numeric={1, 2, 3, 4, 5}))
    columns = ["", "p50", "p95", "p99", "max", "samples"]
    return _table("Recent acquire waits and hold times", columns, rows, numeric={1, 2, 3, 4, 5})


def _holders(pool: dict[str, Any]) -> str:
    title = "<h4>Connections held now</h4>"
    holders = pool.get("holders")
    if not isinstance(holders, list):
        return f"{title}<p>Holders: {_NA}</p>"
    if not holders:
        return f"{title}<p>No connection is held right now.</p>"
    threshold = _number(pool.get("leak_threshold_s"))
    entries = sorted((_dict(h) for h in holders), key=lambda h: -(_number(h.get("held_ms")) or 0.0))
    rows = []
    for holder in entries:
        held = _number(holder.get("held_ms"))
        leaked = threshold is not None and held is not None and held / 1000 > threshold
        held_text = _ms(held)
        if leaked:
            held_text += f' <span class="flag">past leak threshold ({_e(_seconds(threshold))})</span>'
        cells = [
            _code(holder.get("request_id")),
            _code(holder.get("route")),
            held_text,
            _text(holder.get("state")),
            _count(holder.get("statements")),
            _ms(holder.get("db_time_ms")),
            _code(holder.get("current_statement")),
            _code(holder.get("acquired_at")),
        ]
        rows.append(_row(cells, numeric={2, 4, 5}, css="leak" if leaked else None))
    note = (
        f'<p class="muted">Leak threshold {_e(_seconds(threshold))}.</p>'
        if threshold is not None
        else '<p class="muted">Leak detection is off.</p>'
    )
    columns = ["Request ID", "Route", "Held", "State", "Statements", "DB time", "Current statement", "Acquired at"]
    return title + note + _table("Connections held now, oldest first", columns, rows, numeric={2, 4, 5})


def _server_view(server: object) -> str:
    title = "<h4>What the database sees</h4>"
    if not isinstance(server, dict):
        return f"{title}<p>Server view: {_NA}</p>"
    if server.get("error") is not None:
        return f"{title}<p>{_state('warn', 'unavailable')} {_e(server['error'])}</p>"
    this_app = _dict(server.get("this_app"))
    by_state = ", ".join(f"{_e(state)} {_count(n)}" for state, n in this_app.items()) or "none"
    oldest = _number(server.get("oldest_transaction_s"))
    rows = [
        _row(["This app's connections by state", by_state], header=True),
        _row(["Other clients' connections", _count(server.get("other_clients"))], header=True),
        _row(["Idle in transaction", _count(server.get("idle_in_transaction"))], header=True),
        _row(["Oldest open transaction", "none open" if oldest is None else _e(_seconds(oldest))], header=True),
        _row(["Waiting on a lock", _count(server.get("waiting_on_lock"))], header=True),
    ]
    return title + _table("What the database sees", ["", "Now"], rows)


def _budget(body: dict[str, Any]) -> str:
    report = _dict(body.get("budget"))
    servers = [_dict(s) for s in _list(report.get("servers"))]
    if not servers:  # fall back to the verdicts next to each pool, one per server
        seen: dict[str, dict[str, Any]] = {}
        for pool in _list(body.get("pools")):
            verdict = _dict(_dict(pool).get("budget"))
            if verdict.get("server") is not None:
                seen.setdefault(str(verdict["server"]), verdict)
        servers = list(seen.values())
    lines = [f"<p>{_budget_sentence(server)}</p>" for server in servers]
    lines.extend(
        f"<p>{_text(_dict(p).get('target'))}: no server limit (pool {_text(_dict(p).get('name'))}).</p>"
        for p in _list(report.get("no_server_limit"))
    )
    text = "".join(lines) or f"<p>Connection budget: {_NA}</p>"
    return f'<section aria-labelledby="h-budget"><h2 id="h-budget">Connection budget</h2>{text}</section>'


def _budget_sentence(server: dict[str, Any]) -> str:
    verdict = server.get("verdict")
    name = _text(server.get("server"))
    workers = _dict(server.get("workers")).get("count")
    fleet = (
        f"{_count(server.get('replicas'))} replica(s) &times; {_count(workers)} worker(s) of pools "
        f"{_e(', '.join(str(p) for p in _list(server.get('pools')))) or _NA}"
    )
    demand = _count(server.get("demand"))
    if verdict == "within budget":
        word = _state("pass", "within budget")
    elif verdict == "oversubscribed":
        word = _state("fail", "oversubscribed")
    else:
        error = _text(server.get("error"))
        return (
            f"{name}: {_state('warn', 'unknown')}: {fleet} may open {demand} connections; "
            f"the server's limits could not be read ({error})."
        )
    sentence = (
        f"{name} is {word}: {fleet} may open {demand} connections (min_size alone "
        f"{_count(server.get('min_size_demand'))}) of a budget of {_count(server.get('budget'))} "
        f"({_text(server.get('budget_from'))})"
    )
    if server.get("other_clients") is not None:
        sentence += f", with {_count(server.get('other_clients'))} connections of other clients counted against it"
    sentence += "."
    if verdict == "oversubscribed":
        sentence += (
            f" Largest max_size that fits: {_count(server.get('max_size_that_fits'))}; "
            f"workers that fit: {_count(server.get('workers_that_fit'))}."
        )
    return sentence


def _loop(body: dict[str, Any]) -> str:
    lag = _number(body.get("event_loop_lag_ms"))
    if lag is None:
        text = f"Recent maximum event-loop lag on this worker: {_NA}."
    else:
        word = (
            _state("warn", "blocked") + " slow code is holding the loop (not the database)"
            if lag >= _LAG_WARN_MS
            else _state("pass", "ok")
        )
        text = f"Recent maximum event-loop lag on this worker: <strong>{_ms(lag)}</strong> {word}."
    return f'<section aria-labelledby="h-loop"><h2 id="h-loop">Event loop</h2><p>{text}</p></section>'


def _workers(body: dict[str, Any]) -> str:
    report = _dict(body.get("budget"))
    workers = _dict(report.get("workers"))
    count = (
        f"{_count(workers.get('count'))} worker(s) per replica (from {_text(workers.get('source'))}) &times; "
        f"{_count(report.get('replicas'))} replica(s)."
        if workers
        else f"Workers: {_NA}."
    )
    scope = body.get("scope")
    answered = f"This page was served by worker pid <strong>{_count(body.get('worker_pid'))}</strong>."
    return (
        f'<section aria-labelledby="h-workers"><h2 id="h-workers">Workers</h2><p>{count}</p><p>{answered}'
        f"{' ' + _e(scope[:1].upper() + scope[1:]) + '.' if isinstance(scope, str) and scope else ''}</p></section>"
    )


# -- small helpers (each returns escaped HTML) ----------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _clamp(value: float, upper: float = 100.0) -> float:
    return max(0.0, min(upper, value))


def _count(value: object) -> str:
    number = _number(value)
    if number is None:
        return _NA
    return str(int(number)) if number.is_integer() else f"{number:.1f}"


def _ms(value: object) -> str:
    number = _number(value)
    if number is None:
        return _NA
    if number >= 1000:  # noqa: PLR2004 - a second and more reads better in seconds
        return f"{number / 1000:.2f} s"
    return f"{number:.2f} ms" if number < 1 else f"{number:.1f} ms"


def _seconds(value: float | None) -> str:
    if value is None:
        return _NA
    return f"{value:g} s"


def _text(value: object, *, empty: str = _NA) -> str:
    if value is None or value == "":
        return empty
    return _e(value)


def _code(value: object) -> str:
    return _NA if value is None or value == "" else f"<code>{_e(value)}</code>"


def _state(value: object, word: str | None = None) -> str:
    """Render a state as a coloured badge that carries its word (colour is never the only signal)."""
    state = value if isinstance(value, str) and value in _STATES else "unknown"
    text = word if word is not None else (value if isinstance(value, str) and value else _NA)
    return f'<span class="st st-{state}">{_e(text)}</span>'


def _row(
    cells: Iterable[str],
    *,
    header: bool = False,
    numeric: frozenset[int] | set[int] = frozenset(),
    css: str | None = None,
) -> str:
    """Render a row of already escaped cells; with ``header`` the first cell is the row's header."""
    out = []
    for index, cell in enumerate(cells):
        if header and index == 0:
            out.append(f'<th scope="row">{cell}</th>')
        else:
            out.append(f'<td class="n">{cell}</td>' if index in numeric else f"<td>{cell}</td>")
    attrs = f' class="{css}"' if css else ""
    return f"<tr{attrs}>{''.join(out)}</tr>"


def _table(
    caption: str, columns: Iterable[str], rows: Iterable[str], *, numeric: frozenset[int] | set[int] = frozenset()
) -> str:
    head = "".join(
        f'<th scope="col" class="n">{_e(c)}</th>' if i in numeric else f'<th scope="col">{_e(c)}</th>'
        for i, c in enumerate(columns)
    )
    return (
        f'<div class="scroll"><table><caption class="sr">{_e(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
