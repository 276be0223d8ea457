"""Settings of every Stellwerk process, read from ``STELLWERK_*`` environment variables.

One class for all services keeps the names in one list (README documents them); each service
reads only the fields it needs. Command-line flags override the environment.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from stellwerk.core.limits import DEFAULT_MAX_RESULT_BYTES

__all__ = ["Settings", "parse_listen"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_RESOLVER_LISTEN = "127.0.0.1:50051"
DEFAULT_EXECUTOR_LISTEN = "127.0.0.1:50052"
DEFAULT_MONITOR_LISTEN = "127.0.0.1:50053"


def _default_executor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Every setting, with its environment variable ``STELLWERK_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STELLWERK_", extra="ignore")

    nats_url: str = DEFAULT_NATS_URL
    """Comma-separated NATS server URLs."""
    resolver_listen: str = DEFAULT_RESOLVER_LISTEN
    executor_listen: str = DEFAULT_EXECUTOR_LISTEN
    monitor_listen: str = DEFAULT_MONITOR_LISTEN
    metrics_listen: str = ""
    """HOST:PORT for a Prometheus ``/metrics`` endpoint of this process (empty = off)."""
    address: str = DEFAULT_RESOLVER_LISTEN
    """Where clients and the CLI find the resolver."""

    handler_modules: str = ""
    """Comma-separated dotted module names the executor imports for ``@handler`` functions."""
    script_dirs: str = ""
    """Directories ``python/execute`` may run scripts from (``os.pathsep`` or comma separated)."""
    executor_concurrency: int = Field(default=16, ge=1, le=10_000)
    executor_id: str = Field(default_factory=_default_executor_id)

    task_lease: float = Field(default=30.0, gt=0, le=3600)
    """Seconds an executor's claim on an attempt lasts without a heartbeat (consumer ack_wait)."""
    max_deliveries: int = Field(default=5, ge=1, le=1000)
    dedup_window: float = Field(default=120.0, ge=1, le=86_400)
    """JetStream ``duplicate_window`` of the dispatch and event streams, in seconds."""
    reconcile_interval: float = Field(default=30.0, gt=0)
    retention: float = Field(default=7 * 24 * 3600.0, gt=0)
    """Seconds a finished run stays queryable before it is removed from KV."""
    janitor_interval: float = Field(default=60.0, gt=0)
    stuck_after: float = Field(default=300.0, gt=0)
    """A RUNNING run without any task transition for this many seconds counts as stuck."""
    queue_depth_limit: int = Field(default=10_000, ge=1)
    """Messages waiting in one consumer above which the health report fails its queue check."""
    gauge_interval: float = Field(default=5.0, gt=0)
    """Seconds between refreshes of the monitor's gauges (workflows, stuck, queue depth)."""
    staging_grace: float = Field(default=600.0, gt=0)
    """Seconds after which an uncommitted (crashed) submit's parts are removed."""
    drain_timeout: float = Field(default=30.0, ge=0)
    replicas: int = Field(default=1, ge=1, le=5)
    """Replica count of every stream and bucket (3 on a 3-node cluster)."""
    connect_timeout: float = Field(default=2.0, gt=0)
    max_result_bytes: int = Field(default=DEFAULT_MAX_RESULT_BYTES, ge=1, le=1024 * 1024 * 1024)
    """Largest task result, in bytes of JSON (also the largest substituted parameters of a
    dispatch). Results too large for one NATS message are stored in chunks (STELLWERK_BLOBS);
    a result beyond this cap fails its task with an error naming it."""

    breaker_method_threshold: int = Field(default=0, ge=0, le=100_000)
    """Failed attempts of one method within the window that open its breaker (0: off)."""
    breaker_method_window: float = Field(default=60.0, gt=0, le=86_400)
    breaker_method_cooldown: float = Field(default=30.0, gt=0, le=86_400)
    """Seconds an open method breaker holds the method's tasks before a trial goes."""
    breaker_run_threshold: int = Field(default=5, ge=0, le=100_000)
    """Failed resolution passes of one run within the window that open its breaker (0: off)."""
    breaker_run_window: float = Field(default=60.0, gt=0, le=86_400)
    breaker_run_cooldown: float = Field(default=5.0, gt=0, le=86_400)
    resolution_attempts: int = Field(default=3, ge=1, le=10)
    """Tries of a resolution pass in place on a transient NATS/KV error before it is handed back."""

    fault_drop_events: float = Field(default=0.0, ge=0.0, le=1.0)
    """Fault injection, off by default: fraction of task completions the executor 'loses'."""

    def nats_servers(self) -> list[str]:
        """The NATS URLs as a list."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    def handler_module_names(self) -> list[str]:
        """``handler_modules`` split on commas."""
        return [m.strip() for m in self.handler_modules.split(",") if m.strip()]

    def script_dir_paths(self) -> list[Path]:
        """``script_dirs`` as absolute paths, in order (the first one resolves relative files)."""
        raw = self.script_dirs.replace(",", os.pathsep)
        return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (port 0 = any free port); raises ``ValueError`` with a clear message."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen address {value!r} is not HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen address {value!r} has a non-numeric port") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen address {value!r} has a port outside 0..65535")
    return host.strip("[]"), port
