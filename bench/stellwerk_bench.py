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

from bench import shapes
from bench.promtext import Histogram, fetch_histogram
from bench.stack import Stack, rss_mb
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc

__all__ = ["BenchConfig", "document", "run_stellwerk"]

METHOD = "bench/noop"
HISTOGRAM = "stellwerk_dependency_resolution_seconds"
TERMINAL = (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED)
RPC_TIMEOUT = 120.0


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
    ) -> None:
        self.chains = chains
        self.latency_seconds = latency_seconds
        self.latency_rate = latency_rate
        self.w4_wait = w4_wait
        self.w5 = w5
        self.w5_workflows = w5_workflows
        self.executors = executors
        self.monitor = monitor


def document(
    name: str, nodes: list[shapes.Node], params: dict[str, dict[str, Any]] | None = None
) -> str:
    """A workflow file (JSON) of ``nodes``; ``params`` gives (method, params) overrides."""
    tasks = []
    for node in nodes:
        task: dict[str, Any] = {"id": node.id, "method": METHOD}
        if params and node.id in params:
            task.update(params[node.id])
        if node.deps:
            task["dependencies"] = list(node.deps)
        tasks.append(task)
    return json.dumps({"name": name, "tasks": tasks})


def _seconds(ts: Any) -> float:
    return float(ts.ToNanoseconds()) / 1e9


class Client:
    """The WorkflowService calls the workloads need."""

    def __init__(self, stub: wf_grpc.WorkflowServiceAsyncStub) -> None:
        self.stub = stub

    async def submit(self, doc: str, *, skip_method_check: bool = False) -> str:
        request = api.StartRunRequest(
            document=doc, document_format="json", allow_unregistered_methods=skip_method_check
        )
        reply = await self.stub.StartRun(request, timeout=RPC_TIMEOUT)
        return str(reply.run.run_id)

    async def ended(self, run_id: str, *, within: float, interval: float) -> float:
        """Poll until the run ends; returns its ``end_time`` (epoch seconds)."""
        deadline = time.monotonic() + within
        request = api.GetRunRequest(run_id=run_id, view=pb.RUN_VIEW_BASIC)
        while True:
            run = (await self.stub.GetRun(request, timeout=RPC_TIMEOUT)).run
            if run.state in TERMINAL:
                if run.state != pb.RUN_STATE_COMPLETED:
                    raise RuntimeError(f"run {run_id} ended {pb.RunState.Name(run.state)}")
                return _seconds(run.end_time)
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still running after {within} s")
            await asyncio.sleep(interval)

    async def all_ended(self, run_ids: list[str], *, within: float = 600.0) -> float:
        """The latest ``end_time`` of ``run_ids``, asking about one run at a time."""
        deadline = time.monotonic() + within
        last = 0.0
        for run_id in run_ids:
            left = max(1.0, deadline - time.monotonic())
            last = max(last, await self.ended(run_id, within=left, interval=0.1))
        return last


async def settled_histogram(address: str | None) -> Histogram | None:
    """Scrape until two scrapes 100 ms apart agree (observations may trail the end by a hair)."""
    if address is None:
        return None
    previous = await asyncio.to_thread(fetch_histogram, address, HISTOGRAM)
    for _ in range(20):
        await asyncio.sleep(0.1)
        current = await asyncio.to_thread(fetch_histogram, address, HISTOGRAM)
        if current is None or previous is None or current.count == previous.count:
            return current
        previous = current
    return previous


def latency_figures(before: Histogram | None, after: Histogram | None) -> dict[str, Any]:
    """p50/p99/mean (ms) of the observations between two scrapes; ``None`` when unavailable."""
    if before is None or after is None:
        return {"p50_ms": None, "p99_ms": None, "mean_ms": None, "count": 0, "buckets": []}
    delta = after.minus(before)
    p50, p99 = delta.quantile(0.5), delta.quantile(0.99)
    return {
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
        "mean_ms": delta.sum / delta.count * 1000 if delta.count else None,
        "count": delta.count,
        "buckets": [[lo * 1000, hi * 1000, n] for lo, hi, n in delta.densities()],
    }


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


async def w2(client: Client) -> float:
    """End-to-end tasks/s of 100 concurrently submitted 20-task diamonds."""
    doc = document("diamond", shapes.diamond())
    started = time.time()
    ids = await asyncio.gather(*(client.submit(doc) for _ in range(shapes.DIAMOND_WORKFLOWS)))
    ended = await client.all_ended(list(ids))
    return shapes.DIAMOND_WORKFLOWS * shapes.DIAMOND_TASKS / (ended - started)


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
) -> str | None:
    stack = Stack(
        sync_always=sync_always,
        executors=config.executors,
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

        async def do_w2() -> dict[str, Any]:
            before = await settled_histogram(stack.metrics_address)
            tps = await w2(client)
            during = latency_figures(before, await settled_histogram(stack.metrics_address))
            return {
                "tasks_per_s": tps,
                "w2_resolution_p50_ms": during["p50_ms"],
                "w2_resolution_p99_ms": during["p99_ms"],
            }

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
        await _step(out, "w2", do_w2)
        await _step(out, "w3", do_w3)
        await _step(out, "latency", do_latency)
        await _step(out, "w4", do_w4)

    started = time.perf_counter()
    failure = await _with_stack(config, sync_always, main_stack)
    if failure:
        out["errors"].append(failure)
    if config.w5:

        async def held_stack(client: Client, stack: Stack) -> None:
            await _step(out, "w5", lambda: w5(client, stack, config.w5_workflows))

        # 100,000 tasks are still queued: tear the stack down instead of running them.
        failure = await _with_stack(config, sync_always, held_stack, kill=True)
        if failure:
            out["errors"].append(failure)
    out["elapsed_s"]["total"] = round(time.perf_counter() - started, 2)
    return out


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
