"""``make bench``: every system, every workload, several runs; the table, JSON and chart.

    .venv/bin/python -m bench [--quick] [--runs N] [--systems a,b,...]

Each run measures every system in turn (so ratios compare figures taken minutes apart on the
same machine), writes what it has so far, and the end writes ``bench/results/latest.json``,
``latest.md`` and ``latest.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import peers, report
from bench.stellwerk_bench import BenchConfig, run_stellwerk
from stellwerk.core.natsd import find_binary

__all__ = ["main"]

RESULTS = peers.BENCH_DIR / "results"
LOGS = RESULTS / "tmp"
ALL_SYSTEMS = list(report.SYSTEMS)
HEADLINE = [
    "tasks_per_s",
    "resolution_p50_ms",
    "resolution_p99_ms",
    "per_hop_ms",
    "fan_tasks_per_s",
    "submit_10k_s",
    "resolver_rss_mb",
    "cli_hop_ms",
    "watch_overhead",
    "cpu_us_per_task_2_resolvers",
    "cpu_ratio_2_resolvers",
]
# Figures of every system side by side at the top level: {system: median}.
BY_SYSTEM = {
    "cpu_us_per_task": {
        "stellwerk": "stellwerk",
        "gleitzeit_redis": "gleitzeit_redis",
        "celery": "celery_redis",
    },
}


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _command_output(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def _stellwerk_revision() -> str:
    root = peers.BENCH_DIR.parent
    rev = _command_output("git", "-C", str(root), "rev-parse", "--short", "HEAD")
    dirty = _command_output("git", "-C", str(root), "status", "--porcelain", "--", "services")
    return f"{rev}{' + uncommitted changes in services/' if dirty else ''}"


def _brief(system: str, figures: dict[str, Any]) -> str:
    parts = []
    for key in (
        "per_hop_ms",
        "tasks_per_s",
        "fan_tasks_per_s",
        "resolution_p50_ms",
        "resolution_p99_ms",
        "submit_10k_s",
        "resolver_rss_mb",
        "cli_hop_ms",
        "watch_overhead",
        "cpu_us_per_task",
        "cpu_ratio_2_resolvers",
    ):
        value = figures.get(key)
        if isinstance(value, int | float):
            parts.append(f"{key}={value:,.2f}")
    errors = figures.get("errors") or []
    if errors:
        parts.append(f"ERRORS={len(errors)}: {errors[0][:200]}")
    return f"{system}: " + ", ".join(parts)


async def _one_system(
    system: str,
    args: argparse.Namespace,
    config: BenchConfig,
    redis: peers.Redis | None,
    run_index: int,
) -> dict[str, Any]:
    # Other processes on the machine skew every figure: keep the load next to them.
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    figures = await _measure(system, args, config, redis, run_index)
    figures["loadavg_1m_before"] = load
    return figures


async def _measure(
    system: str,
    args: argparse.Namespace,
    config: BenchConfig,
    redis: peers.Redis | None,
    run_index: int,
) -> dict[str, Any]:
    if system.startswith("stellwerk"):
        return await run_stellwerk(
            config,
            sync_always=system.endswith("sync_always"),
            tracing=system.endswith("tracing"),
        )
    if redis is None:
        return {"errors": [f"{system} skipped: {args.redis_problem}"]}
    log = LOGS / f"{system}-run{run_index}.log"
    if system.startswith("gleitzeit"):
        backend = system.split("_", 1)[1]
        cli = [
            "--redis-pid",
            str(redis.pid),
            "--backend",
            backend,
            "--redis-url",
            f"{redis.url}/0",
            "--chains",
            str(config.chains),
            "--log-level",
            args.gleitzeit_log_level,
        ]
        return await asyncio.to_thread(peers.run_peer, "gleitzeit", cli, env={}, log=log)
    cli = [
        "--redis-pid",
        str(redis.pid),
        "--chains",
        str(config.chains),
        "--worker-log",
        str(log.with_suffix(".worker.log")),
    ]
    return await asyncio.to_thread(
        peers.run_peer, "celery", cli, env={"BENCH_REDIS_URL": redis.url}, log=log
    )


def _document(
    args: argparse.Namespace, runs: list[dict[str, Any]], meta: dict[str, Any]
) -> dict[str, Any]:
    summary = report.aggregate(runs)
    ours = summary["systems"].get("stellwerk", {})
    doc: dict[str, Any] = {key: (ours[key]["median"] if key in ours else None) for key in HEADLINE}
    for key in ("vs_gleitzeit", "vs_celery", "hop_vs_gleitzeit"):
        doc[key] = summary["ratios"][key]["median"] if key in summary["ratios"] else None
    for key, systems in BY_SYSTEM.items():
        doc[key] = {
            shown: summary["systems"].get(system, {}).get(key, {}).get("median")
            for shown, system in systems.items()
        }
    doc["note"] = (
        "Top-level figures are Stellwerk's (nats-server default fsync), medians over runs, "
        "except cpu_us_per_task (every system's); "
        "summary.systems has min/median/max per system and figure; summary.ratios the "
        "ratios (Stellwerk's figure / the peer's) computed pair by pair within each run, then "
        "spread over runs."
    )
    doc.update(meta)
    doc["generated_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc["quick"] = args.quick
    doc["runs_done"] = len(runs)
    doc["summary"] = summary
    doc["runs"] = runs
    return doc


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    LOGS.mkdir(parents=True, exist_ok=True)
    for stale in LOGS.glob("*.log"):
        stale.unlink()
    timings: dict[str, Any] = {}
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(ALL_SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
    meta: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "versions": {
            "stellwerk": _stellwerk_revision(),
            "nats_server": _command_output(find_binary(), "--version"),
        },
        "method": {
            "completion": "the run's end_time stamped by the resolver (Stellwerk), the last "
            "task's date_done (Celery), the awaited engine call (Gleitzeit, in process); the "
            "harness polls GetRun BASIC one run at a time to notice the end",
            "latency_window": "diamonds of 20 submitted at a steady 500 tasks/s; p50/p99 from "
            "the resolver's stellwerk_resolution_seconds histogram delta over the window, "
            "interpolated linearly inside buckets",
            "stellwerk_stack": "nats-server + resolver + executor + monitor, separate processes",
            "cpu_us_per_task": "user + system CPU (/proc/<pid>/stat) over W2 of every process "
            "of the system / 2,000 tasks: Stellwerk's services and nats-server; Gleitzeit's "
            "process (the engine runs in it) and Redis; Celery's worker, its pool and Redis. "
            "Not the harness's client",
            "cli_hop_ms": "(wall of `stellwerk run` of a 200-task mcp/tool.add chain with "
            "${t<i-1>.result} references - wall of a 1-task run) / 199, median of rounds; "
            "watch_overhead divides it by the same chain polled with GetRun (end_time)",
        },
        "timings_s": timings,
    }
    t = time.monotonic()
    need_peers = any(not s.startswith("stellwerk") for s in systems)
    if need_peers:
        for name in ("gleitzeit", "celery"):
            if any(s.startswith(name) for s in systems):
                await asyncio.to_thread(peers.ensure_venv, name)
    if not args.no_chart:
        await asyncio.to_thread(peers.ensure_venv, "plot")
    timings["install"] = round(time.monotonic() - t, 1)
    redis: peers.Redis | None = None
    args.redis_problem = ""
    if need_peers:
        binary, args.redis_problem = peers.ensure_redis_server()
        if binary is not None:
            redis = peers.Redis(binary).start()
            meta["versions"]["redis"] = redis.version()
    config = BenchConfig(
        chains=args.chains or (3 if args.quick else 5),
        latency_seconds=5.0 if args.quick else 10.0,
        w4_wait=not args.quick,
        cli_rounds=2 if args.quick else 3,
    )
    runs: list[dict[str, Any]] = []
    try:
        for index in range(1, args.runs + 1):
            run: dict[str, Any] = {}
            for system in systems:
                t = time.monotonic()
                _log(f"run {index}/{args.runs}: {system} ...")
                figures = await _one_system(system, args, config, redis, index)
                run[system] = figures
                timings.setdefault(system, []).append(round(time.monotonic() - t, 1))
                if figures.get("version"):
                    meta["versions"][system.split("_")[0]] = figures["version"]
                _log(_brief(system, figures))
            runs.append(run)
            partial = _document(args, runs, meta)
            (LOGS / "partial.json").write_text(json.dumps(partial, indent=1))
    finally:
        if redis is not None:
            redis.stop()
    timings["total"] = round(time.monotonic() - started, 1)
    return _document(args, runs, meta)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints the table and writes bench/results/latest.*."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="one run, shorter windows")
    parser.add_argument("--runs", type=int, help="runs (default 3; 1 with --quick)")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    parser.add_argument("--chains", type=int, default=0, help="40-task chains per run")
    parser.add_argument("--gleitzeit-log-level", default="WARNING")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--out", default=str(RESULTS), help="directory for latest.*")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    doc = asyncio.run(_bench(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(doc, indent=1) + "\n")
    table = report.markdown(doc["summary"])
    (out / "latest.md").write_text(table)
    if not args.no_chart:
        chart = subprocess.run(
            [
                str(peers.venv_python("plot")),
                str(peers.BENCH_DIR / "chart.py"),
                str(out / "latest.json"),
                str(out / "latest.png"),
            ],
            capture_output=True,
            text=True,
        )
        if chart.returncode != 0:
            _log(f"chart failed: {chart.stderr[-500:]}")
    print(table)
    errors = [
        f"run {i + 1} {system}: {e[:300]}"
        for i, run in enumerate(doc["runs"])
        for system, figures in run.items()
        for e in figures.get("errors") or []
    ]
    for line in errors:
        print(f"error: {line}")
    print(f"timings [s]: {json.dumps(doc['timings_s'])}")
    return 0
