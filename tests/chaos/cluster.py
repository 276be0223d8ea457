"""The system under chaos: one nats-server and the services as separate processes, each in a
*slot* with a fixed gRPC address, so a killed service comes back (same command, new pid) where
its clients expect it. Every SIGKILL is recorded with the victim's pid and the time it was dead.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import re
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stellwerk.core.natsd import NatsServer
from tests.support.polling import eventually
from tests.support.processes import ROOT, ServiceProcess

__all__ = ["NATS", "Cluster", "KillRecord", "Slot", "service_env", "serving"]

NATS = "nats"
FIXTURES = ROOT / "tests" / "fixtures"
_DROP = re.compile(
    r"fault injection: dropping the outcome of (?P<run>[^/\s]+)/(?P<task>.+) attempt (?P<att>\d+)"
)
_CLAIM_LOST = re.compile(r"lost the claim on (?P<run>[^/\s]+)/(?P<task>.+) attempt (?P<att>\d+)")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def stable_port() -> int:
    """A free port *below* the ephemeral range: a slot keeps its port across restarts, and a
    port the kernel may hand to any outgoing connection meanwhile would block the restart."""
    low = 20000
    high = max(low + 1000, min(_ephemeral_range()[0], 65536))
    for _ in range(200):
        port = random.randrange(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port below the ephemeral range")


async def serving(address: str) -> bool:
    """Whether the gRPC server at ``address`` reports SERVING."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass(frozen=True)
class KillRecord:
    """One SIGKILL: which slot, which pid, when it was certainly dead (``time.time()``)."""

    target: str
    service: str
    pid: int
    time: float


@dataclass
class Slot:
    """A service's place in the cluster: its command stays, its processes come and go."""

    name: str
    service: str
    env: dict[str, str]
    args: list[str]
    listen: str
    incarnations: list[ServiceProcess] = field(default_factory=list)

    @property
    def current(self) -> ServiceProcess:
        """The latest process of this slot."""
        return self.incarnations[-1]

    @property
    def alive(self) -> bool:
        """Whether the latest process runs."""
        if not self.incarnations:
            return False
        proc = self.current.process
        return proc is not None and proc.poll() is None

    def start(self, nats_url: str, *, first: bool = False) -> ServiceProcess:
        """Start a new incarnation (an executor gets an id naming slot and incarnation); the
        ``first`` one may move to another port if its port was taken meanwhile."""
        env = dict(self.env)
        if self.service == "executor":
            env["STELLWERK_EXECUTOR_ID"] = f"chaos-{self.name}-{len(self.incarnations)}"
        last: Exception | None = None
        for _ in range(3):  # a port the dead incarnation held may need a moment
            proc = ServiceProcess(
                self.service, nats_url, env=env, args=self.args, listen=self.listen
            )
            try:
                proc.start(timeout=60)
            except RuntimeError as exc:
                last = exc
                proc.kill()
                if first and "already in use" in str(exc):
                    self.listen = f"127.0.0.1:{stable_port()}"
                time.sleep(0.5)
                continue
            self.incarnations.append(proc)
            return proc
        raise RuntimeError(f"{self.name} would not start") from last


def service_env(settings: Mapping[str, str], ledger: Path) -> dict[str, str]:
    """Environment of every chaos service: short leases, the chaos handlers, the ledger."""
    return {
        "PYTHONPATH": os.pathsep.join([str(FIXTURES), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "STELLWERK_HANDLER_MODULES": "chaos_handlers",
        "CHAOS_LEDGER": str(ledger),
        "STELLWERK_LOG_LEVEL": "INFO",
        **settings,
    }


class Cluster:
    """nats-server + resolvers + executors + monitors, with kill and restart by slot name."""

    def __init__(
        self,
        workdir: Path,
        *,
        settings: Mapping[str, str],
        resolvers: int = 2,
        executors: int = 3,
        monitors: int = 1,
        concurrency: int = 8,
        sync_always: bool = False,
        drop_events: float = 0.0,
    ) -> None:
        self.workdir = workdir
        self.ledger = workdir / "ledger.jsonl"
        self.sync_always = sync_always
        self.nats: NatsServer | None = None
        self.nats_pids: list[int] = []
        self.nats_outages: list[tuple[float, float]] = []
        """(SIGKILL, healthy again) times of every nats-server outage."""
        self.kills: list[KillRecord] = []
        self._lock = threading.Lock()
        env = service_env(settings, self.ledger)
        exec_env = dict(env)
        if drop_events:
            exec_env["STELLWERK_FAULT_DROP_EVENTS"] = str(drop_events)
        self.slots: dict[str, Slot] = {}
        layout: list[tuple[str, int, dict[str, str], list[str]]] = [
            ("resolver", resolvers, env, []),
            ("executor", executors, exec_env, ["--concurrency", str(concurrency)]),
            ("monitor", monitors, env, []),
        ]
        for service, count, slot_env, args in layout:
            for i in range(count):
                name = f"{service}-{i}"
                self.slots[name] = Slot(name, service, slot_env, args, f"127.0.0.1:{stable_port()}")

    @property
    def nats_url(self) -> str:
        """The nats-server's client URL (stable across its restarts)."""
        assert self.nats is not None
        return self.nats.url

    def addresses(self, service: str) -> list[str]:
        """The fixed gRPC addresses of a service's slots."""
        return [s.listen for s in self.slots.values() if s.service == service]

    def start(self) -> None:
        """Start nats-server, then every slot (in parallel: interpreter start-up dominates)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ledger.touch()
        store = self.workdir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        # Ports below the ephemeral range: the restarted server must get the same ones back.
        self.nats = NatsServer(
            store_dir=store,
            sync_always=self.sync_always,
            port=stable_port(),
            http_port=stable_port(),
        )
        self.nats.start()
        assert self.nats.process is not None
        self.nats_pids.append(self.nats.process.pid)
        with ThreadPoolExecutor(max_workers=len(self.slots)) as pool:
            slots = self.slots.values()
            for future in [pool.submit(s.start, self.nats_url, first=True) for s in slots]:
                future.result()

    async def wait_serving(self, timeout: float = 90.0) -> None:
        """Until every current process reports SERVING."""
        for slot in self.slots.values():
            await eventually(
                functools.partial(serving, slot.listen),
                timeout=timeout,
                interval=0.1,
                message=f"{slot.name} SERVING",
            )

    def targets(self, kinds: set[str]) -> list[str]:
        """Slot names (and ``nats``) of the given service kinds that are up right now."""
        up = [n for n, s in self.slots.items() if s.service in kinds and s.alive]
        nats_process = self.nats.process if self.nats is not None else None
        if NATS in kinds and nats_process is not None and nats_process.poll() is None:
            up.append(NATS)
        return up

    def kill(self, target: str) -> KillRecord:
        """SIGKILL a slot's process (or nats-server) and record when it was dead."""
        if target == NATS:
            assert self.nats is not None and self.nats.process is not None
            pid = self.nats.process.pid
            self.nats.kill()
            record = KillRecord(NATS, NATS, pid, time.time())
        else:
            slot = self.slots[target]
            pid = slot.current.pid
            slot.current.kill()
            record = KillRecord(target, slot.service, pid, time.time())
        with self._lock:
            self.kills.append(record)
        return record

    def restart(self, target: str) -> int:
        """Start a killed slot (or nats-server on its store and ports) again; returns the pid."""
        if target == NATS:
            assert self.nats is not None
            self.nats.start(timeout=60)
            assert self.nats.process is not None
            crashed = max(k.time for k in self.kills if k.service == NATS)
            self.nats_outages.append((crashed, time.time()))
            self.nats_pids.append(self.nats.process.pid)
            return self.nats.process.pid
        return self.slots[target].start(self.nats_url).pid

    async def kill_async(self, target: str) -> KillRecord:
        """:meth:`kill` off the event loop."""
        return await asyncio.to_thread(self.kill, target)

    async def restart_async(self, target: str) -> int:
        """:meth:`restart` off the event loop (start-up blocks for a second or two)."""
        return await asyncio.to_thread(self.restart, target)

    def executor_pids(self) -> set[int]:
        """Every pid any executor incarnation had."""
        return {
            p.pid for s in self.slots.values() if s.service == "executor" for p in s.incarnations
        }

    def dropped_outcomes(self) -> dict[tuple[int, str, str, int], int]:
        """How often each executor pid logged dropping the outcome of (run, task, attempt)."""
        return self._logged(_DROP)

    def lost_claims(self) -> dict[tuple[int, str, str, int], int]:
        """How often each executor pid logged giving up (run, task, attempt) on a lapsed claim."""
        return self._logged(_CLAIM_LOST)

    def _logged(self, pattern: re.Pattern[str]) -> dict[tuple[int, str, str, int], int]:
        found: dict[tuple[int, str, str, int], int] = {}
        for slot in self.slots.values():
            if slot.service != "executor":
                continue
            for proc in slot.incarnations:
                for line in list(proc.output):
                    match = pattern.search(line)
                    if match:
                        key = (proc.pid, match["run"], match["task"], int(match["att"]))
                        found[key] = found.get(key, 0) + 1
        return found

    def save_logs(self) -> None:
        """Write every incarnation's output to ``workdir/logs`` (kept for post-mortems)."""
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        for slot in self.slots.values():
            for i, proc in enumerate(slot.incarnations):
                if proc.process is not None:
                    (logs / f"{slot.name}.{i}.{proc.pid}.log").write_text(proc.logs())

    def stop(self) -> None:
        """Stop everything (SIGKILL: state must survive it anyway, and it is quick)."""
        for slot in self.slots.values():
            if slot.incarnations:
                slot.current.kill()
        if self.nats is not None:
            self.nats.stop()
