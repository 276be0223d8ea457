"""Scale-out on a real 3-node JetStream cluster: two resolvers, three executors and a monitor
as processes, every stream and bucket R3, workflows running while nodes (and services) die.

One *phase* = keep workflows flowing, SIGKILL the victims, wait for progress to come back,
restart the victims, let every workflow finish, then judge: every run ends as its plan says,
no attempt ran twice unless its executor was killed (the chaos ledger), and the time without
progress, i.e. the longest gap between two task starts from the kill until the phase ends
(the ledger records every start). ``python -m tests.cluster`` runs every phase and prints
the measurements.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_client import Client, Run, TaskState
from tests.chaos.cluster import FIXTURES, serving, stable_port
from tests.chaos.ledger import analyse, read_ledger
from tests.chaos.workload import WorkflowPlan, random_workflow
from tests.support.natscluster import NatsCluster
from tests.support.polling import eventually
from tests.support.processes import ROOT, ServiceProcess

__all__ = ["PHASES", "ClusterStack", "Phase", "PhaseResult", "run_phases"]

T = TypeVar("T")
_CLAIM_LOST = re.compile(r"lost the claim on (?P<run>[^/\s]+)/(?P<task>.+) attempt (?P<att>\d+)")

_COMMITTED = (TaskState.COMPLETED, TaskState.FAILED)


@dataclass(frozen=True)
class Phase:
    """What dies: ``node`` is ``"leader"`` (the node leading most of Stellwerk's streams and
    consumers) or ``"follower"`` (one leading none, else the one leading fewest); ``services``
    names service slots (``resolver-0``, ``executor-1``, ...) killed at the same instant."""

    name: str
    node: str
    services: tuple[str, ...] = ()


PHASES = {
    "leader": Phase("leader", "leader"),
    "follower": Phase("follower", "follower"),
    "leader+services": Phase("leader+services", "leader", ("resolver-0", "executor-0")),
}


@dataclass
class PhaseResult:
    """What one phase measured."""

    phase: str
    victim_node: str
    led: list[str]
    runs: int
    tasks_started: int
    stall: float
    """Longest gap between two task starts (or the kill and the first start) after the kill."""
    first_start_after_kill: float
    baseline_gap: float
    """Longest gap between two task starts in the second before the kill (s)."""
    executions: int
    re_executions: dict[str, int]
    problems: list[str] = field(default_factory=list)
    client_errors: list[str] = field(default_factory=list)
    """The last errors the clients retried past (submit and wait fail over between resolvers)."""

    def render(self) -> str:
        """One paragraph for the test output."""
        lines = [
            f"phase {self.phase}: killed node {self.victim_node} "
            f"(leading {len(self.led)}: {', '.join(sorted(self.led)) or 'nothing'})",
            f"  runs {self.runs}, tasks started {self.tasks_started}, executions "
            f"{self.executions}, re-executions {self.re_executions or 'none'}",
            f"  time without progress {self.stall:.2f} s (first task start "
            f"{self.first_start_after_kill:.2f} s after the kill; longest gap before it "
            f"{self.baseline_gap:.2f} s)",
        ]
        lines += [f"  PROBLEM {p}" for p in self.problems[:20]]
        lines += [f"  client retried: {e}" for e in self.client_errors[-5:]]
        return "\n".join(lines)


@dataclass
class ServiceSlot:
    """A service on a fixed address, so that a restart is found where the old one was."""

    name: str
    service: str
    listen: str
    env: dict[str, str]
    args: list[str]
    proc: ServiceProcess | None = None
    pids: list[int] = field(default_factory=list)

    def start(self, nats_url: str) -> ServiceProcess:
        env = dict(self.env)
        if self.service == "executor":
            env["STELLWERK_EXECUTOR_ID"] = f"{self.name}-{len(self.pids)}"
        proc = ServiceProcess(self.service, nats_url, env=env, args=self.args, listen=self.listen)
        proc.start(timeout=60)
        self.proc = proc
        self.pids.append(proc.pid)
        return proc


class ClusterStack:
    """The NATS cluster plus the services, all as processes on loopback."""

    def __init__(self, workdir: Path, *, resolvers: int = 2, executors: int = 3) -> None:
        self.workdir = workdir
        self.nats = NatsCluster(workdir / "nats")
        self.ledger = workdir / "ledger.jsonl"
        env = {
            "PYTHONPATH": os.pathsep.join([str(FIXTURES), str(ROOT)]),
            "STELLWERK_HANDLER_MODULES": "chaos_handlers",
            "CHAOS_LEDGER": str(self.ledger),
            "STELLWERK_REPLICAS": "3",
            # The reconciler acts only on tasks older than half the dedup window: keep it short
            # so that a dispatch lost in an election is found within the test's time.
            "STELLWERK_DEDUP_WINDOW": "20",
            "STELLWERK_RECONCILE_INTERVAL": "5",
        }
        self.slots: dict[str, ServiceSlot] = {}
        layout = [
            ("monitor", 1, []),
            ("resolver", resolvers, []),
            ("executor", executors, ["--concurrency", "8"]),
        ]
        for service, count, args in layout:
            for i in range(count):
                name = f"{service}-{i}"
                self.slots[name] = ServiceSlot(
                    name, service, f"127.0.0.1:{stable_port()}", env, list(args)
                )

    def resolver_addresses(self) -> list[str]:
        """The resolvers' fixed addresses."""
        return [s.listen for s in self.slots.values() if s.service == "resolver"]

    def start(self) -> None:
        """Start the cluster, then the services (each waits for its 'listening' line)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ledger.touch()
        self.nats.start()
        for slot in self.slots.values():
            slot.start(self.nats.url)

    async def wait_serving(self, names: list[str] | None = None, timeout: float = 90.0) -> None:
        """Until the named (default: all) services report SERVING."""
        for name in names or list(self.slots):
            slot = self.slots[name]
            await eventually(
                lambda slot=slot: serving(slot.listen),  # type: ignore[misc]
                timeout=timeout,
                interval=0.1,
                message=f"{name} SERVING",
            )

    def stop(self) -> None:
        """SIGKILL every service and node."""
        for slot in self.slots.values():
            if slot.proc is not None:
                slot.proc.kill()
        self.nats.stop()

    def save_logs(self) -> None:
        """Each service's output beside the nats logs."""
        for slot in self.slots.values():
            if slot.proc is not None:
                (self.workdir / f"{slot.name}.{slot.proc.pid}.log").write_text(slot.proc.logs())


class Feeder:
    """Keeps ``inflight`` workflows running (each through any resolver that answers) until
    stopped, then waits for every one of them to end."""

    def __init__(self, addresses: list[str], rng: random.Random, *, inflight: int) -> None:
        self.addresses = addresses
        self.rng = rng
        self.inflight = inflight
        self.plans: dict[str, WorkflowPlan] = {}
        self.finals: dict[str, Run] = {}
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._clients: list[Client] = []
        self._turn = 0

    def _next(self) -> Client:
        self._turn += 1
        return self._clients[self._turn % len(self._clients)]

    async def _retry(self, what: str, call: Callable[[Client], Awaitable[T]], deadline: float) -> T:
        delay = 0.1
        while True:
            try:
                return await call(self._next())
            except Exception as exc:  # every failure is retried until the deadline
                if time.monotonic() > deadline:
                    raise
                self.errors = [*self.errors[-19:], f"{what}: {type(exc).__name__}: {exc}"]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _one(self, index: int) -> None:
        plan = random_workflow(self.rng, f"cluster-{index}", size=8, sleep=0.15)
        request_id = uuid.uuid4().hex
        deadline = time.monotonic() + 240

        async def submit(client: Client) -> Run:
            return await client.submit(
                plan.document(), request_id=request_id, allow_unregistered=True
            )

        run = await self._retry("submit", submit, deadline)
        self.plans[run.run_id] = plan

        async def wait(client: Client) -> Run:
            return await client.wait(run.run_id, timeout=30)

        final = await self._retry("wait", wait, deadline)
        self.finals[run.run_id] = final

    async def _lane(self, lane: int) -> None:
        index = lane
        while not self._stop.is_set():
            await self._one(index)
            index += self.inflight

    async def run(self) -> None:
        """Feed until :meth:`stop`, then finish the workflows in flight."""
        self._clients = [await Client.connect(a) for a in self.addresses]
        try:
            await asyncio.gather(*(self._lane(i) for i in range(self.inflight)))
        finally:
            for client in self._clients:
                await client.close()

    def stop(self) -> None:
        """Submit no more workflows."""
        self._stop.set()


def _starts(ledger: Path) -> list[float]:
    executions, _ = read_ledger(ledger)
    return sorted(e.start for e in executions)


async def _started_after(ledger: Path, moment: float, count: int) -> bool:
    return sum(1 for s in _starts(ledger) if s > moment) >= count


def _longest_gap(starts: list[float], since: float, until: float | None = None) -> float:
    """Longest gap between ``since`` and the starts after it (up to ``until``, when given)."""
    points = [since, *[s for s in starts if s > since and (until is None or s < until)]]
    if until is not None:
        points.append(until)
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


async def run_phase(stack: ClusterStack, phase: Phase, rng: random.Random) -> PhaseResult:
    """One phase: feed, kill, recover, restart, finish, judge."""
    feeder = Feeder(stack.resolver_addresses(), rng, inflight=8)
    feeding = asyncio.create_task(feeder.run())
    began = time.time()
    try:
        try:
            await eventually(lambda: _started_after(stack.ledger, began, 40), timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"no progress before the kill; client: {feeder.errors}") from exc
        leaders = await asyncio.to_thread(stack.nats.leaders)
        led_by: dict[str, list[str]] = {name: [] for name in stack.nats.nodes}
        for asset, node in leaders.items():
            if asset.startswith(("STELLWERK_", "KV_stellwerk")) and node in led_by:
                led_by[node].append(asset)
        ranked = sorted(led_by, key=lambda n: len(led_by[n]))
        victim = ranked[-1] if phase.node == "leader" else ranked[0]
        kill_at = stack.nats.kill(victim)
        killed_pids: dict[int, float] = {}
        for name in phase.services:
            slot = stack.slots[name]
            assert slot.proc is not None
            pid = slot.proc.pid
            slot.proc.kill()
            killed_pids[pid] = time.time()
        await eventually(
            lambda: _started_after(stack.ledger, kill_at, 60),
            timeout=90,
            interval=0.1,
            message=f"progress after killing {victim}",
        )
        await asyncio.to_thread(stack.nats.restart, victim)
        for name in phase.services:
            await asyncio.to_thread(stack.slots[name].start, stack.nats.url)
        await stack.wait_serving(list(phase.services))
        await eventually(
            lambda: _started_after(stack.ledger, time.time() - 0.5, 1),
            timeout=60,
            message="progress after the restart",
        )
    finally:
        feeder.stop()
    await asyncio.wait_for(feeding, timeout=300)
    return _judge(stack, phase, feeder, victim, led_by[victim], kill_at, killed_pids)


def _judge(
    stack: ClusterStack,
    phase: Phase,
    feeder: Feeder,
    victim: str,
    led: list[str],
    kill_at: float,
    killed_pids: dict[int, float],
) -> PhaseResult:
    problems: list[str] = []
    commits: dict[tuple[str, str], float] = {}
    for run_id, plan in feeder.plans.items():
        final = feeder.finals.get(run_id)
        if final is None:
            problems.append(f"run {run_id} never ended")
            continue
        if final.state.to_proto() != plan.expected_state:
            problems.append(f"run {run_id}: {final.state.value} ({final.error})")
        tasks = {t.task_id: t for t in final.tasks}
        for task_id, want in plan.expected().items():
            got = tasks.get(task_id)
            if got is None or pb.TaskState.Value(f"TASK_STATE_{got.state.value}") != want.state:
                problems.append(f"run {run_id} task {task_id}: {got.state if got else 'missing'}")
                continue
            if got.state in _COMMITTED and got.ended_at is not None:
                commits[(run_id, task_id)] = got.ended_at.timestamp()
            if want.result is not None and got.result != want.result:
                problems.append(f"run {run_id} task {task_id}: result {got.result}")
    executions, bad = read_ledger(stack.ledger)
    mine = [e for e in executions if e.run in feeder.plans]
    if bad:
        problems.append(f"{bad} unreadable ledger lines")
    claims_lost: dict[tuple[int, str, str, int], int] = {}
    for slot in stack.slots.values():
        if slot.service == "executor" and slot.proc is not None:
            for line in list(slot.proc.output):
                if match := _CLAIM_LOST.search(line):
                    key = (slot.proc.pid, match["run"], match["task"], int(match["att"]))
                    claims_lost[key] = claims_lost.get(key, 0) + 1
    found = analyse(mine, kills=killed_pids, drops={}, claims_lost=claims_lost, commits=commits)
    problems += found.problems
    starts = sorted(e.start for e in mine)
    after = [s for s in starts if s > kill_at]
    return PhaseResult(
        phase=phase.name,
        victim_node=victim,
        led=led,
        runs=len(feeder.plans),
        tasks_started=len(starts),
        stall=_longest_gap(starts, kill_at),
        first_start_after_kill=(after[0] - kill_at) if after else float("inf"),
        baseline_gap=_longest_gap(starts, kill_at - 1.0, kill_at),
        executions=found.executions,
        re_executions=dict(found.re_executions),
        problems=problems,
        client_errors=feeder.errors,
    )


async def run_phases(workdir: Path, names: list[str], *, seed: int) -> list[PhaseResult]:
    """Start the stack once and run the named phases one after another."""
    rng = random.Random(seed)
    stack = ClusterStack(workdir)
    results: list[PhaseResult] = []
    try:
        await asyncio.to_thread(stack.start)
        await stack.wait_serving()
        for name in names:
            results.append(await run_phase(stack, PHASES[name], rng))
    finally:
        stack.save_logs()
        await asyncio.to_thread(stack.stop)
    return results
