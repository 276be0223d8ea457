"""A Stellwerk stack for the benchmark: a real nats-server and the services as separate
processes, started exactly as their containers start them (``python -m stellwerk.<svc>``)."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.conftest import serving
from tests.support.polling import eventually
from tests.support.processes import ROOT, ServiceProcess

from stellwerk.core.natsd import NatsServer

__all__ = ["METRICS_LINE", "Stack", "rss_mb"]

METRICS_LINE = re.compile(r"stellwerk resolver metrics on (\S+):(\d+)")

HANDLER_ENV = {
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    "STELLWERK_HANDLER_MODULES": "bench.noop_handlers",
    "STELLWERK_LOG_LEVEL": "WARNING",
}


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, from /proc/<pid>/status."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


@dataclass
class Stack:
    """nats-server + resolver + executor(s) + monitor, each its own process."""

    sync_always: bool
    executors: int = 1
    resolvers: int = 1
    monitor: bool = True
    nats: NatsServer | None = None
    procs: list[ServiceProcess] = field(default_factory=list)
    metrics_address: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Added to every service's environment (e.g. the OTEL_* settings of a traced pass)."""
    _store: Path | None = None

    @property
    def resolver(self) -> ServiceProcess:
        """The resolver process (the first one started)."""
        return self.procs[0]

    async def start(self) -> Stack:
        """Start everything and wait until each service reports SERVING."""
        self._store = Path(tempfile.mkdtemp(prefix="bench-nats-"))
        self.nats = NatsServer.start_new(self._store, sync_always=self.sync_always)
        url = self.nats.url
        base = {**HANDLER_ENV, **self.env}
        resolver_env = {**base, "STELLWERK_METRICS_LISTEN": "127.0.0.1:0"}
        # The first resolver serves the metrics; the others share its work (same consumer).
        self.procs = [ServiceProcess("resolver", url, env=resolver_env).start()]
        for _ in range(self.resolvers - 1):
            self.procs.append(ServiceProcess("resolver", url, env=base).start())
        for i in range(self.executors):
            env = {**base, "STELLWERK_EXECUTOR_ID": f"bench-exec-{i}"}
            self.procs.append(ServiceProcess("executor", url, env=env).start())
        if self.monitor:
            self.procs.append(ServiceProcess("monitor", url, env=base).start())
        for proc in self.procs:
            await eventually(
                functools.partial(serving, proc.address),
                timeout=60,
                message=f"{proc.service} SERVING",
            )
        self.metrics_address = await self._metrics_address()
        return self

    def pids(self) -> dict[str, int]:
        """Every process of the system (services and nats-server) by a readable name."""
        found: dict[str, int] = {}
        for proc in self.procs:
            name = proc.service
            serial = 2
            while name in found:
                name, serial = f"{proc.service}-{serial}", serial + 1
            found[name] = proc.pid
        if self.nats is not None and self.nats.process is not None:
            found["nats-server"] = self.nats.process.pid
        return found

    async def _metrics_address(self, wait: float = 2.0) -> str | None:
        # The resolver prints its metrics line right after its gRPC line, if it has metrics.
        deadline = time.monotonic() + wait
        while True:
            match = METRICS_LINE.search(self.resolver.logs())
            if match:
                return f"{match.group(1)}:{match.group(2)}"
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        """Terminate (or SIGKILL: nothing of the run is kept anyway) the services, then NATS;
        remove the store."""
        for proc in reversed(self.procs):
            if proc.process is None:
                continue
            if kill:
                proc.kill()
            else:
                proc.terminate(timeout=15)
        if self.nats is not None:
            self.nats.stop()
        if self._store is not None:
            shutil.rmtree(self._store, ignore_errors=True)

    def logs_tail(self, lines: int = 20) -> str:
        """The last lines of every service's output (for error reports)."""
        parts = []
        for proc in self.procs:
            tail = proc.logs().splitlines()[-lines:]
            parts.append(f"--- {proc.service} ---\n" + "\n".join(tail))
        return "\n".join(parts)
