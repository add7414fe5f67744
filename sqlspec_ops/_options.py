"""The options of ``SQLSpecOps``, validated once; ``check_pool_budget`` and the CLI reuse the same checks."""

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = (
    "TOKEN_ENV",
    "OpsOptions",
    "check_max_connections",
    "check_positive_int",
    "check_seconds",
)

TOKEN_ENV = "SQLSPEC_OPS_TOKEN"  # noqa: S105 - the variable's name, not a secret
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_LEAK_THRESHOLD_NOISY = 1.0  # seconds: ordinary requests hold connections about this long
_APPLICATION_NAME_BYTES = 63  # PostgreSQL truncates application_name to NAMEDATALEN - 1


def check_positive_int(option: str, value: Any, *, none_means: str | None = None) -> None:
    """Refuse anything but a positive integer (or None, when ``none_means`` says what None does).

    Raises:
        ValueError: Naming the option and the value.

    """
    if value is None and none_means is not None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = f" or None ({none_means})" if none_means is not None else ""
        msg = f"{option} must be a positive integer{allowed}, got {value!r}"
        raise ValueError(msg)


def check_max_connections(value: Any) -> None:
    """Refuse a ``max_connections`` override that is not a positive integer."""
    check_positive_int("max_connections", value, none_means="read it from the server")


def check_seconds(option: str, value: Any, *, optional: bool = False) -> None:
    """Refuse a duration that is not a positive number of seconds (or None when ``optional``).

    Raises:
        ValueError: Naming the option and the value.

    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        tail = " or None (off)" if optional else ""
        msg = f"{option} must be a positive number of seconds{tail}, got {value!r}"
        raise ValueError(msg)


@dataclass(frozen=True, kw_only=True, slots=True)
class OpsOptions:
    """Every option of ``SQLSpecOps`` (see its docstring), validated when built."""

    prefix: str = "/ops"
    workers: int | None = None
    replicas: int = 1
    max_connections: int | None = None
    health_timeout: float = 1.0
    health_cache_ttl: float = 1.0
    acquire_timeout: float | None = None
    token: str | None = None
    tracer_provider: "TracerProvider | None" = None
    registry: CollectorRegistry | None = None
    header_name: str = "X-Request-ID"
    server_timing: bool = True
    max_queries_per_request: int | None = 50
    slow_query_threshold: float | None = 0.5
    startup_timeout: float = 5.0
    health_interval: float | None = 15.0
    leak_threshold: float | None = None
    application_name: str | None = None
    server_stats_interval: float | None = 15.0
    ready_when_saturated: bool = True
    server_spans: bool = False
    loop_lag_interval: float | None = 0.5

    def __post_init__(self) -> None:
        """Check every option before anything is installed.

        Raises:
            ValueError: On the first invalid option, naming it.

        """
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            msg = f"prefix must start with '/' and not end with one, got {self.prefix!r}"
            raise ValueError(msg)
        check_positive_int("workers", self.workers, none_means="detect")
        check_positive_int("replicas", self.replicas)
        check_max_connections(self.max_connections)
        for option in ("health_timeout", "startup_timeout"):
            check_seconds(option, getattr(self, option))
        ttl = self.health_cache_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
            msg = f"health_cache_ttl must be 0 (no cache) or a positive number of seconds, got {ttl!r}"
            raise ValueError(msg)
        for option in (
            "acquire_timeout",
            "slow_query_threshold",
            "health_interval",
            "leak_threshold",
            "server_stats_interval",
            "loop_lag_interval",
        ):
            check_seconds(option, getattr(self, option), optional=True)
        check_positive_int("max_queries_per_request", self.max_queries_per_request, none_means="no N+1 warning")
        if self.token is not None and not self.token.strip():
            msg = "token must be a non-empty string (or None to read SQLSPEC_OPS_TOKEN / leave the endpoints open)"
            raise ValueError(msg)
        if not _HEADER_NAME.fullmatch(self.header_name):
            msg = f"header_name must be a valid HTTP header name, got {self.header_name!r}"
            raise ValueError(msg)
        name = self.application_name
        if name is not None and (
            not name or len(name.encode()) > _APPLICATION_NAME_BYTES or not all(" " <= c <= "~" for c in name)
        ):
            msg = f"application_name must be 1..63 printable ASCII characters, got {name!r}"
            raise ValueError(msg)

    @property
    def resolved_token(self) -> str | None:
        """The token option, else ``SQLSPEC_OPS_TOKEN`` (empty means unset)."""
        return self.token if self.token is not None else (os.environ.get(TOKEN_ENV) or None)

    @property
    def noisy_leak_threshold(self) -> bool:
        """Whether ``leak_threshold`` is so short that ordinary requests will be reported as leaks."""
        return self.leak_threshold is not None and self.leak_threshold < _LEAK_THRESHOLD_NOISY
