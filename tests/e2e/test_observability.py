"""Metrics, health and "why is it stuck?" against the three services as processes."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stellwerk.core.natsd import NatsServer
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc
from stellwerk_client import Client
from stellwerk_client.cli import main
from tests.e2e.conftest import HANDLER_ENV, serving
from tests.e2e.helpers import submit, wait_done
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess

METRICS = ["--metrics-listen", "127.0.0.1:0"]
FAST = {**HANDLER_ENV, "STELLWERK_GAUGE_INTERVAL": "0.2", "STELLWERK_TASK_LEASE": "3"}


def scrape(proc: ServiceProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``proc``'s ``/metrics``, by (name, sorted labels)."""
    line = next(x for x in proc.output if "metrics on" in x)
    address = line.rsplit(" ", 1)[1].strip()
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture
def services(nats_server: NatsServer) -> Iterator[dict[str, ServiceProcess]]:
    procs = {
        "resolver": ServiceProcess("resolver", nats_server.url, env=FAST, args=METRICS),
        "executor": ServiceProcess(
            "executor",
            nats_server.url,
            env={**FAST, "STELLWERK_EXECUTOR_ID": "exec-obs"},
            args=METRICS,
        ),
        "monitor": ServiceProcess("monitor", nats_server.url, env=FAST, args=METRICS),
    }
    for proc in procs.values():
        proc.start()
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.terminate()


async def ready(procs: dict[str, ServiceProcess]) -> None:
    for proc in procs.values():
        await eventually(lambda p=proc: serving(p.address), timeout=60, message=proc.service)


DIAMOND = {
    "name": "metrics",
    "tasks": [
        {"id": "a", "method": "mcp/tool.add", "params": {"a": 1, "b": 2}},
        {"id": "b", "method": "mcp/tool.add", "params": {"a": "${a}", "b": 1},
         "dependencies": ["a"]},
        {"id": "c", "method": "test/fail", "dependencies": ["a"]},
        {"id": "d", "method": "mcp/tool.add", "params": {"a": 1, "b": 1},
         "dependencies": ["b", "c"]},
    ],
}  # fmt: skip


async def test_every_metric_is_scraped_with_counts_matching_the_run(
    services: dict[str, ServiceProcess],
) -> None:
    await ready(services)
    async with grpc.aio.insecure_channel(services["resolver"].address) as channel:
        stub = wf_grpc.WorkflowServiceStub(channel)
        run = await submit(stub, json.dumps(DIAMOND), document_format="json")
        done = await wait_done(stub, run.run_id)
    assert done.state == pb.RUN_STATE_FAILED
    resolver = scrape(services["resolver"])
    # Three events (a, b, c): d is BLOCKED without running.
    assert resolver[("stellwerk_dependency_resolution_seconds_count", ())] == 3
    assert resolver[("stellwerk_event_processing_lag_seconds_count", ())] == 3
    assert resolver[("stellwerk_events_applied_total", ())] == 3
    assert ("stellwerk_resolution_retries_total", ()) in resolver
    executor = scrape(services["executor"])
    added = (("method", "mcp/tool.add"), ("outcome", "succeeded"))
    assert executor[("stellwerk_tasks_total", added)] == 2
    failed = (("method", "test/fail"), ("outcome", "failed"))
    assert executor[("stellwerk_tasks_total", failed)] == 1
    assert executor[("stellwerk_task_duration_seconds_count", (("method", "mcp/tool.add"),))] == 2

    def monitor_caught_up() -> dict[Any, float] | None:
        samples = scrape(services["monitor"])
        failed_runs = samples.get(("stellwerk_workflows", (("state", "FAILED"),)))
        return samples if failed_runs == 1 else None

    monitor = await eventually(lambda: asyncio.to_thread(monitor_caught_up), timeout=30)
    assert monitor[("stellwerk_workflows", (("state", "RUNNING"),))] == 0
    assert monitor[("stellwerk_stuck_workflows", ())] == 0
    depth = {k[1]: v for k, v in monitor.items() if k[0] == "stellwerk_queue_depth"}
    assert depth[(("consumer", "resolver"), ("stream", "STELLWERK_EVENTS"))] == 0
    assert any(dict(labels)["stream"] == "STELLWERK_DISPATCH" for labels in depth)


async def test_health_report_and_grpc_health_flip_with_nats(
    services: dict[str, ServiceProcess], nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await ready(services)
    address = services["resolver"].address
    assert await asyncio.to_thread(main, ["health", "--address", address]) == 0
    out = capsys.readouterr().out
    assert out.startswith("healthy") and "progress" in out and "consistency" in out
    assert await asyncio.to_thread(main, ["health", "--address", address, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in report["checks"]] == ["progress", "queue_depth", "consistency"]
    # The monitor answers the same report on its own address.
    monitor_address = services["monitor"].address
    assert await asyncio.to_thread(main, ["health", "--address", monitor_address]) == 0
    capsys.readouterr()

    nats_server.kill()
    for proc in services.values():
        await eventually(lambda p=proc: _not(serving(p.address)), timeout=30, message="down")
    assert await asyncio.to_thread(main, ["health", "--address", address]) == 3
    nats_server.start()
    await ready(services)
    assert await asyncio.to_thread(main, ["health", "--address", address]) == 0


async def _not(probe: Any) -> bool:
    return not await probe


async def _explain(address: str, run_id: str) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await wf_grpc.WorkflowServiceStub(channel).ExplainRun(
            api.ExplainRunRequest(run_id=run_id), timeout=10
        )
    return {
        t.task_id: (api.WaitReason.Name(t.reason).removeprefix("WAIT_REASON_"), t)
        for t in reply.tasks
    }


async def test_explain_names_what_each_task_waits_for(
    services: dict[str, ServiceProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    await ready(services)
    address = services["resolver"].address
    document = {
        "name": "waiting",
        "tasks": [
            {"id": "slow", "method": "test/sleep", "params": {"seconds": 60}},
            {"id": "after", "method": "mcp/tool.add", "params": {"a": 1, "b": 1},
             "dependencies": ["slow"]},
            {"id": "nobody", "method": "no/executor"},
        ],
    }  # fmt: skip
    async with grpc.aio.insecure_channel(address) as channel:
        stub = wf_grpc.WorkflowServiceStub(channel)
        run = await submit(
            stub, json.dumps(document), document_format="json", allow_unregistered_methods=True
        )

    async def claimed() -> dict[str, Any] | None:
        found = await _explain(address, run.run_id)
        reason, task = found["slow"]
        return found if reason == "CLAIMED" and task.executor_id == "exec-obs" else None

    found = await eventually(claimed, timeout=30, message="claim recorded")
    assert found["after"][0] == "DEPENDENCIES" and list(found["after"][1].waiting_for) == ["slow"]
    assert found["nobody"][0] == "QUEUED" and "no executor serves it" in found["nobody"][1].summary
    assert "claimed by exec-obs" in found["slow"][1].summary
    assert found["slow"][1].HasField("until_time")

    # The executor dies: the claim is a dead executor's, and explain says when it lapses.
    services["executor"].kill()

    async def lapsed() -> dict[str, Any] | None:
        found = await _explain(address, run.run_id)
        return found if "lapsed at" in found["slow"][1].summary else None

    await eventually(lapsed, timeout=30, message="lease lapsed")
    assert await asyncio.to_thread(main, ["explain", run.run_id, "--address", address]) == 0
    out = capsys.readouterr().out
    assert "slow" in out and "exec-obs" in out and "waits for slow" in out


async def test_explain_names_the_failed_task_behind_a_blocked_one(
    services: dict[str, ServiceProcess],
) -> None:
    await ready(services)
    address = services["resolver"].address
    async with grpc.aio.insecure_channel(address) as channel:
        stub = wf_grpc.WorkflowServiceStub(channel)
        run = await submit(stub, json.dumps(DIAMOND), document_format="json")
        await wait_done(stub, run.run_id)
    found = await _explain(address, run.run_id)
    assert set(found) == {"d"}
    reason, task = found["d"]
    assert reason == "BLOCKED" and list(task.waiting_for) == ["c"]
    assert "c failed" in task.summary


def test_explain_refuses_ids_that_are_not_run_ids(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "x" * 500, "--address", "127.0.0.1:1"]) == 2
    assert "no run" in capsys.readouterr().err


async def test_the_python_client_explains_and_reports_health(
    services: dict[str, ServiceProcess],
) -> None:
    await ready(services)
    async with await Client.connect(services["resolver"].address) as client:
        run = await client.submit(json.dumps(DIAMOND), document_format="json")
        await client.wait(run.run_id)
        explained = await client.explain(run.run_id)
        report = await client.health()
    assert explained.run.run_id == run.run_id
    [blocked] = explained.tasks
    assert (blocked.task_id, blocked.reason, blocked.waiting_for) == ("d", "BLOCKED", ("c",))
    assert report.healthy and [c.name for c in report.checks] == [
        "progress",
        "queue_depth",
        "consistency",
    ]
    assert any(q.consumer == "resolver" for q in report.queues)


async def test_a_run_waiting_for_a_retry_is_not_reported_stuck(nats_server: NatsServer) -> None:
    """A retry due later is a run waiting by design: the progress check must not call it stuck
    however long the backoff, only once the retry is due and nothing moves."""
    env = {**FAST, "STELLWERK_STUCK_AFTER": "0.5"}
    procs = {
        "resolver": ServiceProcess("resolver", nats_server.url, env=env),
        "executor": ServiceProcess("executor", nats_server.url, env=env),
    }
    for proc in procs.values():
        proc.start()
    try:
        await ready(procs)
        document = (
            "tasks: [{id: slow, method: test/fail,"
            " retry: {max_attempts: 2, base_delay: 60, jitter: false}}]"
        )
        async with await Client.connect(procs["resolver"].address) as client:
            run = await client.submit(document)

            async def waiting_for_its_retry() -> bool:
                [task] = (await client.get(run.run_id)).tasks
                return task.state.value == "RETRY_WAIT"

            await eventually(waiting_for_its_retry, message="the task waits for its retry")
            seen_waiting = time.time()

            async def report_after_stuck_after() -> bool:
                report = await client.health()
                return report.as_of is not None and (report.as_of.timestamp() > seen_waiting + 1.0)

            await eventually(report_after_stuck_after, message="a report past stuck_after")
            report = await client.health()
        progress = next(c for c in report.checks if c.name == "progress")
        assert progress.ok, progress.details
    finally:
        for proc in procs.values():
            proc.terminate()
