"""Gleitzeit 0.0.5 on the benchmark's DAG shapes; runs inside its own virtualenv.

    python gleitzeit_bench.py --backend redis --redis-url redis://127.0.0.1:PORT/0 --chains 5

Prints one JSON object on its last stdout line. Workflows run the way Gleitzeit's own client
runs them natively (``submit_workflow`` then ``_execute_workflow``: level by level). The no-op
method is ``mcp/tool.add``, which Gleitzeit 0.0.5 declares in its MCP protocol but no provider
implements: a minimal in-process provider is registered for it through the normal registry
path. Every workload gets a fresh engine and fresh storage, because a long-lived engine slows
down as its in-memory results accumulate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cpu
import shapes
from gleitzeit.core import ExecutionEngine  # type: ignore[import-not-found]
from gleitzeit.core.models import TaskStatus  # type: ignore[import-not-found]
from gleitzeit.core.workflow_loader import (  # type: ignore[import-not-found]
    load_workflow_from_dict,
    validate_workflow,
)
from gleitzeit.persistence.factory import (  # type: ignore[import-not-found]
    PersistenceFactory,
    PersistenceType,
)
from gleitzeit.protocols import MCP_PROTOCOL_V1  # type: ignore[import-not-found]
from gleitzeit.providers.base import ProtocolProvider  # type: ignore[import-not-found]
from gleitzeit.registry import ProtocolProviderRegistry  # type: ignore[import-not-found]
from gleitzeit.task_queue import (  # type: ignore[import-not-found]
    DependencyResolver,
    QueueManager,
)

METHOD = "mcp/tool.add"
MAX_CONCURRENT = 10  # ExecutionEngine's own default


class NoopProvider(ProtocolProvider):  # type: ignore[misc]
    """Provides the declared-but-unprovided ``mcp/tool.add`` as a no-op."""

    def __init__(self) -> None:
        super().__init__(provider_id="bench-noop", protocol_id="mcp/v1", name="bench no-op")

    async def handle_request(self, method: str, params: dict[str, Any]) -> Any:
        return 0  # a JSON-RPC response needs a result: None counts as "neither result nor error"

    async def initialize(self) -> None:
        self._initialized = True

    async def shutdown(self) -> None:
        self._initialized = False

    async def health_check(self) -> bool:
        return True

    def get_supported_methods(self) -> list[str]:
        return [METHOD]


class Bench:
    """Builds fresh engines on one backend and runs the shapes."""

    def __init__(self, backend: str, redis_url: str, workdir: Path, redis_pid: int = 0) -> None:
        self.backend = backend
        self.redis_url = redis_url
        # The engine runs in this process; with Redis, the server's CPU counts too.
        self.pids = [os.getpid()] + ([redis_pid] if backend == "redis" and redis_pid else [])
        self.workdir = workdir
        self._serial = 0

    async def engine(self) -> tuple[Any, Any]:
        """A fresh engine on fresh storage (and its persistence adapter)."""
        self._serial += 1
        if self.backend == "redis":
            import redis  # type: ignore[import-not-found]

            redis.Redis.from_url(self.redis_url).flushdb()
            persistence = await PersistenceFactory.create(
                persistence_type=PersistenceType.REDIS, redis_url=self.redis_url
            )
        elif self.backend == "sqlite":
            path = self.workdir / f"gleitzeit-{self._serial}.db"
            persistence = await PersistenceFactory.create(
                persistence_type=PersistenceType.SQL, sql_db_path=str(path)
            )
        else:
            persistence = await PersistenceFactory.create(persistence_type=PersistenceType.MEMORY)
        registry = ProtocolProviderRegistry()
        registry.register_protocol(MCP_PROTOCOL_V1)
        provider = NoopProvider()
        await provider.initialize()
        registry.register_provider("bench-noop", "mcp/v1", provider)
        engine = ExecutionEngine(
            registry=registry,
            queue_manager=QueueManager(),
            dependency_resolver=DependencyResolver(),
            persistence=persistence,
            max_concurrent_tasks=MAX_CONCURRENT,
        )
        return engine, persistence

    @staticmethod
    def workflow(name: str, nodes: list[shapes.Node]) -> Any:
        # Task ids are global in Gleitzeit (results are keyed by task id alone): prefix them.
        doc = {
            "id": name,
            "name": name,
            "tasks": [
                {
                    "id": f"{name}-{n.id}",
                    "method": METHOD,
                    "params": {},
                    "dependencies": [f"{name}-{d}" for d in n.deps],
                }
                for n in nodes
            ],
        }
        return load_workflow_from_dict(doc)

    @staticmethod
    async def run(engine: Any, wf: Any) -> None:
        await engine.submit_workflow(wf)
        await engine._execute_workflow(wf)
        bad = [
            t.id
            for t in wf.tasks
            if t.id not in engine.task_results
            or engine.task_results[t.id].status != TaskStatus.COMPLETED
        ]
        if bad:
            raise RuntimeError(f"{len(bad)} task(s) of {wf.id} did not complete, e.g. {bad[0]}")

    @staticmethod
    async def close(engine: Any, persistence: Any) -> None:
        try:
            await persistence.shutdown()
        except Exception:  # closing is best effort; the next run gets fresh storage anyway
            traceback.print_exc()

    async def w1(self, chains: int) -> list[float]:
        """Per-hop ms of ``chains`` sequential 40-task chains (after one warm-up chain)."""
        engine, persistence = await self.engine()
        try:
            await self.run(engine, self.workflow("warm", shapes.chain(10)))
            samples = []
            for i in range(chains):
                # Building the Workflow (Gleitzeit's load + validation) counts, as a submit does.
                started = time.perf_counter()
                await self.run(engine, self.workflow(f"chain{i}", shapes.chain()))
                samples.append((time.perf_counter() - started) / shapes.CHAIN_TASKS * 1000)
            return samples
        finally:
            await self.close(engine, persistence)

    async def w2(self) -> dict[str, float]:
        """Tasks/s of 100 concurrent 20-task diamonds, and the CPU µs per task of this process
        (the engine) and the Redis server."""
        engine, persistence = await self.engine()
        tasks = shapes.DIAMOND_WORKFLOWS * shapes.DIAMOND_TASKS
        try:
            cpu_before = cpu.total_cpu_seconds(self.pids)
            started = time.perf_counter()
            wfs = [
                self.workflow(f"d{i}", shapes.diamond()) for i in range(shapes.DIAMOND_WORKFLOWS)
            ]
            await asyncio.gather(*(self.run(engine, wf) for wf in wfs))
            elapsed = time.perf_counter() - started
            spent = cpu.total_cpu_seconds(self.pids) - cpu_before
            return {"tasks_per_s": tasks / elapsed, "cpu_us_per_task": spent / tasks * 1e6}
        finally:
            await self.close(engine, persistence)

    async def w3(self) -> float:
        """Tasks/s of one 1,000-task fan-out/fan-in."""
        engine, persistence = await self.engine()
        try:
            started = time.perf_counter()
            await self.run(engine, self.workflow("fan", shapes.diamond(shapes.FAN_TASKS)))
            return shapes.FAN_TASKS / (time.perf_counter() - started)
        finally:
            await self.close(engine, persistence)

    async def w4(self) -> float:
        """Seconds to load, validate and submit a 10,000-task DAG (nothing runs)."""
        engine, persistence = await self.engine()
        try:
            nodes = shapes.layered()
            started = time.perf_counter()
            wf = self.workflow("large", nodes)
            problems = validate_workflow(wf)
            if problems:
                raise RuntimeError(f"Gleitzeit refused the 10k DAG: {problems[:3]}")
            await engine.submit_workflow(wf)
            return time.perf_counter() - started
        finally:
            await self.close(engine, persistence)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # Importing gleitzeit calls logging.basicConfig(level=INFO), which logs several lines per
    # task; by default the harness runs it at WARNING, as a deployment would (and as the other
    # systems run), which makes Gleitzeit faster, not slower.
    logging.getLogger().setLevel(args.log_level.upper())
    out: dict[str, Any] = {
        "system": "gleitzeit",
        "version": version("gleitzeit"),
        "backend": args.backend,
        "max_concurrent_tasks": MAX_CONCURRENT,
        "log_level": args.log_level.upper(),
        "errors": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-gleitzeit-") as tmp:
        bench = Bench(args.backend, args.redis_url, Path(tmp), args.redis_pid)

        async def do_w1() -> dict[str, Any]:
            samples = await bench.w1(args.chains)
            return {"per_hop_samples_ms": samples, "per_hop_ms": statistics.median(samples)}

        async def do_w2() -> dict[str, Any]:
            return await bench.w2()

        async def do_w3() -> dict[str, Any]:
            return {"fan_tasks_per_s": await bench.w3()}

        async def do_w4() -> dict[str, Any]:
            return {"submit_10k_s": await bench.w4()}

        steps = {"w1": do_w1, "w2": do_w2, "w3": do_w3, "w4": do_w4}
        for name in args.workloads.split(","):
            try:
                started = time.perf_counter()
                out.update(await steps[name]())
                out[f"{name}_elapsed_s"] = round(time.perf_counter() - started, 3)
            except Exception as exc:  # report and go on with the other workloads
                traceback.print_exc()
                out["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["redis", "sqlite", "memory"], required=True)
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    parser.add_argument("--redis-pid", type=int, default=0, help="its CPU counts in W2")
    parser.add_argument("--chains", type=int, default=5)
    parser.add_argument("--workloads", default="w1,w2,w3,w4")
    parser.add_argument("--log-level", default="WARNING")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result))
