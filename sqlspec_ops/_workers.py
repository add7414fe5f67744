"""How many worker processes serve this app on one host, and how we know.

A worker only sees itself: Uvicorn and Gunicorn expose no API that tells a worker how many siblings it
has, and ``uvicorn --workers 4`` does not export ``WEB_CONCURRENCY``. So the count is taken from the first
of these that says something:

1. the ``workers`` option (what the operator told us);
2. ``WEB_CONCURRENCY`` (read by both servers when no ``--workers`` is given; set by PaaS platforms);
3. ``UVICORN_WORKERS`` (Uvicorn's CLI reads ``UVICORN_*`` variables);
4. ``GUNICORN_CMD_ARGS`` (``-w``/``--workers``, split like Gunicorn does, with :func:`shlex.split`);
5. the Uvicorn or Gunicorn command line: this process's own (``uvicorn app:app``, or a Gunicorn worker,
   which is a fork of the master and keeps its argv), else the parent's (Uvicorn spawns its workers as
   fresh ``multiprocessing`` children whose own argv is ``-c "from multiprocessing.spawn import ..."``);
6. else 1, reported as ``assumed``.

Usage::

    from sqlspec_ops._workers import detect_workers

    detect_workers().count  # e.g. 4, with .source == "uvicorn command line"
"""

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ("WorkerCount", "detect_workers", "process_cmdlines", "workers_from_args", "workers_from_cmdline")

_SERVERS = ("uvicorn", "gunicorn")


@dataclass(frozen=True, slots=True)
class WorkerCount:
    """A worker count and where it came from (``source``), with a note when something was ignored."""

    count: int
    source: str
    detail: str | None = None

    @property
    def assumed(self) -> bool:
        """Whether nothing told us the count (it is 1 by assumption)."""
        return self.source == "assumed"

    def as_json(self) -> dict[str, object]:
        """Render for reports."""
        body: dict[str, object] = {"count": self.count, "source": self.source}
        if self.detail:
            body["detail"] = self.detail
        return body


def detect_workers(
    option: int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cmdlines: Sequence[Sequence[str]] | None = None,
) -> WorkerCount:
    """Return the number of workers per replica and its source, in the documented order.

    Args:
        option: An explicit count (the ``workers`` option); wins over everything else.
        environ: Environment to read (default: ``os.environ``).
        cmdlines: Command lines to inspect, own process first (default: this process's and its parent's,
            read from ``/proc``).

    Returns:
        The count and its source.

    Raises:
        ValueError: If ``option`` is not a positive integer.

    """
    if option is not None:
        if isinstance(option, bool) or not isinstance(option, int) or option < 1:
            msg = f"workers must be a positive integer or None (detect), got {option!r}"
            raise ValueError(msg)
        return WorkerCount(option, "option")
    ignored: list[str] = []
    found = _from_environment(os.environ if environ is None else environ, ignored)
    if found is not None:
        return found
    for argv in process_cmdlines() if cmdlines is None else cmdlines:
        from_cmdline = workers_from_cmdline(argv)
        if isinstance(from_cmdline, WorkerCount):
            return from_cmdline
        if from_cmdline is not None:
            ignored.append(from_cmdline)
    ignored.append("no workers option, WEB_CONCURRENCY, UVICORN_WORKERS, GUNICORN_CMD_ARGS or server command line")
    return WorkerCount(1, "assumed", "; ".join(ignored))


def workers_from_cmdline(argv: Sequence[str]) -> WorkerCount | str | None:
    """Read the worker count from a Uvicorn or Gunicorn command line.

    Recognises ``uvicorn ...``, ``gunicorn ...`` (as scripts or through a Python interpreter) and
    ``python -m uvicorn|gunicorn ...``. Uvicorn without ``--workers`` runs one worker (``WEB_CONCURRENCY`` was
    already consulted); ``--reload`` always runs one. Gunicorn without ``-w`` may take its count from a
    config file, which is not read, so that case is not a count.

    Args:
        argv: The command line, one argument per item.

    Returns:
        The count, or a note saying why this server command line gave none, or None when it is not a
        Uvicorn or Gunicorn command line.

    """
    server, rest = _find_server(argv)
    if server is None:
        if argv and argv[0].startswith("gunicorn: "):
            # setproctitle replaced Gunicorn's argv with a title ("gunicorn: worker [app]")
            return "Gunicorn's process title hides its command line (setproctitle is installed)"
        return None
    source = f"{server} command line"
    if server == "uvicorn":
        if "--reload" in rest:
            return WorkerCount(1, source, "--reload runs a single worker")
        count = workers_from_args(rest, short_flag=False)
        return WorkerCount(count if count is not None else 1, source)
    count = workers_from_args(rest, short_flag=True)
    if count is None:
        return "the gunicorn command line has no -w/--workers (a gunicorn config file may set it)"
    return WorkerCount(count, source)


def workers_from_args(args: Sequence[str], *, short_flag: bool) -> int | None:
    """Return the value of the last ``--workers N``/``--workers=N`` (and ``-w N``/``-wN`` if ``short_flag``).

    Args:
        args: Command-line arguments.
        short_flag: Whether ``-w`` means workers (Gunicorn; Uvicorn has no short form).

    Returns:
        The count, or None when the arguments do not set a valid one.

    """
    found: int | None = None
    index = 0
    while index < len(args):
        arg = args[index]
        value: str | None = None
        if arg == "--":
            break
        if arg == "--workers" or (short_flag and arg == "-w"):
            value = args[index + 1] if index + 1 < len(args) else None
            index += 1
        elif arg.startswith("--workers="):
            value = arg.partition("=")[2]
        elif short_flag and arg.startswith("-w") and not arg.startswith("--"):
            value = arg[2:].lstrip("=")
        if value is not None:
            count = _positive_int(value)
            if count is not None:
                found = count  # the last occurrence wins, as with argparse and click
        index += 1
    return found


def process_cmdlines() -> list[list[str]]:
    """Return this process's command line and its parent's (Linux ``/proc``; empty lists elsewhere)."""
    lines = []
    for pid in (os.getpid(), os.getppid()):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        lines.append([part.decode(errors="replace") for part in raw.split(b"\0") if part])
    return lines


def _from_environment(env: Mapping[str, str], ignored: list[str]) -> WorkerCount | None:
    """Read the environment variables in order; note the ones set to something unusable."""
    for name in ("WEB_CONCURRENCY", "UVICORN_WORKERS"):
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        count = _positive_int(raw)
        if count is not None:
            return WorkerCount(count, name)
        ignored.append(f"{name}={raw.strip()[:20]!r} is not a positive integer")
    gunicorn_args = env.get("GUNICORN_CMD_ARGS")
    if gunicorn_args:
        try:
            count = workers_from_args(shlex.split(gunicorn_args), short_flag=True)
        except ValueError:
            ignored.append("GUNICORN_CMD_ARGS could not be split into arguments")
        else:
            if count is not None:
                return WorkerCount(count, "GUNICORN_CMD_ARGS")
    return None


def _find_server(argv: Sequence[str]) -> tuple[str | None, Sequence[str]]:
    """Locate ``uvicorn``/``gunicorn`` in the first arguments (script, interpreter + script, or ``-m``)."""
    for index, arg in enumerate(argv[:4]):  # [python [-X opt]] [-m] server ...: the server comes early
        if arg == "-m" and index + 1 < len(argv) and argv[index + 1] in _SERVERS:
            return argv[index + 1], argv[index + 2 :]
        name = arg.rsplit("/", 1)[-1]
        if name in _SERVERS:
            return name, argv[index + 1 :]
        if index > 0 and not arg.startswith("-") and not name.startswith("python"):
            break  # a script that is not a server: its arguments are not ours to read
    return None, ()


def _positive_int(raw: str) -> int | None:
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value >= 1 else None
