"""Throwaway MariaDB servers for tests: the MySQL side of sqlspec-ops (asyncmy), against the real thing.

Each :class:`MariaDBServer` owns a temporary data directory (``mariadb-install-db``), listens on 127.0.0.1 at
a free port and on a Unix socket of its own, runs as the ``mysql`` user when we are root (MariaDB refuses to
run as root) and is stopped by the PID of its ``mariadbd`` (which does not fork: the process we start is the
server). It creates an application account with a password, a database it owns and ``PROCESS`` (so it sees
other clients in ``information_schema.PROCESSLIST`` and the transactions in ``INNODB_TRX``), and a password
for ``root@127.0.0.1``, so tests connect exactly as a deployed app would.
"""

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import asyncmy

from tests.support.postgres import free_port
from tests.support.processes import stop_process
from tests.support.servers import ThrowawayServer

__all__ = ("APP_DATABASE", "APP_PASSWORD", "APP_USER", "ROOT_PASSWORD", "MariaDBServer", "find_mariadbd")

APP_USER = "app"
APP_PASSWORD = "my-s3cr3t-PW"  # noqa: S105 - a throwaway test credential, grepped for by the leak tests
APP_DATABASE = "appdb"
ROOT_PASSWORD = "root-s3cr3t"  # noqa: S105
_SERVER_USER = "mysql"
_START_TIMEOUT = 60.0


def find_mariadbd() -> tuple[Path, Path, Path]:
    """Locate ``mariadbd``, ``mariadb-install-db`` and the ``mariadb`` client (PATH first, then Debian's layout).

    Raises:
        RuntimeError: If MariaDB's server is not installed.

    """
    server = shutil.which("mariadbd") or next((p for p in ("/usr/sbin/mariadbd",) if Path(p).exists()), None)
    install = shutil.which("mariadb-install-db")
    client = shutil.which("mariadb")
    if server is None or install is None or client is None:
        msg = "MariaDB's server is not installed; install Debian's 'mariadb-server' package (scripts/test does)"
        raise RuntimeError(msg)
    return Path(server), Path(install), Path(client)


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root (None: run as ourselves, already unprivileged)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_SERVER_USER)
    except KeyError as exc:
        msg = f"running as root needs a '{_SERVER_USER}' user (scripts/test creates it)"
        raise RuntimeError(msg) from exc


class MariaDBServer(ThrowawayServer):
    """A MariaDB server that lives as long as the object is started (restartable on the same data)."""

    def __init__(self, *, max_connections: int = 100, settings: dict[str, str] | None = None) -> None:
        """Prepare (but do not start) a server.

        Args:
            max_connections: The server's ``max_connections``.
            settings: Extra server options, as ``--name=value`` without the dashes (``{"wait_timeout": "60"}``).

        """
        self.server_bin, self.install_bin, self.client_bin = find_mariadbd()
        self.host = "127.0.0.1"
        self.port = free_port()
        self.max_connections = max_connections
        self.settings = dict(settings or {})
        self._tmp = Path(tempfile.mkdtemp(prefix="sqlspec-ops-mariadb-"))
        self.data = self._tmp / "data"
        self.socket = self._tmp / "run" / "mariadb.sock"
        self.log = self._tmp / "server.log"
        self._initialised = False
        self._process: subprocess.Popen[bytes] | None = None
        self._atexit = False

    # -- connection settings --------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the running ``mariadbd``, None while stopped."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def url(self) -> str:
        """``mysql://`` URL of the application account (password included, as apps configure it)."""
        return f"mysql://{APP_USER}:{APP_PASSWORD}@{self.host}:{self.port}/{APP_DATABASE}"

    dsn = url

    def connection_config(self, **extra: Any) -> dict[str, Any]:
        """An ``AsyncmyConfig`` ``connection_config`` for the application account (password included)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": APP_USER,
            "password": APP_PASSWORD,
            "database": APP_DATABASE,
            **extra,
        }

    async def root(self) -> Any:
        """Open an asyncmy connection as ``root`` (autocommit) for test bookkeeping; the caller closes it."""
        return await asyncmy.connect(
            host=self.host, port=self.port, user="root", password=ROOT_PASSWORD, autocommit=True
        )

    def sql(self, statement: str) -> str:
        """Run one statement as ``root`` through the ``mariadb`` client over the server's socket.

        Returns:
            The client's tab-separated output (no column names).

        """
        done = subprocess.run(
            [str(self.client_bin), "--no-defaults", f"--socket={self.socket}", "-uroot", f"-p{ROOT_PASSWORD}",
             "--batch", "--skip-column-names", "-e", statement],
            check=True, capture_output=True, timeout=60, text=True,
        )  # fmt: skip
        return done.stdout

    # -- lifecycle ------------------------------------------------------------------------------------

    def _options(self) -> list[str]:
        options = {
            "datadir": str(self.data),
            "bind-address": self.host,
            "port": str(self.port),
            "socket": str(self.socket),
            "pid-file": str(self._tmp / "run" / "mariadb.pid"),
            "log-error": str(self.log),
            "max-connections": str(self.max_connections),
            "innodb-buffer-pool-size": "16M",
            "innodb-log-file-size": "8M",
            "innodb-flush-log-at-trx-commit": "0",
            "skip-name-resolve": None,
            "skip-log-bin": None,
            **{key.replace("_", "-"): value for key, value in self.settings.items()},
        }
        return [f"--{key}" if value is None else f"--{key}={value}" for key, value in options.items()]

    def _as_server_user(self) -> dict[str, Any]:
        account = _server_user()
        if account is None:
            return {}
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _install(self) -> None:
        (self._tmp / "run").mkdir(parents=True, exist_ok=True)
        account = _server_user()
        if account is not None:
            for path in (self._tmp, self._tmp / "run"):
                os.chown(path, account.pw_uid, account.pw_gid)
        subprocess.run(
            [str(self.install_bin), "--no-defaults", f"--datadir={self.data}", "--skip-test-db", "--skip-name-resolve",
             "--auth-root-authentication-method=normal", "--innodb-log-file-size=8M", "--innodb-buffer-pool-size=16M"],
            check=True, capture_output=True, timeout=120, **self._as_server_user(),
        )  # fmt: skip
        self._initialised = True

    def start(self) -> Self:
        """Start the server (creating its data directory the first time) and wait until it accepts connections.

        Returns:
            self, for chaining.

        Raises:
            RuntimeError: If the server exits or does not answer within 60 s (its log is quoted).

        """
        if self.pid is not None:
            return self
        first = not self._initialised
        if first:
            self._install()
        self._process = subprocess.Popen(
            [str(self.server_bin), "--no-defaults", *self._options()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            **self._as_server_user(),
        )
        if not self._atexit:
            # Even if the test session dies before its fixtures' finalizers run, the server goes with it.
            atexit.register(self.cleanup)
            self._atexit = True
        self._wait_ready(first=first)
        if first:
            self._create_accounts()
        return self

    def _wait_ready(self, *, first: bool) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        password = [] if first else [f"-p{ROOT_PASSWORD}"]
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                break
            probe = subprocess.run(
                [str(self.client_bin), "--no-defaults", f"--socket={self.socket}", "-uroot", *password,
                 "--connect-timeout=2", "-e", "SELECT 1"],
                check=False, capture_output=True, timeout=30,
            )  # fmt: skip
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"
        self.stop()
        msg = f"MariaDB on port {self.port} did not start; its log ends with:\n{log}"
        raise RuntimeError(msg)

    def _create_accounts(self) -> None:
        account = f"'{APP_USER}'@'{self.host}'"
        statements = [
            f"ALTER USER 'root'@'{self.host}' IDENTIFIED BY '{ROOT_PASSWORD}'",
            f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{ROOT_PASSWORD}'",
            f"CREATE DATABASE {APP_DATABASE}",
            f"CREATE USER {account} IDENTIFIED BY '{APP_PASSWORD}'",
            f"GRANT ALL PRIVILEGES ON {APP_DATABASE}.* TO {account}",
            f"GRANT PROCESS ON *.* TO {account}",
        ]
        subprocess.run(
            [str(self.client_bin), "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", "; ".join(statements)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def set_max_connections(self, value: int) -> None:
        """Change ``max_connections`` on the running server (and for later restarts)."""
        self.max_connections = value
        self.sql(f"SET GLOBAL max_connections = {int(value)}")

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop the server by its PID (SIGTERM: a clean shutdown) and wait until it is gone."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, timeout=timeout)

    def restart(self) -> Self:
        """Stop and start the server on the same data directory and port.

        Returns:
            self, for chaining.

        """
        self.stop()
        return self.start()
