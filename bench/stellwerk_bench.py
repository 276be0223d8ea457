"""Stellwerk's side of the benchmark: W1-W5 and the resolution-latency window, over gRPC
against a :class:`bench.stack.Stack`.

Every figure that ends at "the workflow finished" uses the run's ``end_time``, which the
resolver stamps when it commits the run's final state; the harness notices the end by polling
``GetRun`` (BASIC view) one run at a time, every 20-100 ms, so neither its polling load nor
its detection lag enters the figures.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from bench import shapes, user_path
from bench.client import RPC_TIMEOUT, Client, document
from bench.cpu import cpu_seconds
from bench.promtext import latency_figures, settled_histogram
from bench.stack import Stack, rss_mb
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc

__all__ = ["BenchConfig", "document", "run_stellwerk"]


class BenchConfig:
    """Knobs of one Stellwerk pass (QUICK makes them smaller)."""

    def __init__(
        self,
        *,
        chains: int = 5,
        latency_seconds: float = 10.0,
        latency_rate: float = 500.0,
        w4_wait: bool = True,
        w5: bool = True,
        w5_workflows: int = shapes.HELD_WORKFLOWS,
        executors: int = 1,
        monitor: bool = True,
        cli_rounds: int = 3,
        two_resolvers: bool = True,
    ) -> None:
        self.chains = chains
        self.latency_seconds = latency_seconds
        self.latency_rate = latency_rate
        self.w4_wait = w4_wait
        self.w5 = w5
        self.w5_workflows = w5_workflows
        self.executors = executors
        self.monitor = monitor
        self.cli_rounds = cli_rounds
        self.two_resolvers = two_resolvers


async def w1(client: Client, chains: int) -> list[float]:
    """Per-hop ms of ``chains`` sequential 40-task chains, after a 10-task warm-up chain."""
    await client.ended(
        await client.submit(document("warm", shapes.chain(10))), within=60, interval=0.02
    )
    doc = document("chain", shapes.chain())
    samples = []
    for _ in range(chains):
        started = time.time()
        run_id = await client.submit(doc)
        ended = await client.ended(run_id, within=120, interval=0.02)
        samples.append((ended - started) / shapes.CHAIN_TASKS * 1000)
    return samples


async def w2(client: Client, submitters: list[Client] | None = None) -> float:
    """End-to-end tasks/s of 100 concurrently submitted 20-task diamonds (submitted round robin
    through ``submitters``, e.g. one client per resolver; by default through ``client``)."""
    doc = document("diamond", shapes.diamond())
    via = submitters or [client]
    started = time.time()
    ids = await asyncio.gather(
        *(via[i % len(via)].submit(doc) for i in range(shapes.DIAMOND_WORKFLOWS))
    )
    ended = await client.all_ended(list(ids))
    return shapes.DIAMOND_WORKFLOWS * shapes.DIAMOND_TASKS / (ended - started)


async def w2_with_cpu(
    client: Client, stack: Stack, submitters: list[Client] | None = None
) -> dict[str, Any]:
    """W2, and the CPU every process of the stack spent on it (nats-server included) per task:
    ``cpu_us_per_task`` in total and ``cpu_us_per_task_by_process``."""
    pids = stack.pids()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    tps = await w2(client, submitters)
    tasks = shapes.DIAMOND_WORKFLOWS * shapes.DIAMOND_TASKS
    spent = {name: (cpu_seconds(pid) - before[name]) / tasks * 1e6 for name, pid in pids.items()}
    return {
        "tasks_per_s": tps,
        "cpu_us_per_task": sum(spent.values()),
        "cpu_us_per_task_by_process": spent,
    }


async def w3(client: Client) -> float:
    """Tasks/s of one 1,000-task fan-out/fan-in."""
    doc = document("fan", shapes.diamond(shapes.FAN_TASKS))
    started = time.time()
    ended = await client.all_ended([await client.submit(doc)])
    return shapes.FAN_TASKS / (ended - started)


async def paced(client: Client, stack: Stack, *, rate: float, seconds: float) -> dict[str, Any]:
    """Submit diamonds at ``rate`` tasks/s for ``seconds``; the resolver's histogram over it."""
    doc = document("paced", shapes.diamond())
    every = shapes.DIAMOND_TASKS / rate
    count = max(1, round(seconds / every))
    before = await settled_histogram(stack.metrics_address)
    started = time.time()
    clock = time.monotonic()
    submits: list[asyncio.Task[str]] = []
    for i in range(count):
        delay = clock + i * every - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        submits.append(asyncio.create_task(client.submit(doc)))
    ids = await asyncio.gather(*submits)
    ended = await client.all_ended(list(ids))
    after = await settled_histogram(stack.metrics_address)
    out = latency_figures(before, after)
    out["offered_tasks_per_s"] = rate
    out["achieved_tasks_per_s"] = count * shapes.DIAMOND_TASKS / (ended - started)
    out["metrics_endpoint"] = stack.metrics_address is not None
    return out


async def w4(client: Client, wait: bool) -> tuple[float, float | None]:
    """Seconds for StartRun (validate + write + dispatch roots) of a 10,000-task DAG;
    then, if ``wait``, the tasks/s at which it ran."""
    doc = document("large", shapes.layered())
    started_wall, started = time.time(), time.perf_counter()
    run_id = await client.submit(doc)
    submit_s = time.perf_counter() - started
    if not wait:
        return submit_s, None
    ended = await client.all_ended([run_id])
    return submit_s, shapes.LARGE_TASKS / (ended - started_wall)


async def w5(client: Client, stack: Stack, workflows: int) -> dict[str, Any]:
    """Resolver RSS with ``workflows`` held 100-task workflows open (then torn down)."""
    with tempfile.TemporaryDirectory(prefix="bench-w5-") as tmp:
        release = str(Path(tmp) / "release")
        await client.ended(
            await client.submit(document("warm", shapes.chain(10))), within=60, interval=0.02
        )
        baseline, _ = rss_mb(stack.resolver.pid)
        doc = document(
            "held",
            shapes.held(),
            {"gate": {"method": "bench/wait", "params": {"release": release}}},
        )
        gate = asyncio.Semaphore(8)

        async def one() -> str:
            # The method check makes every submit leave a JetStream consumer behind for 30 s;
            # 1,000 submits in a row hit nats-server's consumer limit (an engine bug, reported).
            async with gate:
                return await client.submit(doc, skip_method_check=True)

        started = time.perf_counter()
        ids = await asyncio.gather(*(one() for _ in range(workflows)))
        submit_s = time.perf_counter() - started
        # Let the resolver settle (root dispatches, caches), then read its memory.
        samples = []
        for _ in range(12):
            await asyncio.sleep(0.25)
            samples.append(rss_mb(stack.resolver.pid)[0])
        rss, hwm = rss_mb(stack.resolver.pid)
        request = api.GetRunRequest(run_id=ids[-1], view=pb.RUN_VIEW_BASIC)
        state = (await client.stub.GetRun(request, timeout=RPC_TIMEOUT)).run.state
        await asyncio.to_thread(Path(release).touch)  # release the gates; then tear down
        return {
            "resolver_rss_mb": max(rss, samples[-1]),
            "resolver_hwm_mb": hwm,
            "resolver_rss_baseline_mb": baseline,
            "w5_workflows": workflows,
            "w5_tasks": workflows * shapes.HELD_TASKS,
            "w5_submit_s": submit_s,
            "w5_last_run_state": pb.RunState.Name(state),
        }


async def _step(
    out: dict[str, Any], name: str, fn: Callable[[], Awaitable[dict[str, Any]]]
) -> None:
    started = time.perf_counter()
    try:
        out.update(await fn())
    except Exception as exc:  # one failed workload must not hide the others' figures
        traceback.print_exc()
        out["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
    out["elapsed_s"][name] = round(time.perf_counter() - started, 2)


async def _with_stack(
    config: BenchConfig,
    sync_always: bool,
    body: Callable[[Client, Stack], Awaitable[None]],
    *,
    kill: bool = False,
    env: dict[str, str] | None = None,
    resolvers: int = 1,
) -> str | None:
    stack = Stack(
        sync_always=sync_always,
        executors=config.executors,
        resolvers=resolvers,
        monitor=config.monitor,
        env=dict(env or {}),
    )
    try:
        await stack.start()
        async with grpc.aio.insecure_channel(stack.resolver.address) as channel:
            await body(Client(wf_grpc.WorkflowServiceStub(channel)), stack)
        return None
    except Exception as exc:
        traceback.print_exc()
        return f"stack: {type(exc).__name__}: {exc}\n{stack.logs_tail()}"
    finally:
        stack.stop(kill=kill)


async def run_stellwerk(
    config: BenchConfig, *, sync_always: bool, tracing: bool = False
) -> dict[str, Any]:
    """One pass of every Stellwerk workload on fresh stacks; figures and errors as a dict.

    ``tracing``: every service exports every span to a real Jaeger over OTLP (make jaeger
    builds it); only W1 and W2 run, to set the hop and throughput beside the untraced pass.
    """
    out: dict[str, Any] = {
        "system": "stellwerk",
        "sync_always": sync_always,
        "tracing": tracing,
        "errors": [],
        "elapsed_s": {},
    }
    if tracing:
        return await _traced(config, out)

    async def main_stack(client: Client, stack: Stack) -> None:
        out["metrics_endpoint"] = stack.metrics_address

        async def do_w1() -> dict[str, Any]:
            samples = await w1(client, config.chains)
            return {"per_hop_samples_ms": samples, "per_hop_ms": statistics.median(samples)}

        async def do_user_path() -> dict[str, Any]:
            return await user_path.measure(client, stack.resolver.address, config.cli_rounds)

        async def do_w2() -> dict[str, Any]:
            before = await settled_histogram(stack.metrics_address)
            figures = await w2_with_cpu(client, stack)
            during = latency_figures(before, await settled_histogram(stack.metrics_address))
            figures["w2_resolution_p50_ms"] = during["p50_ms"]
            figures["w2_resolution_p99_ms"] = during["p99_ms"]
            return figures

        async def do_w3() -> dict[str, Any]:
            return {"fan_tasks_per_s": await w3(client)}

        async def do_latency() -> dict[str, Any]:
            window = await paced(
                client, stack, rate=config.latency_rate, seconds=config.latency_seconds
            )
            return {
                "resolution_p50_ms": window["p50_ms"],
                "resolution_p99_ms": window["p99_ms"],
                "resolution_mean_ms": window["mean_ms"],
                "resolution_count": window["count"],
                "resolution_buckets_ms": window["buckets"],
                "latency_offered_tasks_per_s": window["offered_tasks_per_s"],
                "latency_achieved_tasks_per_s": window["achieved_tasks_per_s"],
            }

        async def do_w4() -> dict[str, Any]:
            submit_s, tps = await w4(client, config.w4_wait)
            return {"submit_10k_s": submit_s, "layered_10k_tasks_per_s": tps}

        await _step(out, "w1", do_w1)
        await _step(out, "user_path", do_user_path)
        await _step(out, "w2", do_w2)
        await _step(out, "w3", do_w3)
        await _step(out, "latency", do_latency)
        await _step(out, "w4", do_w4)

    started = time.perf_counter()
    failure = await _with_stack(config, sync_always, main_stack)
    if failure:
        out["errors"].append(failure)
    if config.two_resolvers and not sync_always:
        await _two_resolvers(config, out)
    if config.w5:

        async def held_stack(client: Client, stack: Stack) -> None:
            await _step(out, "w5", lambda: w5(client, stack, config.w5_workflows))

        # 100,000 tasks are still queued: tear the stack down instead of running them.
        failure = await _with_stack(config, sync_always, held_stack, kill=True)
        if failure:
            out["errors"].append(failure)
    out["elapsed_s"]["total"] = round(time.perf_counter() - started, 2)
    return out


async def _two_resolvers(config: BenchConfig, out: dict[str, Any]) -> None:
    """W2 on a stack with two resolver processes (submits alternate between them): the CPU per
    task beside the one-resolver figure, the scale-out proxy a 2-core machine can measure."""

    async def body(client: Client, stack: Stack) -> None:
        second = stack.procs[1]
        async with grpc.aio.insecure_channel(second.address) as channel:
            other = Client(wf_grpc.WorkflowServiceStub(channel))
            await client.ended(
                await client.submit(document("warm", shapes.chain(10))), within=60, interval=0.02
            )
            figures = await w2_with_cpu(client, stack, [client, other])
        out["tasks_per_s_2_resolvers"] = figures["tasks_per_s"]
        out["cpu_us_per_task_2_resolvers"] = figures["cpu_us_per_task"]
        out["cpu_us_per_task_by_process_2_resolvers"] = figures["cpu_us_per_task_by_process"]
        if out.get("cpu_us_per_task"):
            out["cpu_ratio_2_resolvers"] = figures["cpu_us_per_task"] / out["cpu_us_per_task"]

    async def step() -> dict[str, Any]:
        failure = await _with_stack(config, False, body, resolvers=2)
        if failure:
            raise RuntimeError(failure)
        return {}

    await _step(out, "w2_2_resolvers", step)


async def _traced(config: BenchConfig, out: dict[str, Any]) -> dict[str, Any]:
    from tests.support.jaeger import Jaeger  # the bench reuses the tests' Jaeger helper

    try:
        jaeger = Jaeger.start_new()
    except Exception as exc:  # no binary (make jaeger), or it did not start
        out["errors"].append(f"tracing pass skipped: Jaeger: {exc}")
        return out

    async def traced_stack(client: Client, stack: Stack) -> None:
        async def do_w1() -> dict[str, Any]:
            samples = await w1(client, config.chains)
            return {"per_hop_samples_ms": samples, "per_hop_ms": statistics.median(samples)}

        async def do_w2() -> dict[str, Any]:
            return {"tasks_per_s": await w2(client)}

        await _step(out, "w1", do_w1)
        await _step(out, "w2", do_w2)

    started = time.perf_counter()
    try:
        failure = await _with_stack(config, False, traced_stack, env=jaeger.otel_env("grpc"))
    finally:
        jaeger.stop()
    if failure:
        out["errors"].append(failure)
    out["elapsed_s"]["total"] = round(time.perf_counter() - started, 2)
    return out


if __name__ == "__main__":  # a single pass, for trying things out
    import sys

    mode = sys.argv[1] if len(sys.argv) > 1 else "default"
    result = asyncio.run(
        run_stellwerk(BenchConfig(chains=3, latency_seconds=5), sync_always=mode == "always")
    )
    result.pop("resolution_buckets_ms", None)
    print(json.dumps(result, indent=1))
