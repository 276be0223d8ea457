"""Circuit breakers and resolution retries end to end: services as processes, a real
nats-server, real gRPC (core/breakers.py, executor/_holds.py, resolver/_resilience.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

import grpc

from stellwerk.core import names
from stellwerk_api.monitoring.v1 import monitor_service_pb2 as mon
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc as mon_grpc
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_client import BreakerState, Client, MonitorClient
from tests.e2e.helpers import submit, tasks_by_id, wait_done
from tests.e2e.test_recovery import Cluster, cluster, js, stub_for  # noqa: F401 -- fixtures
from tests.support.polling import eventually

METHOD = "test/switch"
SCOPE = f"method:{METHOD}"
COOLDOWN = 2.0
# The method breaker opens after 3 failed attempts within a minute, for 2 s; the resolvers
# decide it, so only they need the settings.
METHOD_BREAKER = {
    "STELLWERK_BREAKER_METHOD_THRESHOLD": "3",
    "STELLWERK_BREAKER_METHOD_WINDOW": "60",
    "STELLWERK_BREAKER_METHOD_COOLDOWN": str(COOLDOWN),
}


def _switch_tasks(ids: list[str], flag: Path, attempts: int) -> str:
    retry = f", retry: {{max_attempts: {attempts}, backoff: fixed, base_delay: 0.1}}"
    return "tasks:\n" + "".join(
        f"  - {{id: {t}, method: {METHOD}, params: {{flag: '{flag}'}}{retry}}}\n" for t in ids
    )


async def _get(stub: Any, run_id: str) -> pb.Run:
    reply = await stub.GetRun(api.GetRunRequest(run_id=run_id), timeout=30)
    return reply.run


def _breaker(run: pb.Run | api.ExplainRunResponse, scope: str) -> pb.CircuitBreaker | None:
    found = [b for b in run.breakers if b.scope == scope]
    return found[0] if found else None


async def test_method_breaker_holds_tasks_without_spending_attempts_then_lets_one_trial_through(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    resolver = await cluster.start("resolver", **METHOD_BREAKER)
    await cluster.start("executor")
    stub = await stub_for(resolver)
    flag = tmp_path / "down"
    flag.write_text("the dependency is down")

    # Three attempts of the method fail: the breaker opens.
    first = await submit(stub, _switch_tasks(["f1", "f2", "f3"], flag, attempts=1))
    await wait_done(stub, first.run_id)

    # Tasks of the method submitted now wait: held by the executor, their attempt not spent.
    held = await submit(stub, _switch_tasks(["h1", "h2", "h3"], flag, attempts=3))

    async def opened() -> pb.CircuitBreaker | None:
        breaker = _breaker(await _get(stub, held.run_id), SCOPE)
        return breaker if breaker and breaker.state == pb.BREAKER_STATE_OPEN else None

    breaker = await eventually(opened, message="method breaker OPEN in GetRun")
    assert breaker.failures == 3 and breaker.HasField("retry_time")

    async def explained_held() -> api.ExplainRunResponse | None:
        reply = await stub.ExplainRun(api.ExplainRunRequest(run_id=held.run_id), timeout=30)
        reasons = {t.task_id: t.reason for t in reply.tasks}
        return reply if set(reasons.values()) == {api.WAIT_REASON_BREAKER} else None

    explained = await eventually(explained_held, message="ExplainRun: held by the breaker")
    assert _breaker(explained, SCOPE) is not None
    assert {t.task_id for t in explained.tasks} == {"h1", "h2", "h3"}
    assert not any(cluster.starts(t) for t in ("h1", "h2", "h3"))
    for task in (await _get(stub, held.run_id)).tasks:  # no attempt spent while held
        assert task.attempts <= 1 and not task.attempt_history, task

    # After the cool-down one trial goes; the dependency is still down, so it fails and the
    # breaker opens again: exactly one execution, on attempt 1, the others not started.
    async def one_trial() -> list[dict[str, Any]]:
        return [e for t in ("h1", "h2", "h3") for e in cluster.starts(t)]

    trials = await eventually(one_trial, timeout=COOLDOWN * 5, message="a trial attempt")

    async def reopened() -> pb.CircuitBreaker | None:
        b = _breaker(await _get(stub, held.run_id), SCOPE)
        return b if b and b.state == pb.BREAKER_STATE_OPEN and b.failures == 1 else None

    await eventually(reopened, timeout=COOLDOWN * 5, message="breaker re-opened by the trial")
    trials = await one_trial()
    assert len(trials) == 1 and trials[0]["attempt"] == 1, trials
    trial_task = trials[0]["task"]

    # The dependency comes back: the next trial succeeds and closes the breaker; every task
    # then runs once more (the failed trial's task on attempt 2, the others on attempt 1).
    flag.unlink()
    done = await wait_done(stub, held.run_id, timeout=60)
    assert done.state == pb.RUN_STATE_COMPLETED
    assert _breaker(done, SCOPE) is None
    by_id = tasks_by_id(done)
    for task_id in ("h1", "h2", "h3"):
        expected = 2 if task_id == trial_task else 1
        assert by_id[task_id].attempts == expected, by_id[task_id]
        assert [e["attempt"] for e in cluster.starts(task_id)] == list(range(1, expected + 1))

    overview = await mon_grpc.MonitorServiceStub(
        grpc.aio.insecure_channel(resolver.address)
    ).GetOverview(mon.GetOverviewRequest(), timeout=30)
    assert not [b for b in overview.breakers if b.scope == SCOPE]


async def test_open_method_breaker_shows_in_the_overview_and_the_cli(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    # A cool-down far longer than the test: the breaker must still be OPEN when the held task is
    # looked at (with the 2 s of the trial test, a loaded machine's CLI calls outlasted it, the
    # task became the trial and ran).
    held_long = {**METHOD_BREAKER, "STELLWERK_BREAKER_METHOD_COOLDOWN": "300"}
    resolver = await cluster.start("resolver", **held_long)
    await cluster.start("executor")
    stub = await stub_for(resolver)
    flag = tmp_path / "down"
    flag.write_text("down")
    run = await submit(stub, _switch_tasks(["a", "b", "c"], flag, attempts=1))
    await wait_done(stub, run.run_id)
    monitor = mon_grpc.MonitorServiceStub(grpc.aio.insecure_channel(resolver.address))

    async def in_overview() -> pb.CircuitBreaker | None:
        reply = await monitor.GetOverview(mon.GetOverviewRequest(), timeout=30)
        found = [b for b in reply.breakers if b.scope == SCOPE]
        return found[0] if found else None

    breaker = await eventually(in_overview, message="breaker in the overview")
    assert breaker.state == pb.BREAKER_STATE_OPEN and breaker.failures == 3

    _, out = await _cli(["health", "--address", resolver.address])
    assert f"breaker {SCOPE}: OPEN (3 failures" in out and "resolution retries:" in out, out

    # A task of the method submitted now is held: status, explain and the typed client say so.
    held = await submit(stub, _switch_tasks(["later"], flag, attempts=1))
    _, out = await _cli(["status", held.run_id, "--address", resolver.address])
    assert f"breaker {SCOPE}: OPEN" in out, out

    async def explained() -> str | None:
        _, text = await _cli(["explain", held.run_id, "--address", resolver.address])
        return text if "BREAKER" in text else None

    out = await eventually(explained, message="stellwerk explain: held by the breaker")
    assert f"breaker {SCOPE}: OPEN" in out and "held by the open breaker" in out, out
    async with await Client.connect(resolver.address) as client:
        run = await client.get(held.run_id)
        assert [(b.scope, b.state) for b in run.breakers] == [(SCOPE, BreakerState.OPEN)]
        assert run.breakers[0].failures == 3 and run.breakers[0].retry_at is not None
        explanation = await client.explain(held.run_id)
        assert explanation.breakers[0].scope == SCOPE
        assert explanation.tasks[0].reason == "BREAKER"
    async with await MonitorClient.connect(resolver.address) as monitor_client:
        overview = await monitor_client.get_overview()
        assert [b.scope for b in overview.breakers] == [SCOPE]


async def _cli(argv: list[str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("stellwerk")),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def test_run_breaker_opens_on_repeated_resolution_failures_and_retries_are_counted(
    cluster: Cluster,  # noqa: F811
    js: Any,  # noqa: F811
) -> None:
    """What is injected: the task bucket's stream is set to refuse every message over 64 bytes
    (``max_msg_size``), so each write of a task document during resolution is refused by the
    server — a real KV write refused, reported by nats-py as a NATS error (transient for the
    resolver). It is undone by restoring the stream's configuration."""
    resolver = await cluster.start(
        "resolver",
        STELLWERK_BREAKER_RUN_THRESHOLD="2",
        STELLWERK_BREAKER_RUN_COOLDOWN=str(COOLDOWN),
        STELLWERK_RESOLUTION_ATTEMPTS="2",
    )
    await cluster.start("executor")
    stub = await stub_for(resolver)
    stream = f"KV_{names.TASKS_BUCKET}"
    original = (await js.stream_info(stream)).config
    document = (
        "tasks:\n"
        "  - {id: slow, method: test/ledger, params: {seconds: 1}}\n"
        "  - {id: next, method: test/ledger, dependencies: [slow]}\n"
    )
    run = await submit(stub, document)

    async def running() -> bool:
        return bool(cluster.starts("slow"))

    await eventually(running, message="the first task running")
    await js.update_stream(dataclasses.replace(original, max_msg_size=64))
    try:

        async def opened() -> pb.CircuitBreaker | None:
            b = _breaker(await _get(stub, run.run_id), f"run:{run.run_id}")
            return b if b and b.state == pb.BREAKER_STATE_OPEN else None

        breaker = await eventually(opened, message="run breaker OPEN")
        assert breaker.failures == 2
        explained = await stub.ExplainRun(api.ExplainRunRequest(run_id=run.run_id), timeout=30)
        assert _breaker(explained, f"run:{run.run_id}") is not None
        waits = {t.task_id: t for t in explained.tasks}
        assert waits["slow"].reason == api.WAIT_REASON_BREAKER, waits["slow"]
    finally:
        await js.update_stream(original)

    done = await wait_done(stub, run.run_id, timeout=60)
    assert done.state == pb.RUN_STATE_COMPLETED
    assert _breaker(done, f"run:{run.run_id}") is None  # the trial pass closed it
    assert len(cluster.starts("slow")) == 1 and len(cluster.starts("next")) == 1

    monitor = mon_grpc.MonitorServiceStub(grpc.aio.insecure_channel(resolver.address))

    async def retries_counted() -> int:
        reply = await monitor.GetOverview(mon.GetOverviewRequest(), timeout=30)
        return int(reply.resolution_retries)

    # Two passes failed with two tries each: at least one retry in place per pass, and the
    # events handed back.
    assert await eventually(retries_counted, message="resolution retries in the overview") >= 2
