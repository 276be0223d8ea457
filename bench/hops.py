"""Per-hop latency of a chain of no-op tasks, with 1 or 2 resolvers (services as processes).

.venv/bin/python -m bench.hops --tasks 200 --resolvers 1 --runs 3
.venv/bin/python -m bench.hops --tasks 200 --runs 3 --method test/anoop --tracing   # into Jaeger
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import grpc
from tests.e2e.conftest import HANDLER_ENV, serving
from tests.support.jaeger import Jaeger
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess

from stellwerk.core.natsd import NatsServer
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc


def chain(n: int, method: str) -> str:
    tasks = [{"id": "t0", "method": method, "params": {"value": 0}}]
    tasks += [{"id": f"t{i}", "method": method, "dependencies": [f"t{i - 1}"]} for i in range(1, n)]
    return json.dumps({"name": "chain", "tasks": tasks})


async def one_run(stub: wf_grpc.WorkflowServiceAsyncStub, n: int, method: str) -> float:
    """Per-hop ms of one chain: submit to the end time the resolver stamps, found by polling
    (a WatchRun stream would cost the resolver CPU on every hop)."""
    started = time.time()
    request = api.StartRunRequest(document=chain(n, method), document_format="json")
    run = (await stub.StartRun(request, timeout=60)).run
    get = api.GetRunRequest(run_id=run.run_id, view=pb.RUN_VIEW_BASIC)

    async def ended() -> bool:
        return bool((await stub.GetRun(get, timeout=30)).run.state != pb.RUN_STATE_RUNNING)

    await eventually(ended, timeout=300, interval=0.02)
    end = (await stub.GetRun(get, timeout=30)).run.end_time.ToNanoseconds() / 1e9
    return (end - started) / n * 1000


async def main(n: int, resolvers: int, runs: int, method: str, tracing: bool = False) -> None:
    server = NatsServer.start_new()
    # Tracing on: every service exports every span to a real Jaeger over OTLP/gRPC.
    jaeger = Jaeger.start_new() if tracing else None
    env = {**HANDLER_ENV, **(jaeger.otel_env("grpc") if jaeger else {})}
    procs = [ServiceProcess("resolver", server.url, env=env).start() for _ in range(resolvers)]
    procs.append(ServiceProcess("executor", server.url, env=env).start())
    try:
        for proc in procs:
            await eventually(lambda p=proc: serving(p.address), timeout=60)
        async with grpc.aio.insecure_channel(procs[0].address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            await one_run(stub, 10, method)  # warm up
            hops = [await one_run(stub, n, method) for _ in range(runs)]
        print(
            f"chain of {n} {method}, {resolvers} resolver(s), tracing "
            f"{'on' if tracing else 'off'}: ms per hop median "
            f"{statistics.median(hops):.2f} (min {min(hops):.2f}, max {max(hops):.2f}, {runs} runs)"
        )
    finally:
        for proc in procs:
            proc.terminate()
        server.stop()
        if jaeger is not None:
            jaeger.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--resolvers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--method", default="test/noop", help="test/noop (sync) or test/anoop")
    parser.add_argument(
        "--tracing", action="store_true", help="export spans to a Jaeger (make jaeger builds it)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.resolvers, args.runs, args.method, args.tracing))
