"""Runtime behaviour with processes started per test: routing, health before NATS, retention."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

from stellwerk.core import names
from stellwerk.core.natsd import NatsServer, free_port
from stellwerk.core.settings import Settings
from stellwerk.monitor._janitor import Janitor
from stellwerk_api.execution.v1 import executor_service_pb2 as exe
from stellwerk_api.execution.v1 import executor_service_pb2_grpc as exe_grpc
from stellwerk_api.monitoring.v1 import monitor_service_pb2 as mon
from stellwerk_api.monitoring.v1 import monitor_service_pb2_grpc as mon_grpc
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc
from tests.e2e.conftest import HANDLER_ENV, serving
from tests.e2e.helpers import submit, tasks_by_id, wait_done
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def kv_counts(nats_server: NatsServer) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_server.url)

    async def counts() -> dict[str, int]:
        js = nc.jetstream()
        out = {}
        for bucket in (names.RUNS_BUCKET, names.TASKS_BUCKET):
            info = await js.stream_info(f"KV_{bucket}")
            out[bucket] = info.state.messages
        return out

    yield counts
    await nc.close()


async def test_dispatches_are_routed_by_method(nats_server: NatsServer) -> None:
    """An executor only receives the methods it serves; the others wait for one that does."""
    url = nats_server.url
    plain = ServiceProcess("executor", url, env={"STELLWERK_EXECUTOR_ID": "plain"}).start()
    resolver = ServiceProcess("resolver", url).start()
    special: ServiceProcess | None = None
    try:
        for proc in (plain, resolver):
            await eventually(lambda p=proc: serving(p.address), timeout=60)
        async with grpc.aio.insecure_channel(resolver.address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            document = (
                "tasks: [{id: a, method: mcp/tool.echo, params: {message: hi}},"
                " {id: b, method: test/noop, params: {value: 3}}]"
            )
            run = await submit(stub, document, allow_unregistered_methods=True)

            async def echo_done() -> bool:
                done = tasks_by_id((await stub.GetRun(pb_get(run.run_id), timeout=10)).run)
                return done["a"].state == pb.TASK_STATE_COMPLETED

            await eventually(echo_done, message="echo done by the plain executor")
            waiting = tasks_by_id((await stub.GetRun(pb_get(run.run_id), timeout=10)).run)
            assert waiting["b"].state == pb.TASK_STATE_DISPATCHED  # nobody serves test/noop yet
            special = ServiceProcess(
                "executor", url, env={**HANDLER_ENV, "STELLWERK_EXECUTOR_ID": "special"}
            ).start()
            done = await wait_done(stub, run.run_id)
            tasks = tasks_by_id(done)
            assert done.state == pb.RUN_STATE_COMPLETED
            assert tasks["a"].executor_id == "plain"
            assert tasks["b"].executor_id == "special"
    finally:
        for proc in (plain, resolver, special):
            if proc is not None:
                proc.terminate()


def pb_get(run_id: str) -> Any:
    from stellwerk_api.workflow.v1 import workflow_service_pb2 as api

    return api.GetRunRequest(run_id=run_id)


async def test_services_report_not_serving_until_nats_is_reachable(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    procs = [ServiceProcess(name, url).start() for name in ("resolver", "executor", "monitor")]
    server: NatsServer | None = None
    try:
        for proc in procs:
            assert not await serving(proc.address)
        # The resolver answers calls that need NATS with UNAVAILABLE meanwhile.
        async with grpc.aio.insecure_channel(procs[0].address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await submit(wf_grpc.WorkflowServiceStub(channel), "tasks: [{id: a, method: m/x}]")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        server = NatsServer(store_dir=tmp_path / "late", port=port)
        server.store_dir.mkdir()
        server.start()
        for proc in procs:
            await eventually(
                lambda p=proc: serving(p.address), timeout=60, message=f"{proc.service} SERVING"
            )
    finally:
        for proc in procs:
            assert proc.terminate() == 0, proc.logs()
        if server is not None:
            server.stop()


async def test_invalid_submits_write_nothing(nats_server: NatsServer, kv_counts: Any) -> None:
    resolver = ServiceProcess("resolver", nats_server.url).start()
    executor = ServiceProcess("executor", nats_server.url).start()
    try:
        for proc in (resolver, executor):
            await eventually(lambda p=proc: serving(p.address), timeout=60)
        before = await kv_counts()
        async with grpc.aio.insecure_channel(resolver.address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            for document in [
                "tasks: [",
                "tasks: [{id: a, method: mcp/tool.echo, dependencies: [a]}]",
                "tasks: [{id: a, method: no/such}]",
                json.dumps(
                    {
                        "tasks": [
                            {"id": "a", "method": "mcp/tool.echo", "params": {"m": "x" * 2_100_000}}
                        ]
                    }
                ),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await submit(stub, document)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert await kv_counts() == before
    finally:
        resolver.terminate()
        executor.terminate()


async def test_executor_and_monitor_report_their_state(nats_server: NatsServer) -> None:
    url = nats_server.url
    procs = [
        ServiceProcess("resolver", url).start(),
        ServiceProcess(
            "executor",
            url,
            env={**HANDLER_ENV, "STELLWERK_EXECUTOR_ID": "ex-a"},
            args=["--concurrency", "3"],
        ).start(),
        ServiceProcess("monitor", url).start(),
    ]
    try:
        for proc in procs:
            await eventually(lambda p=proc: serving(p.address), timeout=60)
        async with grpc.aio.insecure_channel(procs[0].address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            done = await wait_done(
                stub,
                (
                    await submit(
                        stub, "tasks: [{id: a, method: test/fail}, {id: b, method: test/noop}]"
                    )
                ).run_id,
            )
            assert done.state == pb.RUN_STATE_FAILED
        async with grpc.aio.insecure_channel(procs[1].address) as channel:
            executor_api = exe_grpc.ExecutorServiceStub(channel)
            methods = (await executor_api.ListMethods(exe.ListMethodsRequest(), timeout=10)).methods
            by_name = {m.name: m for m in methods}
            assert by_name["mcp/tool.echo"].kind == exe.METHOD_KIND_BUILTIN
            assert by_name["test/noop"].kind == exe.METHOD_KIND_HANDLER
            page = await executor_api.ListMethods(exe.ListMethodsRequest(page_size=2), timeout=10)
            assert len(page.methods) == 2 and page.next_page_token
            info = (await executor_api.GetExecutor(exe.GetExecutorRequest(), timeout=10)).executor
            assert info.id == "ex-a" and info.concurrency == 3
            assert info.tasks_completed == 1 and info.tasks_failed == 1 and info.tasks_running == 0
        async with grpc.aio.insecure_channel(procs[2].address) as channel:
            overview = await mon_grpc.MonitorServiceStub(channel).GetOverview(
                mon.GetOverviewRequest(), timeout=10
            )
            assert {(c.state, c.count) for c in overview.run_counts} == {(pb.RUN_STATE_FAILED, 1)}
            tasks = {c.state: c.count for c in overview.task_counts}
            assert tasks == {pb.TASK_STATE_FAILED: 1, pb.TASK_STATE_COMPLETED: 1}
            assert [e.id for e in overview.executors] == ["ex-a"] and overview.executors[0].alive
    finally:
        for proc in procs:
            proc.terminate()


async def test_janitor_removes_expired_runs_and_crashed_submits(
    nats_server: NatsServer, kv_counts: Any
) -> None:
    url = nats_server.url
    procs = [ServiceProcess("resolver", url).start(), ServiceProcess("executor", url).start()]
    nc = await nats.connect(url)
    try:
        for proc in procs:
            await eventually(lambda p=proc: serving(p.address), timeout=60)
        async with grpc.aio.insecure_channel(procs[0].address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            kept = await wait_done(
                stub,
                (
                    await submit(
                        stub,
                        "tasks: [{id: a, method: mcp/tool.echo, params: {message: x}}]",
                        request_id="r1",
                    )
                ).run_id,
            )
        js = nc.jetstream()
        runs = await js.key_value(names.RUNS_BUCKET)
        tasks = await js.key_value(names.TASKS_BUCKET)
        executors = await js.key_value(names.EXECUTORS_BUCKET)
        # A submit that crashed after writing part of its tasks: staging marker, no header.
        await runs.put(
            names.staging_key("crashedrun"), json.dumps({"since": time.time() - 3600}).encode()
        )
        await tasks.put(names.task_key("crashedrun", "t1"), b"{}")
        janitor = Janitor(
            js=js,
            runs=runs,
            tasks=tasks,
            executors=executors,
            settings=Settings(retention=100.0, staging_grace=60.0),
        )
        assert await janitor.sweep() == 1  # only the crashed submit; the finished run is young
        assert await tasks_keys(tasks, "crashedrun") == []
        assert await tasks_keys(tasks, kept.run_id) != []
        assert await janitor.sweep(now=time.time() + 101) == 1
        assert await tasks_keys(tasks, kept.run_id) == []
        outcomes = await js.stream_info(names.EVENTS_STREAM, subjects_filter=">")
        assert not any(kept.run_id in subject for subject in (outcomes.state.subjects or {}))
        assert await tasks_keys(runs, ">") == [names.encode_token("x")][:0] or all(
            not k.startswith(("run.", "order.", "fin.", "req.", "staging."))
            for k in await tasks_keys(runs, ">")
        )
    finally:
        await nc.close()
        for proc in procs:
            proc.terminate()


async def tasks_keys(kv: Any, run_or_pattern: str) -> list[str]:
    from stellwerk.core.kvscan import list_keys

    pattern = run_or_pattern if run_or_pattern == ">" else names.task_prefix(run_or_pattern)
    return await list_keys(kv, pattern)


async def test_resolver_serves_its_resolution_histogram(nats_server: NatsServer) -> None:
    import urllib.request

    resolver = ServiceProcess("resolver", nats_server.url, args=["--metrics-listen", "127.0.0.1:0"])
    resolver.start()
    executor = ServiceProcess("executor", nats_server.url).start()
    try:
        for proc in (resolver, executor):
            await eventually(lambda p=proc: serving(p.address), timeout=60)
        line = next(x for x in resolver.output if "metrics on" in x)
        address = line.rsplit(" ", 1)[1].strip()
        async with grpc.aio.insecure_channel(resolver.address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            await wait_done(
                stub,
                (
                    await submit(stub, (ROOT / "examples" / "simple_mcp_workflow.yaml").read_text())
                ).run_id,
            )
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        name = "stellwerk_dependency_resolution_seconds"
        counts = [x for x in text.splitlines() if x.startswith(f"{name}_count")]
        assert counts and float(counts[0].split()[1]) == 4  # one per task event
        assert f'{name}_bucket{{le="+Inf"}} 4.0' in text
    finally:
        resolver.terminate()
        executor.terminate()


async def test_submits_leave_no_consumers_behind(nats_server: NatsServer) -> None:
    resolver = ServiceProcess("resolver", nats_server.url).start()
    executor = ServiceProcess("executor", nats_server.url).start()
    nc = await nats.connect(nats_server.url)
    try:
        for proc in (resolver, executor):
            await eventually(lambda p=proc: serving(p.address), timeout=60)
        js = nc.jetstream()
        buckets = (names.EXECUTORS_BUCKET, names.RUNS_BUCKET, names.TASKS_BUCKET)

        async def consumers() -> dict[str, int]:
            infos = [await js.stream_info(f"KV_{b}") for b in buckets]
            return {b: i.state.consumer_count for b, i in zip(buckets, infos, strict=True)}

        # Long-lived watchers (each service's watch of cancel markers) are there from the start.
        before = await consumers()
        async with grpc.aio.insecure_channel(resolver.address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            for i in range(30):
                method = "mcp/tool.echo" if i % 2 else "no/such"  # unknown methods force a re-read
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await submit(
                        stub, f"tasks: [{{id: a, method: {method}, params: {{message: x}}}}]"
                    )
        assert await consumers() == before  # scans delete their consumers
    finally:
        await nc.close()
        resolver.terminate()
        executor.terminate()
