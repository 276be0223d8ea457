"""Crash safety, scenario by scenario, with services as processes against a real nats-server."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import nats
import nats.js.errors
import pytest

from stellwerk.core import names
from stellwerk.core.natsd import NatsServer
from stellwerk.core.publish import SUBJECT_FULL
from stellwerk_api.events.v1 import events_pb2
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc
from tests.e2e.conftest import HANDLER_ENV, serving
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess

FAST = {
    "STELLWERK_TASK_LEASE": "1.5",
    "STELLWERK_RECONCILE_INTERVAL": "0.5",
    "STELLWERK_DEDUP_WINDOW": "4",
    "STELLWERK_DRAIN_TIMEOUT": "10",
}


@dataclass
class Cluster:
    """A nats-server and services started on demand; everything is stopped at the end."""

    nats: NatsServer
    ledger: Path
    procs: list[ServiceProcess] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {**HANDLER_ENV, **FAST, "E2E_LEDGER": str(self.ledger), **extra}

    async def start(self, service: str, **extra: str) -> ServiceProcess:
        proc = ServiceProcess(service, self.nats.url, env=self.env(**extra)).start()
        self.procs.append(proc)
        await eventually(lambda: serving(proc.address), timeout=60, message=f"{service} serving")
        return proc

    def executions(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines()]

    def starts(self, task: str) -> list[dict[str, Any]]:
        return [e for e in self.executions() if e["task"] == task and e["ev"] == "start"]


@pytest.fixture
def cluster(nats_server: NatsServer, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(nats_server, tmp_path / "ledger.jsonl")
    try:
        yield c
    finally:
        for proc in c.procs:
            proc.terminate(timeout=15)


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


async def stub_for(proc: ServiceProcess) -> Any:
    channel = grpc.aio.insecure_channel(proc.address)
    return wf_grpc.WorkflowServiceStub(channel)


async def test_republished_events_change_nothing(cluster: Cluster, js: Any) -> None:
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    document = """
tasks:
  - {id: a, method: test/ledger, params: {value: 1}}
  - {id: b, method: test/ledger, dependencies: [a], params: {value: 10, inputs: ["${a}"]}}
"""
    done = await wait_done(stub, (await submit(stub, document)).run_id)
    before = {t.task_id: (t.state, t.result_json, t.attempts) for t in done.tasks}
    forged = events_pb2.TaskEvent(
        format_version=2,
        run_id=done.run_id,
        task_id="a",
        attempt=1,
        outcome=events_pb2.TASK_OUTCOME_SUCCEEDED,
        result_json="999",
        executor_id="forger",
    )
    failed = events_pb2.TaskEvent(
        format_version=2,
        run_id=done.run_id,
        task_id="b",
        attempt=1,
        outcome=events_pb2.TASK_OUTCOME_FAILED,
        error="late failure",
    )
    for i in range(50):  # distinct ids, so JetStream's dedup window lets every copy through
        for task, event in (("a", forged), ("b", failed)):
            with pytest.raises(nats.js.errors.APIError) as refused:
                await js.publish(
                    names.event_subject(done.run_id, task, 1),
                    event.SerializeToString(),
                    headers={"Nats-Msg-Id": f"forged-{task}-{i}"},
                )
            assert refused.value.err_code == SUBJECT_FULL  # the first outcome stays
    # An outcome of an attempt that never ran is stored, and ignored by the resolver.
    stray = events_pb2.TaskEvent()
    stray.CopyFrom(forged)
    stray.attempt = 7
    await js.publish(names.event_subject(done.run_id, "a", 7), stray.SerializeToString())

    async def applied() -> bool:
        info = await js.consumer_info(names.EVENTS_STREAM, names.RESOLVER_CONSUMER)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await eventually(applied, message="events consumed")
    after = (await stub.GetRun(api.GetRunRequest(run_id=done.run_id), timeout=10)).run
    assert {t.task_id: (t.state, t.result_json, t.attempts) for t in after.tasks} == before
    assert after.state == pb.RUN_STATE_COMPLETED
    assert len(cluster.starts("b")) == 1  # the dependent was not dispatched again


async def test_outcome_that_overtakes_its_dispatch_record_is_deferred_not_lost(
    cluster: Cluster, js: Any
) -> None:
    # The resolver publishes a dispatch together with the write that records it, so an outcome
    # can reach a resolver while its task still reads PENDING. Simulate that order with no
    # executor online: b's outcome first, then the outcome of a that makes b dispatched.
    first = await cluster.start("executor")  # registers the methods, then goes away
    first.terminate()
    resolver = await cluster.start("resolver")
    stub = await stub_for(resolver)
    document = """
tasks:
  - {id: a, method: test/ledger, params: {value: 1}}
  - {id: b, method: test/ledger, dependencies: [a], params: {inputs: ["${a}"]}}
"""
    run = await submit(stub, document)

    async def outcome(task: str, value: int) -> None:
        event = events_pb2.TaskEvent(
            format_version=2,
            run_id=run.run_id,
            task_id=task,
            attempt=1,
            outcome=events_pb2.TASK_OUTCOME_SUCCEEDED,
            result_json=str(value),
            executor_id="elsewhere",
        )
        await js.publish(
            names.event_subject(run.run_id, task, 1),
            event.SerializeToString(),
            headers={"Nats-Msg-Id": names.event_msg_id(run.run_id, task, 1, 0)},
        )

    await outcome("b", 42)

    async def offered_again() -> bool:
        info = await js.consumer_info(names.EVENTS_STREAM, names.RESOLVER_CONSUMER)
        return bool(info.num_redelivered >= 1)

    await eventually(offered_again, message="the early outcome was offered again")
    await outcome("a", 1)
    done = await wait_done(stub, run.run_id)
    assert done.state == pb.RUN_STATE_COMPLETED
    assert result(tasks_by_id(done)["b"]) == 42  # the early outcome, kept until it fit
    assert cluster.executions() == []


async def test_a_stale_dispatch_whose_attempt_has_reported_does_not_run(
    cluster: Cluster, js: Any
) -> None:
    # The outcome is stored (so the attempt is over) but no resolver has recorded it in KV yet:
    # a dispatch of that attempt handed out again must be skipped on the stream's word.
    first = await cluster.start("executor")  # registers the methods, then goes away
    first.terminate()
    resolver = await cluster.start("resolver")
    run = await submit(await stub_for(resolver), "tasks: [{id: only, method: test/ledger}]")
    resolver.terminate()
    event = events_pb2.TaskEvent(
        format_version=2,
        run_id=run.run_id,
        task_id="only",
        attempt=1,
        outcome=events_pb2.TASK_OUTCOME_SUCCEEDED,
        result_json="41",
        executor_id="elsewhere",
    )
    await js.publish(names.event_subject(run.run_id, "only", 1), event.SerializeToString())
    dispatched = await js.get_last_msg(
        names.DISPATCH_STREAM, names.dispatch_subject("test/ledger", run.run_id, "only")
    )
    lease = float(FAST["STELLWERK_TASK_LEASE"])

    async def older_than_the_lease() -> bool:
        return time.time() - dispatched.time.timestamp() > lease + 0.2

    await eventually(older_than_the_lease, message="the dispatch is older than the lease")
    await cluster.start("executor")  # an old delivery is checked before it runs

    async def consumed() -> bool:
        return (await js.stream_info(names.DISPATCH_STREAM)).state.messages == 0

    await eventually(consumed, message="the stale dispatch was acknowledged")
    assert cluster.starts("only") == []
    resolver = await cluster.start("resolver")
    done = await wait_done(await stub_for(resolver), run.run_id)
    assert result(tasks_by_id(done)["only"]) == 41


async def test_lost_dispatch_is_redispatched_by_the_reconciler(cluster: Cluster, js: Any) -> None:
    first = await cluster.start("executor")  # registers the methods, then goes away
    first.terminate()
    resolver = await cluster.start("resolver")
    await cluster.start("monitor")
    stub = await stub_for(resolver)
    run = await submit(stub, "tasks: [{id: only, method: test/ledger, params: {value: 5}}]")
    # Lose the dispatch, as if the resolver had died between its state write and its publish.
    await js.purge_stream(names.DISPATCH_STREAM)
    await cluster.start("executor")
    done = await wait_done(stub, run.run_id, timeout=60)
    task = tasks_by_id(done)["only"]
    assert done.state == pb.RUN_STATE_COMPLETED
    assert result(task) == 5 and task.attempts == 1  # a re-dispatch is not a new attempt
    assert len(cluster.starts("only")) == 1


async def test_killed_executor_hands_its_attempt_to_another(cluster: Cluster) -> None:
    resolver = await cluster.start("resolver")
    victim = await cluster.start("executor", STELLWERK_EXECUTOR_ID="victim")
    stub = await stub_for(resolver)
    run = await submit(
        stub, "tasks: [{id: slow, method: test/ledger, params: {seconds: 3, value: 2}}]"
    )
    await eventually(lambda: _true(cluster.starts("slow")), message="handler started")
    victim.kill()
    await cluster.start("executor", STELLWERK_EXECUTOR_ID="heir")
    done = await wait_done(stub, run.run_id, timeout=60)
    task = tasks_by_id(done)["slow"]
    assert done.state == pb.RUN_STATE_COMPLETED and task.executor_id == "heir"
    starts = cluster.starts("slow")
    assert len(starts) == 2 and starts[0]["pid"] == victim.pid
    assert starts[0]["key"] == starts[1]["key"]  # same idempotency key for the re-run
    assert task.attempts == 1


async def test_sigterm_drains_a_running_handler(cluster: Cluster) -> None:
    resolver = await cluster.start("resolver")
    executor = await cluster.start("executor")
    stub = await stub_for(resolver)
    run = await submit(stub, "tasks: [{id: slow, method: test/ledger, params: {seconds: 1.5}}]")
    await eventually(lambda: _true(cluster.starts("slow")), message="handler started")
    assert executor.terminate() == 0
    done = await wait_done(stub, run.run_id)
    assert done.state == pb.RUN_STATE_COMPLETED
    assert len(cluster.starts("slow")) == 1  # finished during the drain, not re-run


async def test_sigterm_past_the_drain_timeout_hands_over_at_once(cluster: Cluster) -> None:
    resolver = await cluster.start("resolver")
    executor = await cluster.start(
        "executor",
        STELLWERK_DRAIN_TIMEOUT="0",
        STELLWERK_TASK_LEASE="60",
        STELLWERK_EXECUTOR_ID="leaving",
    )
    stub = await stub_for(resolver)
    run = await submit(stub, "tasks: [{id: slow, method: test/ledger, params: {seconds: 2}}]")
    await eventually(lambda: _true(cluster.starts("slow")), message="handler started")
    assert executor.terminate() == 0
    await cluster.start("executor", STELLWERK_EXECUTOR_ID="staying", STELLWERK_TASK_LEASE="60")
    # With a 60 s lease, only the released claim (nak) explains a quick hand-over.
    done = await wait_done(stub, run.run_id, timeout=30)
    assert tasks_by_id(done)["slow"].executor_id == "staying"


async def test_resolver_killed_mid_run_resumes_from_kv(cluster: Cluster) -> None:
    resolver = await cluster.start("resolver", STELLWERK_RESOLVER_LISTEN="127.0.0.1:0")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    tasks = [{"id": "t0", "method": "test/ledger", "params": {"value": 0, "seconds": 0.05}}]
    tasks += [
        {
            "id": f"t{i}",
            "method": "test/ledger",
            "dependencies": [f"t{i - 1}"],
            "params": {"value": 1, "inputs": [f"${{t{i - 1}}}"], "seconds": 0.05},
        }
        for i in range(1, 30)
    ]
    run = await submit(stub, json.dumps({"tasks": tasks}))
    await eventually(lambda: _true(len(cluster.starts("t5")) > 0), message="chain under way")
    resolver.kill()
    second = await cluster.start("resolver")
    done = await wait_done(await stub_for(second), run.run_id, timeout=90)
    assert done.state == pb.RUN_STATE_COMPLETED
    assert result(tasks_by_id(done)["t29"]) == 29
    counts = Counter(e["task"] for e in cluster.executions() if e["ev"] == "start")
    assert set(counts.values()) == {1}  # no task ran twice


async def test_poison_task_fails_after_bounded_deliveries(cluster: Cluster) -> None:
    resolver = await cluster.start("resolver")
    stub = await stub_for(resolver)
    env = {"STELLWERK_MAX_DELIVERIES": "2", "STELLWERK_TASK_LEASE": "1"}
    await cluster.start("executor", **env)
    document = """
tasks:
  - {id: poison, method: test/crash}
  - {id: after, method: test/ledger, dependencies: [poison]}
  - {id: fine, method: test/ledger}
"""
    run = await submit(stub, document)

    async def finished_with_restarts() -> bool:
        # A supervisor's job: restart executors as the poison kills them.
        live = [
            p
            for p in cluster.procs
            if p.service == "executor" and p.process and p.process.poll() is None
        ]
        if not live:
            await cluster.start("executor", **env)
        reply = await stub.GetRun(
            api.GetRunRequest(run_id=run.run_id, view=pb.RUN_VIEW_BASIC), timeout=10
        )
        return reply.run.state != pb.RUN_STATE_RUNNING

    await eventually(finished_with_restarts, timeout=90, interval=0.2, message="poison run ended")
    done = (await stub.GetRun(api.GetRunRequest(run_id=run.run_id), timeout=10)).run
    tasks = tasks_by_id(done)
    assert done.state == pb.RUN_STATE_FAILED
    assert tasks["poison"].state == pb.TASK_STATE_FAILED and "poison" in tasks["poison"].error
    assert tasks["after"].state == pb.TASK_STATE_BLOCKED
    assert tasks["fine"].state == pb.TASK_STATE_COMPLETED
    assert len(cluster.starts("poison")) == 2  # ran exactly MAX_DELIVERIES times


async def test_fan_in_of_200_dispatches_the_join_once_with_two_resolvers(cluster: Cluster) -> None:
    first = await cluster.start("resolver")
    await cluster.start("resolver")
    await cluster.start("executor", STELLWERK_EXECUTOR_CONCURRENCY="64")
    await cluster.start("executor", STELLWERK_EXECUTOR_CONCURRENCY="64")
    stub = await stub_for(first)
    tasks = [{"id": f"p{i}", "method": "test/ledger", "params": {"value": i}} for i in range(200)]
    tasks.append(
        {
            "id": "join",
            "method": "test/ledger",
            "dependencies": [f"p{i}" for i in range(200)],
            "params": {"value": 0, "inputs": [f"${{p{i}}}" for i in range(200)]},
        }
    )
    done = await wait_done(
        stub, (await submit(stub, json.dumps({"tasks": tasks}))).run_id, timeout=120
    )
    assert done.state == pb.RUN_STATE_COMPLETED
    assert result(tasks_by_id(done)["join"]) == sum(range(200))
    assert len(cluster.starts("join")) == 1
    counts = Counter(e["task"] for e in cluster.executions() if e["ev"] == "start")
    assert max(counts.values()) == 1


def _true(value: object) -> Any:
    async def probe() -> object:
        return value

    return probe()
