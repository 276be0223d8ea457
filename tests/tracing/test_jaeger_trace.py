"""One run is one trace, in a real Jaeger: the three services as processes export over OTLP,
and the trace is found through Jaeger's own query API.

The run is a 3-task chain whose first dispatch is lost on purpose (removed from the stream before
any executor starts), so the monitor's reconciler re-dispatches it — in another process, from the
context the submit stored with the run — and the trace holds spans of all three services: the
submit and each resolution pass (resolver), the re-dispatch (monitor), each task (executor).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import nats
import pytest

from stellwerk.core import names
from stellwerk.core.natsd import NatsServer
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc
from tests.e2e.conftest import HANDLER_ENV, serving
from tests.e2e.helpers import submit, wait_done
from tests.support.jaeger import Jaeger
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess

CHAIN = """
name: traced chain
tasks:
  - {id: a, method: test/anoop, params: {value: 1}}
  - {id: b, method: test/anoop, dependencies: [a], params: {value: "${a}"}}
  - {id: c, method: test/anoop, dependencies: [b], params: {value: "${b}"}}
"""
SERVICES = ("stellwerk-resolver", "stellwerk-executor", "stellwerk-monitor")


@pytest.fixture
def jaeger() -> Iterator[Jaeger]:
    server = Jaeger.start_new()
    try:
        yield server
    finally:
        server.stop()


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


def service_of(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return str(trace["processes"][span["processID"]]["serviceName"])


def trace_of_run(jaeger: Jaeger, run_id: str) -> dict[str, Any] | None:
    """The trace whose spans name ``run_id``, once it holds what a finished chain makes."""
    found = [
        t
        for t in jaeger.traces("stellwerk-resolver", tags=f'{{"stellwerk.run_id":"{run_id}"}}')
        if any(tags(s).get("stellwerk.run_id") == run_id for s in t["spans"])
    ]
    if len(found) != 1:
        return None
    trace = found[0]
    spans = trace["spans"]
    by_name = [s["operationName"] for s in spans]
    complete = (
        by_name.count("stellwerk.task") >= 3
        and by_name.count("stellwerk.resolve") >= 3
        and {service_of(trace, s) for s in spans} >= set(SERVICES)
    )
    return trace if complete else None


async def test_one_run_is_one_trace_across_all_three_services(
    jaeger: Jaeger, nats_server: NatsServer
) -> None:
    settings = {
        **HANDLER_ENV,
        **jaeger.otel_env("grpc"),
        "STELLWERK_DEDUP_WINDOW": "2",  # the reconciler acts after dedup/2 + 1 s
        "STELLWERK_RECONCILE_INTERVAL": "0.5",
    }
    resolver = ServiceProcess("resolver", nats_server.url, env=settings).start()
    monitor = ServiceProcess("monitor", nats_server.url, env=settings).start()
    executor: ServiceProcess | None = None
    try:
        for proc in (resolver, monitor):
            await eventually(lambda p=proc: serving(p.address), timeout=60)
        async with grpc.aio.insecure_channel(resolver.address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            run = await submit(stub, CHAIN, allow_unregistered_methods=True)
            # Lose the first dispatch: no executor runs yet, so it still waits in the stream.
            nc = await nats.connect(nats_server.url)
            try:
                subject = names.dispatch_subject("test/anoop", run.run_id, "a")
                await nc.jetstream().purge_stream(names.DISPATCH_STREAM, subject=subject)
            finally:
                await nc.close()
            executor = ServiceProcess("executor", nats_server.url, env=settings).start()
            done = await wait_done(stub, run.run_id, timeout=60)
        assert done.state == pb.RUN_STATE_COMPLETED, done

        trace = await eventually(
            lambda: _async(trace_of_run(jaeger, run.run_id)),
            timeout=30,
            interval=0.25,
            message=f"one trace of run {run.run_id} with spans of {', '.join(SERVICES)}",
        )
    finally:
        for proc in (resolver, monitor, executor):
            if proc is not None:
                proc.terminate()

    spans = trace["spans"]
    assert {s["traceID"] for s in spans} == {trace["traceID"]}
    ids = {s["spanID"] for s in spans}
    roots = [s for s in spans if not any(r["refType"] == "CHILD_OF" and r["spanID"] in ids
                                         for r in s["references"])]  # fmt: skip
    assert len(roots) == 1 and roots[0]["operationName"].endswith("/StartRun"), roots

    tasks = [s for s in spans if s["operationName"] == "stellwerk.task"]
    assert {service_of(trace, s) for s in tasks} == {"stellwerk-executor"}
    assert sorted(tags(s)["stellwerk.task_id"] for s in tasks) == ["a", "b", "c"]
    for span in tasks:
        assert tags(span)["stellwerk.method"] == "test/anoop"
        assert tags(span)["stellwerk.attempt"] == 1
        assert tags(span)["stellwerk.outcome"] == "succeeded"

    redispatched = [s for s in spans if service_of(trace, s) == "stellwerk-monitor"
                    and s["operationName"] == "stellwerk.dispatch"]  # fmt: skip
    assert [
        (tags(s)["stellwerk.task_id"], tags(s)["stellwerk.generation"]) for s in redispatched
    ] == [("a", 1)]

    resolves = {tags(s)["stellwerk.task_id"]: s for s in spans
                if s["operationName"] == "stellwerk.resolve"}  # fmt: skip
    assert set(resolves) == {"a", "b", "c"}
    for task_id, ready in (("a", 1), ("b", 1), ("c", 0)):
        span = resolves[task_id]
        attributes = tags(span)
        assert service_of(trace, span) == "stellwerk-resolver"
        assert attributes["stellwerk.run_id"] == attributes["stellwerk.workflow_id"] == run.run_id
        assert attributes["stellwerk.ready_count"] == ready
        assert 0 <= attributes["stellwerk.event_lag_ms"] < 10_000
        assert 0 < span["duration"] < 10_000_000  # µs: received → dependents' dispatch acked
    # Each pass continues the executor's task span whose outcome triggered it.
    by_id = {s["spanID"]: s for s in spans}
    for task_id, span in resolves.items():
        parent = by_id[span["references"][0]["spanID"]]
        assert parent["operationName"] == "stellwerk.task"
        assert tags(parent)["stellwerk.task_id"] == task_id


async def _async(value: Any) -> Any:
    return value
