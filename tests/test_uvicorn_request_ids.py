"""Through a real uvicorn process: under 200 concurrent requests every log line carries its own request's ID.

The example app runs on PostgreSQL with SQLSpec's statement lines on; the waves are POSTs (each with a
background task), GETs, header-less pings, a WebSocket connection and a failing request.
"""

import asyncio
import json
import re
import signal
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.support.postgres import APP_PASSWORD, PostgresServer
from tests.support.processes import clean_env, running_server

pytestmark = pytest.mark.slow

CONCURRENCY = 200
_AUDIT = re.compile(r"audit user\.created for user (\d+) written")
_ACCESS = re.compile(r'"(GET|POST|PUT|DELETE) (\S+) HTTP/1\.1" (\d+)')


def _parse(output: str) -> list[dict[str, Any]]:
    """Every line after the app configured logging is a JSON object; return them in order."""
    raw = output.splitlines()
    first = next(i for i, line in enumerate(raw) if line.startswith("{"))
    lines = []
    for line in raw[first:]:
        value = json.loads(line)  # fails the test on any line outside the JSON pipeline
        assert isinstance(value, dict)
        lines.append(value)
    return lines


async def _waves(base_url: str, run: str) -> dict[str, Any]:
    """Send the request waves; return what the analysis needs (IDs sent, users created, IDs generated)."""
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)  # connections carry many requests
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0, limits=limits) as client:
        posts = await asyncio.gather(
            *(
                client.post(
                    "/users",
                    json={"name": f"user {i}", "email": f"{run}-{i}@example.test"},
                    headers={"X-Request-ID": f"post-{run}-{i}"},
                )
                for i in range(CONCURRENCY)
            )
        )
        user_request: dict[int, str] = {}
        for i, response in enumerate(posts):
            assert response.status_code == 201, response.text
            assert response.headers["x-request-id"] == f"post-{run}-{i}"
            user_request[response.json()["id"]] = f"post-{run}-{i}"

        users = list(user_request)
        gets = await asyncio.gather(
            *(
                client.get(f"/users/{user_id}", headers={"X-Request-ID": f"get-{run}-{i}"})
                for i, user_id in enumerate(users)
            )
        )
        read_request: dict[int, str] = {}
        for i, (user_id, response) in enumerate(zip(users, gets, strict=True)):
            assert response.status_code == 200
            assert response.headers["x-request-id"] == f"get-{run}-{i}"
            read_request[user_id] = f"get-{run}-{i}"

        pings = await asyncio.gather(*(client.get("/ping") for _ in range(50)))
        generated = [response.headers["x-request-id"] for response in pings]
        assert [response.json()["request_id"] for response in pings] == generated

        ws_url = base_url.replace("http://", "ws://") + "/ws"
        async with connect(ws_url, additional_headers={"X-Request-ID": f"ws-{run}"}) as socket:
            assert socket.response is not None
            assert socket.response.headers["x-request-id"] == f"ws-{run}"
            await socket.send("hello")
            reply = json.loads(await socket.recv())
            assert reply["echo"] == "hello"
            assert reply["request_id"] == f"ws-{run}"

        failed = await client.get("/demo/fail", headers={"X-Request-ID": f"fail-{run}"})
        assert failed.status_code == 500
        assert failed.headers["x-request-id"] == f"fail-{run}"
    return {"user_request": user_request, "read_request": read_request, "generated": generated}


def _serve_example(pg: PostgresServer, run: str) -> tuple[dict[str, Any], str]:
    """Run the example under uvicorn through the waves, stop it gracefully; return what was sent and its output."""
    env = clean_env(
        DATABASE_URL=pg.dsn,
        POOL_MIN_SIZE="1",
        POOL_MAX_SIZE="5",
        LOG_FORMAT="json",
        PRINT_SQL="1",
        PYTHONUNBUFFERED="1",
    )
    command = ["uvicorn", "examples.app:app", "--host", "127.0.0.1", "--port", "{port}"]
    with running_server(command, env) as server:
        server.wait_for(lambda: "Application startup complete." in server.output(), "startup")
        sent = asyncio.run(_waves(server.base_url, run))

        def audits_written() -> bool:
            return server.output().count("audit user.created for user") >= CONCURRENCY

        server.wait_for(audits_written, "the background audit tasks", timeout=60)
        server.process.send_signal(signal.SIGTERM)  # graceful: the shutdown lines belong to no request
        server.process.wait(timeout=30)
        return sent, server.output()


def test_every_log_line_carries_its_requests_id(pg: PostgresServer) -> None:
    """200 concurrent POSTs, 200 GETs, 50 header-less requests, a WebSocket: no line lacks, swaps or reuses an ID."""
    run = uuid.uuid4().hex[:8]
    sent, output = _serve_example(pg, run)
    lines = _parse(output)
    user_request: dict[int, str] = sent["user_request"]
    read_request: dict[int, str] = sent["read_request"]
    generated: list[str] = sent["generated"]
    post_ids = set(user_request.values())
    get_ids = set(read_request.values())

    # Lifecycle lines (startup, shutdown) belong to no request; every line in between belongs to one.
    start = next(i for i, line in enumerate(lines) if line["event"].startswith("Uvicorn running on"))
    stop = next(i for i, line in enumerate(lines) if line["event"] == "Shutting down")
    assert not [line for line in lines[:start] if "request_id" in line]
    serving = lines[start + 1 : stop]
    assert serving
    assert not [line for line in serving if "request_id" not in line][:5]

    def ids_of(predicate: Any) -> Counter[str]:
        return Counter(line["request_id"] for line in serving if predicate(line))

    def statement(text: str) -> Any:
        return lambda line: line["logger"] == "sqlspec.sql" and line.get("db.statement", "").startswith(text)

    # Each statement line carries a different ID of its wave, each ID exactly once: no swap, no loss.
    assert ids_of(statement("INSERT INTO users")) == Counter(post_ids)
    assert ids_of(statement("INSERT INTO audit_log")) == Counter(post_ids)
    assert ids_of(statement("SELECT id, name, email FROM users WHERE id")) == Counter(get_ids)

    # App lines name their user, so each can be matched to the exact request that produced it.
    created = [line for line in serving if line["event"] == "user.created"]
    assert len(created) == CONCURRENCY
    assert all(line["request_id"] == user_request[line["user_id"]] for line in created)
    read = [line for line in serving if line["event"] == "user.read"]
    assert len(read) == CONCURRENCY
    assert all(line["request_id"] == read_request[line["user_id"]] for line in read)
    audits = [(line, _AUDIT.search(line["event"])) for line in serving if line["logger"] == "examples.app.audit"]
    assert len(audits) == CONCURRENCY
    assert all(match and line["request_id"] == user_request[int(match[1])] for line, match in audits)

    # uvicorn's access lines: the path names the user for GETs; POSTs and pings are matched as multisets.
    access = [(line, _ACCESS.search(line["event"])) for line in serving if line["logger"] == "uvicorn.access"]
    reads = {match[2]: line["request_id"] for line, match in access if match and match[2].startswith("/users/")}
    assert reads == {f"/users/{user_id}": request_id for user_id, request_id in read_request.items()}
    assert Counter(line["request_id"] for line, m in access if m and m[1] == "POST") == Counter(post_ids)
    assert Counter(line["request_id"] for line, m in access if m and m[2] == "/ping") == Counter(generated)

    # Generated IDs are fresh every time: never a previous request's ID.
    assert len(set(generated)) == len(generated)
    assert not set(generated) & (post_ids | get_ids)

    # The WebSocket connection: its statement and its app line.
    assert ids_of(statement("SELECT count(*) FROM users")) == Counter([f"ws-{run}"])
    assert [line["request_id"] for line in serving if line["event"] in {"ws.message", "ws.closed"}] == [f"ws-{run}"] * 2

    # The failed request: its statement error and uvicorn's traceback line both carry its ID.
    [crash] = [line for line in serving if line["event"].startswith("Exception in ASGI application")]
    assert crash["request_id"] == f"fail-{run}"
    assert "demo_missing_table" in crash["exception"]

    assert APP_PASSWORD not in output
