"""The test toolkit in tests/support/ does what the suite relies on, and fails when it should."""

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI, Request

from tests.support.asgi import serving
from tests.support.network import silent_server
from tests.support.processes import clean_env, running_server
from tests.support.readme import readme_blocks, readme_section
from tests.support.waiting import eventually, eventually_blocking

BROKEN = "a bug in the predicate"


def _app_recording(events: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, object]]:
        events.append("startup")
        yield {"shared": "from the lifespan"}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/state")
    async def state(request: Request) -> dict[str, object]:
        request.state.mine = request.headers["x-n"]  # a copy per request: never seen by another request
        await asyncio.sleep(0.01)
        return {"shared": request.state.shared, "mine": request.state.mine}

    return app


async def test_serving_runs_startup_and_shutdown_around_the_block() -> None:
    """``serving`` runs the lifespan's startup before the block and its shutdown after it."""
    events: list[str] = []
    async with serving(_app_recording(events)) as client:
        assert events == ["startup"]
        assert (await client.get("/state", headers={"x-n": "1"})).json() == {"shared": "from the lifespan", "mine": "1"}
    assert events == ["startup", "shutdown"]


async def test_serving_runs_the_shutdown_when_the_block_fails() -> None:
    """A failing test body still gets the app's shutdown (asgi-lifespan alone would skip it), and its error."""
    events: list[str] = []
    with pytest.raises(ZeroDivisionError):
        async with serving(_app_recording(events)):
            _ = 1 / 0
    assert events == ["startup", "shutdown"]


async def test_serving_gives_each_request_its_own_state() -> None:
    """Concurrent requests each see their own ``request.state`` values on top of the lifespan state."""
    async with serving(_app_recording([])) as client:
        answers = await asyncio.gather(*(client.get("/state", headers={"x-n": str(n)}) for n in range(20)))
    assert [answer.json()["mine"] for answer in answers] == [str(n) for n in range(20)]


async def test_eventually_accepts_sync_and_async_predicates() -> None:
    """``eventually`` keeps polling a function or a coroutine function until it is truthy."""
    calls: list[int] = []

    def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    async def async_third_time() -> bool:
        return third_time()

    await eventually(third_time, timeout=5, interval=0.001)
    await eventually(async_third_time, timeout=5, interval=0.001)
    assert len(calls) == 4  # the async wait saw 3 -> 4 and was done at once


async def test_eventually_fails_with_what_it_waited_for() -> None:
    """A predicate that never holds fails after the timeout with the description and the last value."""
    with pytest.raises(AssertionError, match=r"timed out after 0.05s waiting for the moon \(last: 0\)"):
        await eventually(lambda: 0, timeout=0.05, what="the moon")


async def test_eventually_retries_ignored_errors_only() -> None:
    """Ignored exception classes mean "not yet"; any other exception ends the wait at once."""
    attempts: list[int] = []

    def refused_twice() -> bool:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionRefusedError
        return True

    def broken() -> bool:
        raise KeyError(BROKEN)

    await eventually(refused_twice, timeout=5, interval=0.001, ignore=(ConnectionRefusedError,))
    with pytest.raises(KeyError):
        await eventually(broken, timeout=5, ignore=(ConnectionRefusedError,))


def test_eventually_blocking_polls_and_refuses_coroutines() -> None:
    """The blocking twin polls a plain function, times out like ``eventually``, and refuses coroutine functions."""
    calls: list[int] = []

    def second_time() -> bool:
        calls.append(1)
        return len(calls) >= 2

    eventually_blocking(second_time, timeout=5, interval=0.001)
    assert len(calls) == 2
    with pytest.raises(AssertionError, match="waiting for nothing"):
        eventually_blocking(lambda: False, timeout=0.05, interval=0.01, what="nothing")

    async def coroutine() -> bool:
        return True

    with pytest.raises(TypeError, match="await eventually"):
        eventually_blocking(coroutine, timeout=1)


def test_silent_server_accepts_and_never_answers() -> None:
    """A client connects and sends, and no byte comes back; after the block nothing listens there."""
    with silent_server() as port, socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # PostgreSQL's SSLRequest
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(1)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_readme_blocks_reads_a_section_and_fails_loudly() -> None:
    """``readme_blocks`` returns a section's blocks of one language; a missing section or language is an error."""
    (command,) = readme_blocks("Run", "bash")
    assert command.strip()
    assert command in readme_section("Run")
    with pytest.raises(AssertionError, match="no '## No such section' section"):
        readme_blocks("No such section", "python")
    with pytest.raises(AssertionError, match="has no ```cobol block"):
        readme_blocks("Run", "cobol")


def test_running_server_waits_until_it_answers_and_stops_it() -> None:
    """A real HTTP server is ready when the block starts, its output is captured, and it is stopped after."""
    command = [sys.executable, "-u", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
    with running_server(command, clean_env(), ready="/") as server:
        assert server.get("/").status_code == 200
        server.wait_for(lambda: "GET / HTTP" in server.output(), "the request in the server's log", timeout=10)
    assert server.process.returncode is not None
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()


def test_running_server_fails_fast_with_the_output_of_a_server_that_exits() -> None:
    """A server that exits before it answers fails the wait at once, showing what it wrote."""
    command = [sys.executable, "-c", "import sys; print('no database configured'); sys.exit(3)"]
    with (
        pytest.raises(AssertionError, match=r"(?s)exited with 3.*no database configured"),
        running_server(command, dict(os.environ), ready="/", ready_timeout=60),
    ):
        pass  # pragma: no cover - never reached
