"""CPU per task of each process (resolver, executor, nats-server) during W2-like bursts, or
per hop of the user's chain (``bench/user_path.py``) followed with ``stellwerk run`` or polled.

.venv/bin/python -m bench.cpu_split --rounds 4
.venv/bin/python -m bench.cpu_split --rounds 5 --chain cli     # or --chain poll

Each burst round submits 100 diamonds of 20 no-op tasks at once and waits for all of them; the
CPU time each process spent (``/proc/<pid>/stat``: user + system) is divided by the tasks run.
A chain round runs the 200-task ``mcp/tool.add`` chain and a 1-task one, and divides the
difference by 199 (the CLI's CPU from ``RUSAGE_CHILDREN``: start-up taken out the same way).
This is where a round's time goes, not a throughput figure (`make bench` gives that).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from tests.e2e.conftest import HANDLER_ENV, serving
from tests.support.polling import eventually
from tests.support.processes import ROOT, ServiceProcess

from bench import shapes, user_path
from bench.client import Client, document
from bench.cpu import precise_cpu_seconds as cpu_seconds
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def chain_round(
    stub: wf_grpc.WorkflowServiceAsyncStub, address: str, pids: dict[str, int], follow: str
) -> dict[str, float]:
    """CPU µs per hop of each process (and the CLI's) for the user's chain."""
    client = Client(stub)
    spent: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        for n in (1, user_path.CHAIN_TASKS):
            path = Path(tmp) / f"chain{n}.json"
            path.write_text(user_path.reference_chain(n))
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            cli_before = _children_cpu()
            if follow == "cli":
                await user_path.cli_seconds(address, path)
            else:
                await user_path.polled_seconds(client, path.read_text())
            for name, pid in pids.items():
                spent.setdefault(name, []).append(cpu_seconds(pid) - before[name])
            spent.setdefault("cli", []).append(_children_cpu() - cli_before)
    hops = user_path.CHAIN_TASKS - 1
    return {name: (many - one) / hops * 1e6 for name, (one, many) in spent.items()}


async def main(rounds: int, chain: str = "") -> None:
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
            if not chain:
                for _ in range(rounds):
                    print(await one_round(stub, pids), flush=True)
                return
            await chain_round(stub, resolver.address, pids, chain)  # warm up
            per_hop = [
                await chain_round(stub, resolver.address, pids, chain) for _ in range(rounds)
            ]
            print(
                f"CPU µs per hop, 200-task mcp/tool.add chain, {chain}: "
                + ", ".join(
                    f"{name} {statistics.median(r[name] for r in per_hop):.0f} "
                    f"({min(r[name] for r in per_hop):.0f}..{max(r[name] for r in per_hop):.0f})"
                    for name in per_hop[0]
                )
                + f"; total {statistics.median(sum(r.values()) for r in per_hop):.0f}",
                flush=True,
            )
    finally:
        resolver.terminate()
        executor.terminate()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--chain", choices=["cli", "poll"], default="", help="the user's chain, not bursts"
    )
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.chain))
