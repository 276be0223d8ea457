"""Celery (prefork, concurrency 2, Redis broker and result backend) on the benchmark's DAG
shapes; runs inside its own virtualenv.

    BENCH_REDIS_URL=redis://127.0.0.1:PORT python celery_bench.py --chains 5

Starts its own worker process, prints one JSON object on its last stdout line. A chain is a
``chain`` of immutable signatures; a fan-out/fan-in is ``chain(src, chord(group(middle), sink))``.
A workflow's end is the ``date_done`` its last task's result carries (written by the worker), so
the figures do not include the time this script takes to notice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import cpu  # noqa: E402
import redis  # type: ignore[import-not-found]  # noqa: E402
import shapes  # noqa: E402
from celery import chain, chord, group  # type: ignore[import-not-found]  # noqa: E402
from celery_tasks import noop  # noqa: E402

CONCURRENCY = 2
# Celery with a Redis result backend now and then never completes a chord (seen once in W2);
# two minutes is ample for every workload here and bounds what such a run costs.
TIMEOUT = 120.0


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    """A prefork worker with two child processes; returns once it runs a task."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_tasks",
                "worker",
                "--pool=prefork",
                f"--concurrency={CONCURRENCY}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=WARNING",
            ],
            cwd=HERE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])},
        )
    noop.si().apply_async().get(timeout=60)  # the worker is up and consuming
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)  # warm shutdown
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def done_at(result: Any) -> float:
    """Epoch seconds at which the worker finished ``result``'s task."""
    result.get(timeout=TIMEOUT, propagate=True)
    stamp = result.date_done
    if isinstance(stamp, str):
        stamp = datetime.fromisoformat(stamp)
    if stamp is None:
        raise RuntimeError(f"result {result.id} has no date_done")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return float(stamp.timestamp())


def fan(n: int) -> Any:
    """``src -> (n - 2) parallel -> sink``, the shape of shapes.diamond(n)."""
    nodes = shapes.diamond(n)
    assert len(nodes) == n
    return chain(noop.si(), chord(group(noop.si() for _ in range(n - 2)), noop.si()))


def w1(chains: int) -> list[float]:
    chain(*(noop.si() for _ in range(10))).apply_async().get(timeout=TIMEOUT)  # warm up
    samples = []
    for _ in range(chains):
        started = time.time()
        result = chain(*(noop.si() for _ in range(shapes.CHAIN_TASKS))).apply_async()
        samples.append((done_at(result) - started) / shapes.CHAIN_TASKS * 1000)
    return samples


def w2(system_pids: list[int]) -> dict[str, float]:
    """Tasks/s, and the CPU µs per task of the system: the worker, its pool and Redis."""
    tasks = shapes.DIAMOND_WORKFLOWS * shapes.DIAMOND_TASKS
    cpu_before = cpu.total_cpu_seconds(system_pids)
    started = time.time()
    results = [fan(shapes.DIAMOND_TASKS).apply_async() for _ in range(shapes.DIAMOND_WORKFLOWS)]
    ended = max(done_at(r) for r in results)
    spent = cpu.total_cpu_seconds(system_pids) - cpu_before
    return {"tasks_per_s": tasks / (ended - started), "cpu_us_per_task": spent / tasks * 1e6}


def w3() -> float:
    started = time.time()
    result = fan(shapes.FAN_TASKS).apply_async()
    return shapes.FAN_TASKS / (done_at(result) - started)


def main(args: argparse.Namespace) -> dict[str, Any]:
    base = os.environ["BENCH_REDIS_URL"].rstrip("/")
    for db in (1, 2):
        redis.Redis.from_url(f"{base}/{db}").flushdb()
    out: dict[str, Any] = {
        "system": "celery",
        "version": version("celery"),
        "kombu": version("kombu"),
        "redis_py": version("redis"),
        "pool": "prefork",
        "concurrency": CONCURRENCY,
        "errors": [],
    }
    worker = start_worker(Path(args.worker_log))
    system_pids = cpu.with_children(worker.pid) + ([args.redis_pid] if args.redis_pid else [])
    try:
        for name in args.workloads.split(","):
            try:
                started = time.perf_counter()
                if name == "w1":
                    samples = w1(args.chains)
                    out["per_hop_samples_ms"] = samples
                    out["per_hop_ms"] = statistics.median(samples)
                elif name == "w2":
                    out.update(w2(system_pids))
                elif name == "w3":
                    out["fan_tasks_per_s"] = w3()
                else:
                    raise ValueError(f"unknown workload {name}")
                out[f"{name}_elapsed_s"] = round(time.perf_counter() - started, 3)
            except Exception as exc:  # report and go on with the other workloads
                traceback.print_exc()
                out["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        stop_worker(worker)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-pid", type=int, default=0, help="its CPU counts in W2")
    parser.add_argument("--chains", type=int, default=5)
    parser.add_argument("--workloads", default="w1,w2,w3")
    parser.add_argument("--worker-log", default=os.devnull)
    result = main(parser.parse_args())
    print(json.dumps(result), flush=True)
    # Skip interpreter teardown: redis-py's pool threads print import errors during it.
    os._exit(0)
