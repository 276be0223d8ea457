"""CPU per task of each process (resolver, executor, nats-server) during W2-like bursts.

.venv/bin/python -m bench.cpu_split --rounds 4

Each round submits 100 diamonds of 20 no-op tasks at once and waits for all of them; the CPU
time each process spent (``/proc/<pid>/stat``: user + system) is divided by the tasks run. This
is where a round's time goes, not a throughput figure (`make bench` gives that).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import grpc
from tests.e2e.conftest import HANDLER_ENV, serving
from tests.support.polling import eventually
from tests.support.processes import ROOT, ServiceProcess

from bench import shapes
from bench.cpu import cpu_seconds
from bench.stellwerk_bench import document
from stellwerk.core.natsd import NatsServer
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as wf_grpc


async def one_round(stub: wf_grpc.WorkflowServiceAsyncStub, pids: dict[str, int]) -> str:
    doc = document("diamond", shapes.diamond())
    tasks = shapes.DIAMOND_WORKFLOWS * shapes.DIAMOND_TASKS
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    request = api.StartRunRequest(document=doc, document_format="json")
    runs = await asyncio.gather(
        *(stub.StartRun(request, timeout=60) for _ in range(shapes.DIAMOND_WORKFLOWS))
    )
    for reply in runs:
        get = api.GetRunRequest(run_id=reply.run.run_id, view=pb.RUN_VIEW_BASIC)

        async def ended(get: api.GetRunRequest = get) -> bool:
            state = (await stub.GetRun(get, timeout=30)).run.state
            return bool(state != pb.RUN_STATE_RUNNING)

        await eventually(ended, timeout=120, interval=0.05)
    elapsed = time.perf_counter() - started
    spent = {name: (cpu_seconds(pid) - before[name]) / tasks * 1e6 for name, pid in pids.items()}
    return f"{tasks / elapsed:,.0f} tasks/s (with polling slack); CPU µs per task: " + ", ".join(
        f"{name} {value:.0f}" for name, value in spent.items()
    )


async def main(rounds: int) -> None:
    server = NatsServer.start_new()
    env = {
        **HANDLER_ENV,
        "STELLWERK_HANDLER_MODULES": "bench.noop_handlers",
        "PYTHONPATH": os.pathsep.join([HANDLER_ENV["PYTHONPATH"], str(ROOT)]),
    }
    resolver = ServiceProcess("resolver", server.url, env=env).start()
    executor = ServiceProcess("executor", server.url, env=env).start()
    try:
        for proc in (resolver, executor):
            await eventually(lambda p=proc: serving(p.address), timeout=60)
        assert resolver.process and executor.process and server.process
        pids = {
            "resolver": resolver.process.pid,
            "executor": executor.process.pid,
            "nats-server": server.process.pid,
        }
        async with grpc.aio.insecure_channel(resolver.address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            for _ in range(rounds):
                print(await one_round(stub, pids), flush=True)
    finally:
        resolver.terminate()
        executor.terminate()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    asyncio.run(main(parser.parse_args().rounds))
