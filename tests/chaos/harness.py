"""Running one chaos scenario: start the cluster, submit workflows while killing services,
wait for every workflow to end, then check the ledger and the final states (see ``checks``).

Everything random comes from one seeded RNG (the seed is printed), so a failing plan — which
workflows, which victims, which pauses — can be replayed; process timing of course varies.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import APIError

from stellwerk.core.publish import SUBJECT_FULL
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from tests.chaos.checks import check_outcome
from tests.chaos.client import Resolvers
from tests.chaos.cluster import NATS, Cluster
from tests.chaos.consistency import RECONCILER_NEEDED, classify, stream_leftovers, summary
from tests.chaos.report import Report
from tests.chaos.scenarios import Scenario
from tests.chaos.workload import WorkflowPlan, fan_in_workflow, random_workflow

__all__ = ["run_scenario"]

TERMINAL = (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED, pb.RUN_STATE_CANCELLED)
Log = Callable[[str], None]


class _Run:
    """Mutable state of one scenario run, shared by its concurrent parts."""

    def __init__(self, scenario: Scenario, seed: int, workdir: Path, log: Log) -> None:
        self.scenario = scenario
        self.rng = random.Random(seed)
        self.t0 = time.monotonic()
        self._log = log
        self.report = Report(scenario.name, seed, workdir=str(workdir))
        self.cluster = Cluster(
            workdir,
            settings=dict(scenario.settings),
            concurrency=scenario.concurrency,
            resolvers=scenario.resolvers,
            executors=scenario.executors,
            sync_always=scenario.sync_always,
            drop_events=scenario.drop_events,
        )
        self.plans: list[WorkflowPlan] = []
        self.run_ids: dict[int, str] = {}
        self.cancels: dict[int, float] = {}
        """Index of each cancelled plan -> when its cancel was recorded (the header's end)."""
        self.captured: list[tuple[str, bytes]] = []
        self.resolvers: Resolvers | None = None
        self.started_at: dict[str, float] = {}
        """When each restarted victim came back (monotonic)."""

    def log(self, text: str) -> None:
        self._log(f"[{self.scenario.name} +{time.monotonic() - self.t0:6.1f}s] {text}")

    @property
    def api(self) -> Resolvers:
        assert self.resolvers is not None
        return self.resolvers


async def run_scenario(
    scenario: Scenario, *, seed: int, workdir: Path, log: Log = print, strict_nats: bool = False
) -> Report:
    """Run ``scenario`` in ``workdir`` (ledger, nats store and logs stay there) and report;
    ``strict_nats`` fails overlapping executions across a nats-server crash too."""
    run = _Run(scenario, seed, workdir, log)
    run.report.strict_nats = strict_nats
    run.log(f"seed {seed}; starting nats-server and {len(run.cluster.slots)} services")
    try:
        await asyncio.to_thread(run.cluster.start)
        run.resolvers = Resolvers(run.cluster.addresses("resolver"))
        await run.cluster.wait_serving()
        run.log("cluster serving")
        await _drive(run)
    finally:
        if run.resolvers is not None:
            await run.resolvers.close()
        run.cluster.save_logs()
        run.cluster.stop()
    run.report.wall_time = time.monotonic() - run.t0
    return run.report


async def _drive(run: _Run) -> None:
    sc = run.scenario
    run.plans = [
        random_workflow(
            run.rng,
            f"chaos-{i}",
            sleep=sc.slow_sleep if sc.slow_every and i % sc.slow_every == 1 else sc.sleep,
            failing=i < sc.failing,
        )
        for i in range(sc.workflows)
    ]
    for i in range(sc.failing, min(sc.failing + sc.cancels, len(run.plans))):
        # Drawn from their own generator, so the shapes drawn from ``rng`` stay as they were.
        after = random.Random(f"{run.report.seed}-cancel-{i}").uniform(0.1, 1.0)
        run.plans[i] = replace(run.plans[i], cancel_after=after)
    run.rng.shuffle(run.plans)
    if sc.fan_in:
        # Every leaf sleeps until the same instant, so all 200 outcomes arrive together.
        run.plans.append(fan_in_workflow(run.rng, "fan-in", width=sc.fan_in, at=time.time() + 6))
    run.report.workflows_total = len(run.plans)
    run.report.tasks_total = sum(len(p.tasks) for p in run.plans)
    run.report.tasks_to_run = sum(
        1
        for p in run.plans
        if p.cancel_after is None  # a cancelled run's tasks may never start
        for e in p.expected().values()
        if e.state != pb.TASK_STATE_BLOCKED
    )
    capture = await _start_capture(run) if sc.replay else None
    try:
        submitting = asyncio.create_task(_submit_all(run))
        await _chaos(run, submitting)
        if sc.kills:
            await _snapshot(run, "right after the last kill")
        await submitting
        if not sc.kills:
            await _snapshot(run, "right after the last submit")
        await _wait_finished(run)
        await _settle_queues(run)
        finals = {i: await run.api.get(rid) for i, rid in run.run_ids.items()}
        run.report.runs_created = await run.api.count_runs()
        run.report.submit_retries = run.api.retries
        check_outcome(run.report, run.plans, run.cancels, finals, run.cluster)
        if capture is not None:
            await _replay_after_the_end(run, capture, finals)
    finally:
        if capture is not None:
            await capture.close()


async def _submit_all(run: _Run) -> None:
    gap = run.scenario.submit_spread / max(len(run.plans), 1)

    async def one(index: int, plan: WorkflowPlan) -> None:
        request_id = f"chaos-{run.scenario.name}-{run.report.seed}-{index}"
        deadline = time.monotonic() + 120
        created = await run.api.submit(plan.document(), request_id, deadline=deadline)
        run.run_ids[index] = created.run_id
        if plan.cancel_after is not None:
            await asyncio.sleep(plan.cancel_after)  # the workload's timing, not a wait
            cancelled = await run.api.cancel(created.run_id, deadline=time.monotonic() + 120)
            if cancelled is None:  # it had ended first: expected as if never cancelled
                run.plans[index] = replace(plan, cancel_after=None)
            else:
                run.cancels[index] = cancelled.end_time.ToNanoseconds() / 1e9

    pending = []
    for index, plan in enumerate(run.plans):
        if index:
            await asyncio.sleep(gap)
        pending.append(asyncio.create_task(one(index, plan)))
    await asyncio.gather(*pending)
    run.log(f"all {len(run.plans)} workflows submitted")


async def _chaos(run: _Run, submitting: asyncio.Task[None]) -> None:
    """Kill ``kills`` random victims at random intervals while the workflows are submitted, the
    last one just after the last submit (so "time to finish after the last kill" measures
    recovery, not submission); restart each victim after a random pause."""
    sc = run.scenario
    restarts: list[asyncio.Task[None]] = []
    kinds = [k for k, _ in sc.kinds]
    weights = [w for _, w in sc.kinds]
    began = time.monotonic()
    # Kill moments: one at random in each equal slice of the submission span (stratified, so
    # they cannot all bunch up at one end); the last one follows the last submit.
    slice_ = max(sc.submit_spread - 1.0, 0.0) / max(sc.kills - 1, 1)
    planned = [1.0 + (i + run.rng.random()) * slice_ for i in range(sc.kills - 1)]
    for number in range(sc.kills):
        if number == sc.kills - 1:
            await asyncio.wait([submitting])
            await asyncio.sleep(run.rng.uniform(0.1, 0.5))
        else:
            await asyncio.sleep(max(0.0, began + planned[number] - time.monotonic()))
        kind = run.rng.choices(kinds, weights)[0]
        up = sorted(run.cluster.targets({kind}))
        if not up:  # every victim of that kind is still down
            await asyncio.gather(*restarts)
            up = sorted(run.cluster.targets({kind}))
        target = run.rng.choice(up)
        uptime = time.monotonic() - run.started_at.get(target, float("-inf"))
        await asyncio.sleep(max(0.0, sc.min_uptime - uptime))
        record = await run.cluster.kill_async(target)
        down = run.rng.uniform(*sc.down_time)
        run.log(f"SIGKILL {target} (pid {record.pid}); restart in {down:.1f} s")
        run.report.kills[record.service] += 1
        restarts.append(asyncio.create_task(_restart_later(run, target, down)))
        if target == NATS:  # one outage at a time: overlapping ones teach nothing new
            await restarts[-1]
    await asyncio.gather(*restarts)


async def _restart_later(run: _Run, target: str, down: float) -> None:
    await asyncio.sleep(down)
    pid = await run.cluster.restart_async(target)
    run.started_at[target] = time.monotonic()
    run.log(f"restarted {target} (pid {pid})")


async def _snapshot(run: _Run, when: str) -> None:
    """Classify every unfinished task's path to progress (KV against the work queues)."""
    nc = await nats.connect(run.cluster.nats_url, max_reconnect_attempts=-1)
    try:
        findings = await classify(nc.jetstream(timeout=10), list(run.run_ids.values()), run.api.get)
    finally:
        await nc.close()
    run.report.snapshot = summary(findings)
    run.report.snapshot_at = when
    run.log(f"state consistency {when}: {dict(run.report.snapshot) or 'nothing open'}")
    for f in [f for f in findings if f.path == RECONCILER_NEEDED][:5]:
        run.log(f"  only the reconciler can move {f.run}/{f.task or '(header)'} ({f.state})")


async def _wait_finished(run: _Run) -> None:
    """Poll until every run is over; on timeout, record where each unfinished task is stuck."""
    deadline = time.monotonic() + run.scenario.finish_timeout
    open_runs = set(run.run_ids.values())
    while open_runs and time.monotonic() < deadline:
        states = await asyncio.gather(*(run.api.get(r, full=False) for r in sorted(open_runs)))
        open_runs -= {s.run_id for s in states if s.state in TERMINAL}
        if open_runs:
            await asyncio.sleep(0.5)
    last_kill = max((k.time for k in run.cluster.kills), default=None)
    if open_runs:
        run.log(f"{len(open_runs)} workflows did not finish; classifying what is stuck")
        nc = await nats.connect(run.cluster.nats_url)
        try:
            stuck = await classify(nc.jetstream(timeout=10), sorted(open_runs), run.api.get)
        finally:
            await nc.close()
        for f in stuck:
            run.report.problems.append(
                f"unfinished after {run.scenario.finish_timeout:.0f} s: run {f.run} task "
                f"{f.task or '(header)'} {f.state}: {f.path}"
            )
    elif last_kill is not None:
        ends = [
            (await run.api.get(r, full=False)).end_time.ToNanoseconds() / 1e9
            for r in run.run_ids.values()
        ]
        run.report.last_kill_to_finish = max(0.0, max(ends) - last_kill)
    run.log(f"workflows over: {len(run.run_ids) - len(open_runs)}/{len(run.run_ids)}")


async def _settle_queues(run: _Run) -> None:
    """Give redelivered leftovers (e.g. dropped outcomes' dispatches) time to be skipped, so the
    ledger is complete; then record what is left in the work queues."""
    nc = await nats.connect(run.cluster.nats_url)
    try:
        js = nc.jetstream(timeout=10)
        deadline = time.monotonic() + 30
        left = await stream_leftovers(js)
        while any(left.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            left = await stream_leftovers(js)
        run.report.leftovers = left
    finally:
        await nc.close()


_REPLAY_HEADER = "Chaos-Replay"


class _Capture:
    """A plain NATS subscription that sees every outcome event and republishes it."""

    def __init__(self, run: _Run, nc: NatsClient) -> None:
        self.run = run
        self.nc = nc
        self.js = nc.jetstream(timeout=10)
        self.tasks: set[asyncio.Task[None]] = set()
        self.republished = 0
        self.refused = 0

    async def on_event(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get(_REPLAY_HEADER):
            return  # our own republication
        self.run.captured.append((msg.subject, msg.data))
        task = asyncio.create_task(self.republish(msg.subject, msg.data, self.run.scenario.replay))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def republish(self, subject: str, data: bytes, times: int) -> None:
        for _ in range(times):
            # A fresh id, so JetStream's dedup window does not drop it: what stops it is the
            # events stream keeping only the first outcome of an attempt.
            headers = {"Nats-Msg-Id": uuid.uuid4().hex, _REPLAY_HEADER: "1"}
            try:
                await self.js.publish(subject, data, headers=headers)
            except APIError as exc:
                if exc.err_code != SUBJECT_FULL:
                    raise
                self.refused += 1
            else:
                self.republished += 1

    async def close(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.nc.close()


async def _start_capture(run: _Run) -> _Capture:
    nc = await nats.connect(run.cluster.nats_url)
    capture = _Capture(run, nc)
    await nc.subscribe("stellwerk.events.>", cb=capture.on_event)
    return capture


async def _replay_after_the_end(run: _Run, capture: _Capture, finals: dict[int, pb.Run]) -> None:
    """Republish every captured event once more after the runs ended: nothing may change."""
    await asyncio.gather(*capture.tasks, return_exceptions=True)
    executions_before = run.cluster.ledger.read_bytes().count(b'"ev":"start"')
    for subject, data in list(run.captured):
        await capture.republish(subject, data, 1)
    await _settle_queues(run)
    executions_after = run.cluster.ledger.read_bytes().count(b'"ev":"start"')
    for index, before in finals.items():
        after = await run.api.get(before.run_id)
        was = [(t.task_id, t.state, t.result_json, t.attempts) for t in before.tasks]
        now = [(t.task_id, t.state, t.result_json, t.attempts) for t in after.tasks]
        if after.state != before.state or was != now:
            run.report.problems.append(f"run {before.run_id} (plan {index}) changed after replay")
    if executions_after != executions_before:
        run.report.problems.append(
            f"replaying events after the end ran {executions_after - executions_before} handlers"
        )
    run.report.extra["events republished (fresh ids)"] = (
        f"{capture.refused} refused by the stream, {capture.republished} stored "
        f"({len(run.captured)} distinct outcomes captured)"
    )
