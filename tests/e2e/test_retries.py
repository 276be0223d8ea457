"""Retries and timeouts end to end: services as processes against a real nats-server.

Delays are measured from the attempt times the run records (executor clocks), with a tolerance.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import grpc
import pytest

from stellwerk.core import names
from stellwerk_api.events.v1 import events_pb2
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc
from tests.e2e.conftest import HANDLER_ENV, serving
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done
from tests.e2e.test_observability import METRICS, scrape
from tests.e2e.test_recovery import Cluster, cluster, js, stub_for  # noqa: F401 -- fixtures
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess

EARLY = 0.05  # an attempt never starts before it is due (clocks: one machine)
LATE = 0.6  # nor much after (fetch timing, a loaded 2-core box)


def gaps(task: pb.TaskRun) -> list[float]:
    """Seconds from the end of each attempt to the start of the next."""
    history = list(task.attempt_history)
    return [
        (b.start_time.ToNanoseconds() - a.end_time.ToNanoseconds()) / 1e9
        for a, b in itertools.pairwise(history)
    ]


def assert_delays(task: pb.TaskRun, expected: list[float]) -> None:
    measured = gaps(task)
    assert len(measured) == len(expected), (measured, expected)
    for got, want in zip(measured, expected, strict=True):
        assert want - EARLY <= got <= want + LATE, (measured, expected)


async def get(stub: Any, run_id: str) -> pb.Run:
    return (await stub.GetRun(api.GetRunRequest(run_id=run_id), timeout=10)).run


RETRIES = """
tasks:
  - id: exp
    method: test/flaky
    params: {succeed_on: 3}
    retry: {max_attempts: 4, backoff: exponential, base_delay: 0.4, jitter: false}
  - id: lin
    method: test/fail
    retry: {max_attempts: 3, backoff: linear, base_delay: 0.3, jitter: false}
  - id: fixed
    method: test/flaky
    params: {succeed_on: 3}
    retry_config: {max_attempts: 3, backoff_strategy: fixed, base_delay: 0.3, jitter: false}
  - id: capped
    method: test/flaky
    params: {succeed_on: 3}
    retry: {max_attempts: 3, base_delay: 1, max_delay: 1, jitter: false}
  - id: once
    method: test/fail
  - id: refused
    method: test/refuse
    retry: {max_attempts: 5, base_delay: 0.1}
  - id: after
    method: test/identity
    dependencies: [exp]
    params: {got: "${exp.attempt}"}
"""


async def test_retries_follow_the_policy(cluster: Cluster) -> None:  # noqa: F811
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    done = await wait_done(stub, (await submit(stub, RETRIES)).run_id)
    tasks = tasks_by_id(done)
    exp = tasks["exp"]
    assert (exp.state, exp.attempts, result(exp)) == (pb.TASK_STATE_COMPLETED, 3, {"attempt": 3})
    assert [a.number for a in exp.attempt_history] == [1, 2, 3]
    assert [bool(a.error) for a in exp.attempt_history] == [True, True, False]
    assert all(a.executor_id for a in exp.attempt_history)
    assert_delays(exp, [0.4, 0.8])  # base * 2^(n-1)
    lin = tasks["lin"]
    assert (lin.state, lin.attempts) == (pb.TASK_STATE_FAILED, 3)
    assert "told to fail" in lin.error
    assert_delays(lin, [0.3, 0.6])  # base * n
    assert_delays(tasks["fixed"], [0.3, 0.3])  # Gleitzeit's later spelling works alike
    assert_delays(tasks["capped"], [1.0, 1.0])  # 1, 2 -> capped at max_delay 1
    once = tasks["once"]
    assert (once.state, once.attempts, len(once.attempt_history)) == (pb.TASK_STATE_FAILED, 1, 1)
    refused = tasks["refused"]
    assert (refused.state, refused.attempts) == (pb.TASK_STATE_FAILED, 1)
    assert "refused" in refused.error
    assert result(tasks["after"])["params"] == {"got": 3}
    # Every attempt ran exactly once.
    assert [e["attempt"] for e in cluster.starts("exp")] == [1, 2, 3]
    assert [e["attempt"] for e in cluster.starts("refused")] == [1]


async def test_a_waiting_retry_survives_a_restart_of_everything(cluster: Cluster) -> None:  # noqa: F811
    resolver = await cluster.start("resolver")
    executor = await cluster.start("executor")
    monitor = await cluster.start("monitor")
    stub = await stub_for(resolver)
    document = """
tasks:
  - id: slow-retry
    method: test/flaky
    params: {succeed_on: 2}
    retry: {max_attempts: 2, backoff: fixed, base_delay: 6, jitter: false}
"""
    run_id = (await submit(stub, document)).run_id

    async def waiting() -> bool:
        task = (await get(stub, run_id)).tasks[0]
        return task.state == pb.TASK_STATE_RETRY_WAIT

    await eventually(waiting, timeout=30, message="task in RETRY_WAIT")
    task = (await get(stub, run_id)).tasks[0]
    assert task.attempts == 1 and task.HasField("retry_time")
    due = task.retry_time.ToNanoseconds() / 1e9
    explained = await stub.ExplainRun(api.ExplainRunRequest(run_id=run_id), timeout=10)
    [why] = explained.tasks
    assert why.reason == api.WAIT_REASON_RETRY
    assert why.state == pb.TASK_STATE_RETRY_WAIT
    assert why.until_time.ToNanoseconds() / 1e9 == pytest.approx(due, abs=0.01)
    assert "attempt 2 is due" in why.summary
    # Everything dies while the retry waits: the services and nats-server.
    for proc in (resolver, executor, monitor):
        proc.kill()
    cluster.nats.kill()
    cluster.nats.start()
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    await cluster.start("monitor")
    stub = await stub_for(resolver)
    done = await wait_done(stub, run_id, timeout=60)
    task = done.tasks[0]
    assert (task.state, task.attempts) == (pb.TASK_STATE_COMPLETED, 2)
    assert [e["attempt"] for e in cluster.starts("slow-retry")] == [1, 2]  # not lost, not doubled
    second = task.attempt_history[1].start_time.ToNanoseconds() / 1e9
    assert second >= due - EARLY


TIMEOUTS = """
tasks:
  - id: thread
    method: test/block-thread
    params: {seconds: 60}
    timeout: 0.5
  - id: silent
    method: test/beats
    params: {for: 1.0, every: 0.1, then: 30}
    heartbeat_timeout: 0.5
  - id: beating
    method: test/beats
    params: {for: 1.0, every: 0.1}
    heartbeat_timeout: 0.5
  - id: retried
    method: test/block-thread
    params: {seconds: 60}
    timeout: 0.3
    retry: {max_attempts: 2, base_delay: 0.1, jitter: false}
  - id: served-after
    method: test/noop
    dependencies: [thread, silent, retried]
    params: {value: 1}
"""


async def test_each_timeout_kind_fails_its_attempt(cluster: Cluster) -> None:  # noqa: F811
    resolver = await cluster.start("resolver")
    await cluster.start("executor", STELLWERK_EXECUTOR_CONCURRENCY="8")
    stub = await stub_for(resolver)
    done = await wait_done(stub, (await submit(stub, TIMEOUTS)).run_id, timeout=60)
    tasks = tasks_by_id(done)
    assert tasks["thread"].state == pb.TASK_STATE_FAILED
    assert "timed out after 0.5 s (the task's timeout)" in tasks["thread"].error
    assert tasks["silent"].state == pb.TASK_STATE_FAILED
    assert "no heartbeat for 0.5 s (the task's heartbeat_timeout)" in tasks["silent"].error
    assert tasks["beating"].state == pb.TASK_STATE_COMPLETED
    assert (tasks["retried"].state, tasks["retried"].attempts) == (pb.TASK_STATE_FAILED, 2)
    assert tasks["served-after"].state == pb.TASK_STATE_BLOCKED
    # Three abandoned threads still sleep; the executor keeps serving.
    follow = await submit(stub, "tasks:\n  - {id: x, method: test/noop, params: {value: 7}}\n")
    assert result((await wait_done(stub, follow.run_id)).tasks[0]) == 7


async def test_abandoned_threads_are_counted(nats_server: Any) -> None:
    procs = [
        ServiceProcess("resolver", nats_server.url, env=HANDLER_ENV).start(),
        ServiceProcess("executor", nats_server.url, env=HANDLER_ENV, args=METRICS).start(),
    ]
    try:
        for proc in procs:
            await eventually(lambda p=proc: serving(p.address), timeout=60, message="serving")
        async with grpc.aio.insecure_channel(procs[0].address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            document = "tasks:\n  - {id: t, method: test/block-thread, timeout: 0.3}\n"
            done = await wait_done(stub, (await submit(stub, document)).run_id)
            assert "timed out" in done.tasks[0].error
        gauge = ("stellwerk_abandoned_threads", ())
        assert scrape(procs[1])[gauge] == 1.0
    finally:
        for proc in procs:
            proc.terminate(timeout=15)


async def test_a_retry_handed_out_again_after_it_reported_does_not_run(
    cluster: Cluster,  # noqa: F811
    js: Any,  # noqa: F811
) -> None:
    """A retry's dispatch is handed back until due, then run and acknowledged. Chaos runs saw
    such a delivery come back afterwards as a *first* delivery of a young message (a restarted
    nats-server, a dead cluster node), and run again. Every retry is checked before it runs:
    its stored outcome says the attempt is over."""
    resolver = await cluster.start("resolver")
    await cluster.start("executor")
    stub = await stub_for(resolver)
    run = await submit(
        stub,
        "tasks: [{id: f, method: test/flaky, params: {succeed_on: 2},"
        " retry: {max_attempts: 2, base_delay: 0.2, jitter: false}}]",
    )
    done = await wait_done(stub, run.run_id)
    assert result(tasks_by_id(done)["f"]) == {"attempt": 2}
    assert len(cluster.starts("f")) == 2
    again = events_pb2.TaskDispatch(
        format_version=names.EVENT_FORMAT_VERSION,
        run_id=run.run_id,
        task_id="f",
        attempt=2,
        method="test/flaky",
        params_json='{"succeed_on": 2}',
        idempotency_key=names.idempotency_key(run.run_id, "f", 2),
    )
    again.not_before.FromNanoseconds(time.time_ns() - 1_000_000_000)
    subject = names.dispatch_subject("test/flaky", run.run_id, "f")
    await js.publish(subject, again.SerializeToString())

    async def consumed() -> bool:
        return (await js.stream_info(names.DISPATCH_STREAM)).state.messages == 0

    await eventually(consumed, message="the repeated retry was acknowledged")
    assert len(cluster.starts("f")) == 2
