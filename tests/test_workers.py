"""Worker-count detection: each source in its order, and the real Uvicorn and Gunicorn command lines."""

import sys

import pytest

from sqlspec_ops._workers import WorkerCount, detect_workers, process_cmdlines, workers_from_cmdline
from tests.support.processes import clean_env, running_server

PY = "/srv/venv/bin/python3.11"
UVICORN_MASTER = [PY, "/srv/venv/bin/uvicorn", "app:app", "--host", "127.0.0.1", "--workers", "3"]
UV = "uvicorn command line"
GU = "gunicorn command line"
UVICORN_SPAWNED = [PY, "-c", "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7)",
                   "--multiprocessing-fork"]  # fmt: skip


def test_option_wins_over_everything() -> None:
    """The workers option beats the environment and the command line."""
    found = detect_workers(5, environ={"WEB_CONCURRENCY": "2"}, cmdlines=[UVICORN_MASTER])
    assert found == WorkerCount(5, "option")


@pytest.mark.parametrize("bad", [0, -1, True, 2.0])
def test_invalid_option_is_an_error(bad: object) -> None:
    """A workers option that is not a positive integer raises with the value in the message."""
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        detect_workers(bad)  # type: ignore[arg-type]


def test_web_concurrency_comes_before_uvicorn_and_gunicorn_variables() -> None:
    """WEB_CONCURRENCY is the first environment source."""
    env = {"WEB_CONCURRENCY": "6", "UVICORN_WORKERS": "2", "GUNICORN_CMD_ARGS": "-w 3"}
    assert detect_workers(environ=env, cmdlines=[UVICORN_MASTER]) == WorkerCount(6, "WEB_CONCURRENCY")


def test_uvicorn_workers_comes_before_gunicorn_cmd_args() -> None:
    """UVICORN_WORKERS is read when WEB_CONCURRENCY is unset."""
    env = {"UVICORN_WORKERS": "2", "GUNICORN_CMD_ARGS": "-w 3"}
    assert detect_workers(environ=env, cmdlines=[]) == WorkerCount(2, "UVICORN_WORKERS")


@pytest.mark.parametrize(
    "args",
    [
        "-w 4",
        "-w4",
        "--workers 4",
        "--workers=4",
        "--bind 0.0.0.0:80 --workers 4 --timeout 30",
        "-w 4 --access-logformat '%(h)s -w 9'",  # shlex keeps the quoted "-w 9" inside one argument
        "-w 2 -w 4",  # the last one wins, as in gunicorn
    ],
)
def test_gunicorn_cmd_args(args: str) -> None:
    """GUNICORN_CMD_ARGS is split like gunicorn does and its -w/--workers read."""
    found = detect_workers(environ={"GUNICORN_CMD_ARGS": args}, cmdlines=[UVICORN_MASTER])
    assert found == WorkerCount(4, "GUNICORN_CMD_ARGS")


def test_unusable_values_are_skipped_and_said() -> None:
    """Invalid variables fall through to the next source, and the assumed count explains why."""
    env = {"WEB_CONCURRENCY": "lots", "UVICORN_WORKERS": "0", "GUNICORN_CMD_ARGS": "--bind 'unterminated"}
    found = detect_workers(environ=env, cmdlines=[["python", "manage.py"]])
    assert (found.count, found.source) == (1, "assumed")
    assert found.detail is not None
    assert "WEB_CONCURRENCY='lots'" in found.detail
    assert "UVICORN_WORKERS='0'" in found.detail
    assert "GUNICORN_CMD_ARGS could not be split" in found.detail
    assert detect_workers(environ={"WEB_CONCURRENCY": "x", "UVICORN_WORKERS": "3"}, cmdlines=[]).count == 3


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (UVICORN_MASTER, WorkerCount(3, UV)),
        (["uvicorn", "app:app", "--workers=2"], WorkerCount(2, UV)),
        ([PY, "-m", "uvicorn", "app:app", "--workers", "4"], WorkerCount(4, UV)),
        (["uvicorn", "app:app"], WorkerCount(1, UV)),
        (["uvicorn", "app:app", "--reload", "--workers", "4"], WorkerCount(1, UV, "--reload runs a single worker")),
        ([PY, "/srv/venv/bin/gunicorn", "-w", "5", "app:app"], WorkerCount(5, GU)),
        (["gunicorn", "-w5", "-k", "uvicorn.workers.UvicornWorker", "app:app"], WorkerCount(5, GU)),
        (["gunicorn", "--workers=5", "app:app"], WorkerCount(5, GU)),
        ([PY, "-m", "gunicorn", "--workers", "5", "app:app"], WorkerCount(5, GU)),
        (["uvicorn", "app:app", "-w", "5"], WorkerCount(1, UV)),  # uvicorn has no -w
    ],
)  # fmt: skip
def test_server_command_lines(argv: list[str], expected: WorkerCount) -> None:
    """Uvicorn and Gunicorn command lines in their usual spellings give the worker count."""
    assert workers_from_cmdline(argv) == expected


def test_uvicorn_worker_reads_its_parents_command_line() -> None:
    """A spawned Uvicorn worker's own argv says nothing, so the parent's (the Uvicorn master) is read."""
    found = detect_workers(environ={}, cmdlines=[UVICORN_SPAWNED, UVICORN_MASTER])
    assert found == WorkerCount(3, "uvicorn command line")


def test_gunicorn_without_workers_flag_is_not_a_count() -> None:
    """A gunicorn command line without -w may be configured by a file, so the count stays assumed, with a note."""
    found = detect_workers(environ={}, cmdlines=[["gunicorn", "-c", "gunicorn.conf.py", "app:app"]])
    assert (found.count, found.source) == (1, "assumed")
    assert found.detail is not None
    assert "no -w/--workers" in found.detail


def test_gunicorn_process_title_is_reported() -> None:
    """With setproctitle, gunicorn's argv is a title; the note says so instead of guessing."""
    found = detect_workers(environ={}, cmdlines=[["gunicorn: worker [app:app]"], ["gunicorn: master [app:app]"]])
    assert found.assumed
    assert found.detail is not None
    assert "setproctitle" in found.detail


def test_other_programs_are_not_servers() -> None:
    """Scripts that only mention a server in their arguments are not read; nothing found means 1, assumed."""
    argv = [PY, "manage.py", "uvicorn", "--workers", "8"]
    assert workers_from_cmdline(argv) is None
    found = detect_workers(environ={}, cmdlines=[argv, ["/bin/bash"]])
    assert (found.count, found.source) == (1, "assumed")


def test_process_cmdlines_reads_this_process() -> None:
    """The first command line read from /proc is this very process's."""
    assert process_cmdlines()[0] == sys.orig_argv


def _answers_of_two_workers(command: list[str], server_name: str) -> list[dict[str, object]]:
    """Serve the budget app with ``command`` and collect what each of its two workers detected."""
    with running_server(command, clean_env()) as server:
        seen: dict[int, dict[str, object]] = {}

        def both_workers_answered() -> bool:
            try:
                body = server.get("/workers").json()
            except Exception:
                return False
            seen[int(body.pop("pid"))] = body
            return len(seen) == 2

        server.wait_for(both_workers_answered, f"both {server_name} workers to answer /workers")
    assert server.process.pid not in seen  # the answers came from spawned workers, not the master
    return list(seen.values())


@pytest.mark.slow
def test_real_uvicorn_workers_detect_the_count() -> None:
    """Every worker of a real `python -m uvicorn --workers=2` finds 2 from its parent's command line."""
    command = [sys.executable, "-m", "uvicorn", "tests.apps.budget_app:create_app", "--factory",
               "--host", "127.0.0.1", "--port", "{port}", "--workers=2"]  # fmt: skip
    answers = _answers_of_two_workers(command, "uvicorn")
    assert answers == [{"count": 2, "source": "uvicorn command line"}] * 2


@pytest.mark.slow
def test_real_gunicorn_workers_detect_the_count() -> None:
    """Every worker of a real `gunicorn -k uvicorn.workers.UvicornWorker -w 2` finds 2 on its command line."""
    command = ["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2", "-b", "127.0.0.1:{port}",
               "tests.apps.budget_app:create_app()"]  # fmt: skip
    answers = _answers_of_two_workers(command, "gunicorn")
    assert answers == [{"count": 2, "source": "gunicorn command line"}] * 2
