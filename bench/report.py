"""Turning runs into the table: min/median/max per figure, pair-by-pair ratios, markdown."""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = [
    "METRICS",
    "SYSTEMS",
    "TARGETS",
    "aggregate",
    "markdown",
    "ratios_of_run",
    "spread",
]

SYSTEMS: dict[str, str] = {
    "stellwerk": "Stellwerk (default fsync)",
    "stellwerk_sync_always": "Stellwerk (sync_interval: always)",
    "stellwerk_tracing": "Stellwerk, tracing on (every span to Jaeger)",
    "gleitzeit_redis": "Gleitzeit 0.0.5, Redis",
    "gleitzeit_sqlite": "Gleitzeit 0.0.5, SQLite",
    "gleitzeit_memory": "Gleitzeit 0.0.5, in memory",
    "celery_redis": "Celery 5.7 + Redis",
}

# key -> (label, unit, decimals, higher is better)
METRICS: dict[str, tuple[str, str, int, bool]] = {
    "tasks_per_s": ("tasks/s, 100 workflows x 20 (W2)", "tasks/s", 0, True),
    "resolution_p50_ms": ("resolution latency p50 at 500 tasks/s", "ms", 2, False),
    "resolution_p99_ms": ("resolution latency p99 at 500 tasks/s", "ms", 2, False),
    "per_hop_ms": ("per hop, 40-task chain (W1)", "ms", 2, False),
    "fan_tasks_per_s": ("tasks/s, 1,000-task fan-out/in (W3)", "tasks/s", 0, True),
    "submit_10k_s": ("validate + submit, 10,000-task DAG (W4)", "s", 2, False),
    "resolver_rss_mb": ("resolver RSS, 1,000 open workflows x 100 (W5)", "MiB", 0, False),
    "w2_resolution_p50_ms": ("resolution latency p50 during W2 (burst)", "ms", 1, False),
    "w2_resolution_p99_ms": ("resolution latency p99 during W2 (burst)", "ms", 1, False),
    "latency_achieved_tasks_per_s": ("achieved load in the latency window", "tasks/s", 0, True),
    "layered_10k_tasks_per_s": ("tasks/s running the 10,000-task DAG", "tasks/s", 0, True),
    "resolver_rss_baseline_mb": ("resolver RSS before W5 (idle)", "MiB", 0, False),
    "w5_submit_s": ("W5: submitting 1,000 x 100 tasks", "s", 1, False),
    "cpu_us_per_task": ("CPU of every process of the system per task, W2", "µs", 0, False),
    "cli_hop_ms": ("per hop, 200 x mcp/tool.add with references, `stellwerk run`", "ms", 2, False),
    "polled_hop_ms": ("per hop, the same chain polled with GetRun", "ms", 2, False),
    "watch_overhead": ("`stellwerk run` per hop ÷ polled per hop", "x", 2, False),
    "cpu_us_per_task_2_resolvers": ("CPU per task, W2 with 2 resolvers", "µs", 0, False),
    "cpu_ratio_2_resolvers": ("CPU per task, 2 resolvers ÷ 1", "x", 2, False),
    "tasks_per_s_2_resolvers": ("tasks/s, W2 with 2 resolvers", "tasks/s", 0, True),
}

TARGETS: dict[str, tuple[str, float]] = {
    "tasks_per_s": (">=", 2000.0),
    "resolution_p50_ms": ("<=", 1.0),
    "resolution_p99_ms": ("<=", 5.0),
    "per_hop_ms": ("<=", 1.5),
    "submit_10k_s": ("<=", 1.0),
    "resolver_rss_mb": ("<=", 300.0),
    "vs_gleitzeit": (">=", 2.5),
    "vs_celery": (">=", 4.0),
    "cli_hop_ms": ("<=", 1.5),
    "watch_overhead": ("<=", 1.15),
    "cpu_ratio_2_resolvers": ("<=", 1.10),
    "hop_vs_gleitzeit": ("<=", 1.0),
    "cpu_vs_gleitzeit": ("<=", 1.0),
    "cpu_vs_celery": ("<=", 1.0),
}

# ratio key -> (Stellwerk system, peer system, figure, label): Stellwerk's figure ÷ the peer's
RATIOS: dict[str, tuple[str, str, str, str]] = {
    "vs_gleitzeit": ("stellwerk", "gleitzeit_redis", "tasks_per_s", "W2 vs Gleitzeit (Redis)"),
    "vs_celery": ("stellwerk", "celery_redis", "tasks_per_s", "W2 vs Celery + Redis"),
    "vs_gleitzeit_fan": (
        "stellwerk",
        "gleitzeit_redis",
        "fan_tasks_per_s",
        "W3 vs Gleitzeit (Redis)",
    ),
    "vs_celery_fan": ("stellwerk", "celery_redis", "fan_tasks_per_s", "W3 vs Celery + Redis"),
    "vs_gleitzeit_sync_always": (
        "stellwerk_sync_always",
        "gleitzeit_redis",
        "tasks_per_s",
        "W2 (sync always) vs Gleitzeit (Redis)",
    ),
    "vs_celery_sync_always": (
        "stellwerk_sync_always",
        "celery_redis",
        "tasks_per_s",
        "W2 (sync always) vs Celery + Redis",
    ),
    "hop_vs_gleitzeit": (
        "stellwerk",
        "gleitzeit_redis",
        "per_hop_ms",
        "W1 ms per hop vs Gleitzeit",
    ),
    "cpu_vs_gleitzeit": (
        "stellwerk",
        "gleitzeit_redis",
        "cpu_us_per_task",
        "W2 CPU per task vs Gleitzeit (Redis)",
    ),
    "cpu_vs_celery": (
        "stellwerk",
        "celery_redis",
        "cpu_us_per_task",
        "W2 CPU per task vs Celery + Redis",
    ),
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


def spread(values: list[float]) -> dict[str, Any] | None:
    """min / median / max (and the values) of a figure over runs; ``None`` if there are none."""
    if not values:
        return None
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def ratios_of_run(run: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Stellwerk's figure over each peer's (throughput, ms per hop, CPU per task), on the same
    DAG, within one run."""
    out: dict[str, float] = {}
    for key, (ours, theirs, figure, _label) in RATIOS.items():
        a = _number(run.get(ours, {}).get(figure))
        b = _number(run.get(theirs, {}).get(figure))
        if a is not None and b:
            out[key] = a / b
    return out


def aggregate(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per system and figure, and per ratio: the spread over ``runs``."""
    systems: dict[str, dict[str, Any]] = {}
    for system in SYSTEMS:
        figures: dict[str, Any] = {}
        for metric in METRICS:
            values = [v for r in runs if (v := _number(r.get(system, {}).get(metric))) is not None]
            if (s := spread(values)) is not None:
                figures[metric] = s
        systems[system] = figures
    per_run = [ratios_of_run(r) for r in runs]
    ratios = {
        key: s for key in RATIOS if (s := spread([r[key] for r in per_run if key in r])) is not None
    }
    return {"systems": systems, "ratios": ratios, "ratios_per_run": per_run}


def _fmt(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def _cell(s: dict[str, Any] | None, decimals: int) -> str:
    if s is None:
        return "n/a"
    if s["n"] == 1:
        return _fmt(s["median"], decimals)
    return (
        f"{_fmt(s['median'], decimals)} ({_fmt(s['min'], decimals)} .. {_fmt(s['max'], decimals)})"
    )


def _meets(key: str, s: dict[str, Any] | None) -> str:
    if key not in TARGETS or s is None:
        return ""
    op, bound = TARGETS[key]
    ok = s["median"] >= bound if op == ">=" else s["median"] <= bound
    return "yes" if ok else "**no**"


def _target(key: str) -> str:
    if key not in TARGETS:
        return ""
    op, bound = TARGETS[key]
    return f"{'≥' if op == '>=' else '≤'} {bound:g}"


def markdown(summary: dict[str, Any]) -> str:
    """The figures table and the ratios table (median, with min .. max over runs)."""
    systems = summary["systems"]
    shown = [s for s in SYSTEMS if systems.get(s)]
    head = ["measure", "target", *(SYSTEMS[s] for s in shown), "target met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, (label, unit, decimals, _higher) in METRICS.items():
        cells = [systems[s].get(key) for s in shown]
        if all(c is None for c in cells):
            continue
        row = [
            f"{label} [{unit}]",
            _target(key),
            *(_cell(c, decimals) for c in cells),
            _meets(key, systems.get("stellwerk", {}).get(key)),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| Stellwerk's figure ÷ peer's, same DAG, pair by pair per run | target "
        "| median (min .. max) | target met |",
        "|---|---|---|---|",
    ]
    for key, (_ours, _theirs, _figure, label) in RATIOS.items():
        s = summary["ratios"].get(key)
        if s is None:
            continue
        row = [f"`{key}`: {label}", _target(key), _cell(s, 2) + " x", _meets(key, s)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
