"""The database's own view of this app: one bounded query per server, every ``server_stats_interval`` seconds.

One sampler per worker. Per database server it borrows one connection from the driver's pool itself (never
through the proxy, so the sample is no holder and no acquire in the pool metrics) when the pool has an idle
connection ready, within a short timeout; when every connection is out (a saturated pool, exactly when the view
matters) it opens a standalone connection for the one query instead, so a request never waits for a sample.
The query is bounded by the same timeout. What it sees is kept on each pool of that server (``/ops/pools``
``server``) and set on the ``sqlspec_ops_server_*`` gauges, whose multiprocess mode takes the latest reading
instead of summing the workers' (every worker reads the same server-wide fact).

``application_name`` (the option; else ``OTEL_SERVICE_NAME``; else the app's title unless it is FastAPI's
default; else ``sqlspec-ops``) is put on the configs' connections before their pools open; a name the config
already sets wins, and that is the name "this app" is counted by.
"""

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from sqlspec_ops._adapters.base import failure_name
from sqlspec_ops._budget import standalone_connection
from sqlspec_ops._databases import Database
from sqlspec_ops._metrics import OpsMetrics

__all__ = ("DEFAULT_APPLICATION_NAME", "ServerSampler", "default_application_name")

logger = logging.getLogger("sqlspec_ops.pools")

DEFAULT_APPLICATION_NAME = "sqlspec-ops"
_FASTAPI_DEFAULT_TITLE = "FastAPI"
_MAX_NAME_BYTES = 63  # PostgreSQL truncates application_name to NAMEDATALEN - 1
_SAMPLE_TIMEOUT = 1.0


def default_application_name(option: str | None, title: str | None) -> str:
    """Return the ``application_name`` connections announce when the config sets none.

    Args:
        option: The ``application_name`` option (validated).
        title: The app's title, if known.

    Returns:
        The option, else ``OTEL_SERVICE_NAME``, else the title unless FastAPI's default, else ``sqlspec-ops``,
        cut to printable ASCII within 63 bytes.

    """
    for candidate in (option, os.environ.get("OTEL_SERVICE_NAME"), title):
        if candidate and candidate != _FASTAPI_DEFAULT_TITLE:
            text = "".join(c if " " <= c <= "~" else "?" for c in candidate)[:_MAX_NAME_BYTES].strip()
            if text:
                return text
    return DEFAULT_APPLICATION_NAME


class ServerSampler:
    """Reads each server's view of this app and publishes it."""

    def __init__(
        self, databases: Sequence[Database], metrics: OpsMetrics, *, timeout: float, replicas: int = 1
    ) -> None:
        """Keep what to sample (no I/O).

        Args:
            databases: Every config.
            metrics: The gauges to set.
            timeout: Seconds the borrow and the query may take together, per server.
            replicas: The ``replicas`` option, compared once with the client addresses the server sees.

        """
        self._databases = databases
        self._metrics = metrics
        self._timeout = min(timeout, _SAMPLE_TIMEOUT)
        self._replicas = replicas
        self._states: dict[str, set[str]] = {}
        self._fleet_warned: set[str] = set()

    def servers(self) -> dict[str, list[Database]]:
        """Return server -> its databases whose adapter can read the server's view."""
        found: dict[str, list[Database]] = {}
        for db in self._databases:
            server = db.target.server
            if db.adapter is None or not db.adapter.has_server_view or db.pool is None or server is None:
                continue
            found.setdefault(server, []).append(db)
        return found

    async def sample(self) -> None:
        """Read every server once (bounded) and publish what each saw."""
        await asyncio.gather(*(self._sample_one(server, dbs) for server, dbs in self.servers().items()))

    async def _sample_one(self, server: str, dbs: list[Database]) -> None:
        ready = [db for db in dbs if db.pool is not None and db.pool.is_open]
        if not ready:
            return  # nothing open yet: readiness reports an unreachable server
        source = next((db for db in ready if db.pool is not None and db.pool.idle() > 0), None)
        try:
            async with asyncio.timeout(self._timeout):
                view = await self._read(source or ready[0], pooled=source is not None)
        except Exception as exc:  # a busy or failing server: say so, never its message (it can name users)
            logger.debug("reading the server view of %s failed (%s)", server, failure_name(exc))
            view = {"error": f"the server's view could not be read ({failure_name(exc)})"}
        for db in dbs:
            if db.pool is not None:
                db.pool.server_view = view
                self._publish(db.name, view)
        self._check_fleet(server, view)

    def _check_fleet(self, server: str, view: dict[str, Any]) -> None:
        """Warn once per server when more hosts connect with this application_name than ``replicas`` says."""
        fleet = view.get("fleet")
        if not isinstance(fleet, dict) or server in self._fleet_warned:
            return
        hosts = int(fleet.get("client_addresses") or 0)
        if hosts <= self._replicas:
            return
        self._fleet_warned.add(server)
        logger.warning(
            "the server %s sees %d client addresses with application_name %r (%d backends) but replicas=%d: "
            "the connection budget assumes %d replica(s); set replicas to the real count",
            server,
            hosts,
            view.get("application_name"),
            fleet.get("backends"),
            self._replicas,
            self._replicas,
            extra={
                "extra_fields": {
                    "server": server,
                    "client_addresses": hosts,
                    "backends": fleet.get("backends"),
                    "replicas": self._replicas,
                }
            },
        )

    async def _read(self, db: Database, *, pooled: bool) -> dict[str, Any]:
        """Read the view over an idle pool connection, else (all busy) over a standalone one: no request waits."""
        pool, adapter = db.pool, db.adapter
        if pool is None or adapter is None:
            msg = "sampled a database without a pool"
            raise RuntimeError(msg)
        if pooled:
            async with adapter.borrow(pool.inner, self._timeout) as connection:
                return await adapter.server_view(connection, pool.application_name)
        async with standalone_connection(db) as connection:
            return await adapter.server_view(connection, pool.application_name, pooled=False)

    def _publish(self, pool: str, view: dict[str, Any]) -> None:
        if "this_app" not in view:
            return
        metrics = self._metrics
        states = dict(view["this_app"])
        seen = self._states.setdefault(pool, set())
        for gone in seen - set(states):  # a state that emptied reads 0, not its last count
            states[gone] = 0
        seen.update(states)
        for state, count in states.items():
            metrics.server_connections.labels(pool, state).set(count)
        metrics.server_other_connections.labels(pool).set(view["other_clients"])
        oldest = view.get("oldest_transaction_s")
        metrics.server_oldest_transaction.labels(pool).set(oldest or 0)
        metrics.server_lock_waits.labels(pool).set(view["waiting_on_lock"])
