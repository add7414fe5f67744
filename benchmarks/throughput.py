"""HTTP throughput of the five variants of ``benchmarks/app.py``, measured with wrk on loopback.

Usage::

    .venv/bin/python -m benchmarks.throughput                 # full run (several minutes)
    .venv/bin/python -m benchmarks.throughput --quick         # seconds-long smoke run
    .venv/bin/python -m benchmarks.throughput --profile ops   # py-spy profile of one variant's /users under wrk

It starts a throwaway PostgreSQL (``tests/support/postgres.py``), seeds 1,000 users, starts one real uvicorn per
variant (1 worker, uvloop, httptools, no access log), warms each up, then in every round drives ``/users/{id}``
(random ids) and ``/ping`` with wrk on each variant in turn (order rotated each round so machine drift cancels).
The servers are pinned to one CPU and wrk plus PostgreSQL to the other when the machine has two or more.
Throughput ratios to ``bare`` are medians of per-round ratios; the server's CPU time per request is read from
``/proc`` over each run. Also measured: RSS of ``ops`` vs ``bare`` after
100,000 requests and whether the metric series count grows with distinct request IDs and user IDs.
Results go to ``benchmarks/results/http.json`` and ``benchmarks/results/http.md``.
"""

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.app import VARIANTS  # noqa: E402
from tests.support.postgres import PostgresServer, free_port  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ENDPOINTS = {"users": "/users/1", "ping": "/ping"}
_LUA = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/users/" .. math.random(1, 1000))
end
"""


def _cpus() -> tuple[list[str], list[str]]:
    """Return the taskset prefixes for the server and for the load side."""
    count = os.cpu_count() or 1
    if count < 2 or not _which("taskset"):
        return [], []
    return ["taskset", "-c", "0"], ["taskset", "-c", str(count - 1)]


def _which(name: str) -> bool:
    return subprocess.run(["which", name], capture_output=True, check=False).returncode == 0


class Server:
    """One uvicorn process serving one variant."""

    def __init__(self, variant: str, dsn: str, pin: list[str], *, multiproc_dir: str | None = None) -> None:
        self.variant = variant
        self.port = free_port()
        env = {**os.environ, "BENCH_VARIANT": variant, "DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if multiproc_dir:
            env["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
        command = [
            *pin, sys.executable, "-m", "uvicorn", "--factory", "benchmarks.app:create_app",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, env=env, cwd=ROOT)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"uvicorn for {self.variant} exited with {self.process.returncode}"
                raise RuntimeError(msg)
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        msg = f"uvicorn for {self.variant} did not become ready"
        raise RuntimeError(msg)

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) if match else 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wrk(url: str, path: str, seconds: float, pin: list[str], *, connections: int = 32) -> dict[str, float]:
    """Run wrk once and parse requests/s, p50 and p99 latency (ms) and the request count."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_LUA)
    args = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    if path.startswith("/users"):
        args += ["-s", script.name]
    try:
        out = subprocess.run([*args, url + path], capture_output=True, text=True, check=True).stdout
    finally:
        Path(script.name).unlink(missing_ok=True)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _latency(out, "50%"),
        "p99_ms": _latency(out, "99%"),
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "non_2xx": float(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0.0,
    }


def _latency(out: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)\b", out)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


async def _seed(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS users (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL)"
        )
        await connection.execute("TRUNCATE users")
        await connection.executemany(
            "INSERT INTO users VALUES ($1, $2, $3)", [(i, f"user {i}", f"user{i}@example.com") for i in range(1, 1001)]
        )
    finally:
        await connection.close()


def _series_count(url: str) -> int:
    with urllib.request.urlopen(url + "/ops/metrics", timeout=5) as response:  # noqa: S310
        return sum(1 for line in response.read().decode().splitlines() if line and not line.startswith("#"))


def throughput(dsn: str, rounds: int, seconds: float, variants: tuple[str, ...]) -> dict[str, Any]:
    """Measure every variant on every endpoint, interleaved: all servers up at once, order rotated each round.

    Each variant's uvicorn runs for the whole measurement (idle ones only sleep), so the runs of one round are
    seconds apart and a round's ratios compare variants under the same machine conditions. Besides wrk's
    requests/s, the server's own CPU time per request is read from ``/proc`` over each run: on a machine shared
    with other work it moves less than throughput does.
    """
    server_pin, load_pin = _cpus()
    per_round: list[dict[str, dict[str, dict[str, float]]]] = []
    servers: dict[str, Server] = {}
    try:
        for variant in variants:
            servers[variant] = Server(variant, dsn, server_pin)
            for path in ENDPOINTS.values():
                wrk(servers[variant].url, path, min(2.0, seconds), load_pin)  # warm-up
        for round_index in range(rounds):
            order = variants[round_index % len(variants) :] + variants[: round_index % len(variants)]
            results: dict[str, dict[str, dict[str, float]]] = {variant: {} for variant in variants}
            for name, path in ENDPOINTS.items():
                for variant in order:
                    server = servers[variant]
                    cpu = _cpu_seconds(server.process.pid)
                    run = wrk(server.url, path, seconds, load_pin)
                    run["cpu_us"] = (_cpu_seconds(server.process.pid) - cpu) / max(run["requests"], 1.0) * 1e6
                    results[variant][name] = run
            per_round.append(results)
            print(f"round {round_index + 1}: " + "; ".join(
                f"{v} " + ", ".join(f"{n} {r['rps']:.0f} req/s {r['cpu_us']:.0f} µs" for n, r in results[v].items())
                for v in variants
            ), flush=True)  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    summary: dict[str, Any] = {}
    for variant in variants:
        summary[variant] = {}
        for name in ENDPOINTS:
            runs = [r[variant][name] for r in per_round]
            ratios = [r[variant][name]["rps"] / r["bare"][name]["rps"] for r in per_round] if "bare" in variants else []
            summary[variant][name] = {
                "rps": statistics.median(x["rps"] for x in runs),
                "p50_ms": statistics.median(x["p50_ms"] for x in runs),
                "p99_ms": statistics.median(x["p99_ms"] for x in runs),
                "cpu_us": statistics.median(x["cpu_us"] for x in runs),
                "ratio_to_bare": statistics.median(ratios) if ratios else None,
                "round_ratios": [round(x, 3) for x in ratios],
                "non_2xx": sum(x["non_2xx"] for x in runs),
            }
    return {"rounds": per_round, "summary": summary}


def memory(dsn: str, total_requests: int) -> dict[str, Any]:
    """RSS of ``ops`` and ``bare`` after ``total_requests`` requests, and the ops metric series count."""
    server_pin, load_pin = _cpus()
    out: dict[str, Any] = {}
    for variant in ("bare", "ops"):
        server = Server(variant, dsn, server_pin)
        try:
            wrk(server.url, "/users/1", 1.0, load_pin)
            series_before = _series_count(server.url) if variant == "ops" else None
            rss_before = server.rss_kib()
            done = 0.0
            while done < total_requests:
                done += wrk(server.url, "/users/1", 5.0, load_pin)["requests"]
            entry: dict[str, Any] = {
                "requests": int(done),
                "rss_before_mib": round(rss_before / 1024, 1),
                "rss_after_mib": round(server.rss_kib() / 1024, 1),
            }
            if variant == "ops":
                entry["metric_series_before"] = series_before
                entry["metric_series_after"] = _series_count(server.url)
            out[variant] = entry
        finally:
            server.stop()
    out["rss_growth_ops_over_bare_mib"] = round(out["ops"]["rss_after_mib"] - out["bare"]["rss_after_mib"], 1)
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def profile(dsn: str, variant: str, seconds: float, top: int) -> None:
    """Sample one variant's server with py-spy while wrk drives ``/users``; print CPU µs per request by function.

    A function's figure is its share of the samples (inclusive: with everything it calls; self: its own lines)
    times the server's CPU time per request, measured from ``/proc`` over the same window.
    """
    server_pin, load_pin = _cpus()
    server = Server(variant, dsn, server_pin)
    try:
        wrk(server.url, "/users/1", 2.0, load_pin)  # warm-up
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "stacks.txt"
            # py-spy sits beside the interpreter in a venv that is not activated
            beside = Path(sys.executable).with_name("py-spy")
            spy_command = str(beside) if beside.exists() else "py-spy"
            spy = subprocess.Popen([
                spy_command, "record", "--pid", str(server.process.pid), "--rate", "997", "--format", "raw",
                "--output", str(raw), "--duration", str(round(seconds)), "--nonblocking",
            ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            time.sleep(0.5)
            cpu = _cpu_seconds(server.process.pid)
            done = wrk(server.url, "/users/1", seconds - 1, load_pin)["requests"]
            cpu = _cpu_seconds(server.process.pid) - cpu
            spy.wait()
            stacks = raw.read_text().splitlines()
    finally:
        server.stop()
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in stacks:
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        # "function (path/file.py:line)" -> "function file.py": one entry per function, whatever the line
        frames = [
            f"{frame.split(' (', 1)[0]} {frame.rsplit('/', 1)[-1].split(':', 1)[0]}" for frame in stack.split(";")
        ]
        total += count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    per_request = cpu / done * 1e6
    print(f"{variant}: {done:.0f} requests, server CPU {per_request:.0f} µs per request, {total} samples")
    for title, table in (("inclusive", inclusive), ("self", own)):
        print(f"-- {title} µs per request")
        for frame, count in sorted(table.items(), key=lambda item: -item[1])[:top]:
            print(f"{count / total * per_request:8.1f}  {frame}")


def _markdown(data: dict[str, Any]) -> str:
    lines = [
        (
            f"Measured {data['measured_at']} on {data['machine']} ({data['rounds']} interleaved rounds x "
            f"{data['seconds']} s per variant and endpoint, wrk -t1 -c32, uvicorn 1 worker + uvloop + httptools, "
            "server and load on different CPUs; ratio = median of the rounds' ratios, listed under rounds)."
        ),
        "",
        (
            "| variant | /users req/s | ratio | rounds | server CPU µs | p50 ms | p99 ms "
            "| /ping req/s | ratio | rounds | server CPU µs | p50 ms | p99 ms |"
        ),
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for variant, endpoints in data["throughput"]["summary"].items():
        cells = []
        for name in ENDPOINTS:
            e = endpoints[name]
            ratio = f"{e['ratio_to_bare']:.2f}x" if e["ratio_to_bare"] is not None else "-"
            spread = " ".join(f"{x:.2f}" for x in e.get("round_ratios", []))
            cells += [f"{e['rps']:.0f}", ratio, spread, f"{e['cpu_us']:.0f}"]
            cells += [f"{e['p50_ms']:.2f}", f"{e['p99_ms']:.2f}"]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    if "memory" in data:
        mem = data["memory"]
        lines += [
            "",
            (
                f"RSS after {mem['ops']['requests']:,} requests: bare {mem['bare']['rss_after_mib']} MiB, "
                f"ops {mem['ops']['rss_after_mib']} MiB "
                f"(growth of ops over bare: {mem['rss_growth_ops_over_bare_mib']} MiB); "
                f"ops metric series {mem['ops']['metric_series_before']} before, "
                f"{mem['ops']['metric_series_after']} after (distinct request and user IDs add none)."
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (1 round, 1 s, no memory)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--profile", choices=VARIANTS, help="py-spy profile of one variant's /users instead")
    parser.add_argument("--top", type=int, default=60, help="functions listed by --profile")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.memory_requests = 1, 1.0, 0
    variants = tuple(v for v in args.variants.split(",") if v)
    if not _which("wrk"):
        print("wrk not found: install Debian's 'wrk' package (scripts/test does)", file=sys.stderr)
        return 2
    with PostgresServer(max_connections=100) as pg:
        _, load_pin = _cpus()
        if load_pin and pg.pid is not None:
            subprocess.run(["taskset", "-a", "-pc", load_pin[-1], str(pg.pid)], capture_output=True, check=False)
        asyncio.run(_seed(pg.dsn))
        if args.profile:
            profile(pg.dsn, args.profile, max(args.seconds, 3.0), args.top)
            return 0
        data: dict[str, Any] = {
            "measured_at": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
            "rounds": args.rounds,
            "seconds": args.seconds,
            "throughput": throughput(pg.dsn, args.rounds, args.seconds, variants),
        }
        if args.memory_requests:
            data["memory"] = memory(pg.dsn, args.memory_requests)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = "http-quick" if args.quick else "http"
    (args.output / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.output / f"{stem}.md").write_text(_markdown(data))
    print(_markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
