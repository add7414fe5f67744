"""Throwaway PostgreSQL clusters for tests and benchmarks.

Each :class:`PostgresServer` owns a temporary data directory, listens on 127.0.0.1 at a free port, runs as
the ``postgres`` user when we are root (PostgreSQL refuses to run as root), and is stopped by the PID of
its postmaster. It creates an application role with a password (scram) and a database, so tests connect
exactly as a deployed app would.
"""

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from tests.support.servers import ThrowawayServer

__all__ = ("APP_PASSWORD", "PostgresServer", "find_pg_bin", "free_port")

APP_USER = "app"
APP_PASSWORD = "s3cr3t-PW"  # noqa: S105 - a throwaway test credential, grepped for by the leak tests
APP_DATABASE = "appdb"
SUPERUSER_PASSWORD = "super-s3cr3t"  # noqa: S105


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_pg_bin() -> Path:
    """Locate the directory holding ``initdb``/``pg_ctl``/``postgres`` (PATH first, then Debian's layout).

    Raises:
        RuntimeError: If PostgreSQL's server binaries are not installed.

    """
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    msg = "PostgreSQL server binaries not found; install Debian's 'postgresql' package (scripts/test does)"
    raise RuntimeError(msg)


def _as_postgres() -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        msg = "running as root needs a 'postgres' user (scripts/test creates it)"
        raise RuntimeError(msg) from exc
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer(ThrowawayServer):
    """A PostgreSQL cluster that lives as long as the object is started."""

    def __init__(self, *, max_connections: int = 100, settings: dict[str, str] | None = None) -> None:
        """Prepare (but do not start) a cluster.

        Args:
            max_connections: The server's ``max_connections``.
            settings: Extra ``postgresql.conf`` settings.

        """
        self.bin = find_pg_bin()
        self.port = free_port()
        self.host = "127.0.0.1"
        self.max_connections = max_connections
        self.settings = dict(settings or {})
        self._tmp = Path(tempfile.mkdtemp(prefix="sqlspec-ops-pg-"))
        self.data = self._tmp / "data"
        self.sockets = self._tmp / "sock"
        self.log = self._tmp / "server.log"
        self._initialised = False
        self.pid: int | None = None

    # -- connection strings ---------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """DSN of the application role (password included, as apps configure it)."""
        return f"postgresql://{APP_USER}:{APP_PASSWORD}@{self.host}:{self.port}/{APP_DATABASE}"

    @property
    def superuser_dsn(self) -> str:
        """DSN of the ``postgres`` superuser, for test bookkeeping (pg_stat_activity and the like)."""
        return f"postgresql://postgres:{SUPERUSER_PASSWORD}@{self.host}:{self.port}/postgres"

    def conninfo(self) -> str:
        """The application DSN in libpq key=value form."""
        return f"host={self.host} port={self.port} dbname={APP_DATABASE} user={APP_USER} password={APP_PASSWORD}"

    # -- lifecycle ------------------------------------------------------------------------------------

    def _run(self, *args: str) -> None:
        subprocess.run([*_as_postgres(), *args], check=True, capture_output=True, timeout=120)

    def _initdb(self) -> None:
        self.sockets.mkdir(parents=True, exist_ok=True)
        pwfile = self._tmp / "pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            for path in (self._tmp, self.sockets, pwfile):
                os.chown(path, pg.pw_uid, pg.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data),
            "-U", "postgres",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockets}'",
            "max_connections": str(self.max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "logging_collector": "off",
            **self.settings,
        }
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.writelines(f"{key} = {value}\n" for key, value in conf.items())
        self._initialised = True

    def start(self) -> Self:
        """Start the server (initialising the cluster the first time) and wait until it accepts connections.

        Returns:
            self, for chaining.

        """
        if not self._initialised:
            self._initdb()
            first = True
        else:
            first = False
        if os.geteuid() == 0:
            self.log.touch()
            pg = pwd.getpwnam("postgres")
            os.chown(self.log, pg.pw_uid, pg.pw_gid)
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        # Even if the test session dies before its fixtures' finalizers run (an internal error, a kill by
        # the timeout), the server goes with the interpreter instead of outliving it.
        atexit.register(self.cleanup)
        if first:
            self._create_app_role()
        return self

    def _create_app_role(self) -> None:
        psql = self.bin / "psql"
        statements = [
            f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'",
            f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}",
            f"GRANT pg_read_all_stats TO {APP_USER}",
        ]
        for sql in statements:
            self._run(str(psql), "-X", "-q", "-h", str(self.sockets), "-p", str(self.port), "-U", "postgres",
                      "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql)  # fmt: skip

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop the server by its PID (fast shutdown) and wait until it is gone."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
