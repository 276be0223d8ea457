"""The benchmark's chart, drawn from ``latest.json`` with matplotlib.

Runs inside the harness's plot virtualenv (matplotlib is not a project dependency):

    bench/.peers/plot/bin/python bench/chart.py bench/results/latest.json bench/results/latest.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib  # type: ignore[import-not-found]

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # type: ignore[import-not-found]

LABELS = {
    "stellwerk": "Stellwerk\n(default fsync)",
    "stellwerk_sync_always": "Stellwerk\n(sync always)",
    "gleitzeit_redis": "Gleitzeit\nRedis",
    "gleitzeit_sqlite": "Gleitzeit\nSQLite",
    "gleitzeit_memory": "Gleitzeit\nin memory",
    "celery_redis": "Celery\n+ Redis",
}
COLOURS = {
    "stellwerk": "#1f5fa8",
    "stellwerk_sync_always": "#6f9fd8",
    "gleitzeit_redis": "#c0392b",
    "gleitzeit_sqlite": "#e59866",
    "gleitzeit_memory": "#bbbbbb",
    "celery_redis": "#27864f",
}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _latency_panel(ax: Any, data: dict[str, Any]) -> None:
    drawn = False
    for system in ("stellwerk", "stellwerk_sync_always"):
        totals: dict[tuple[float, float], float] = {}
        for run in data["runs"]:
            for lo, hi, n in run.get(system, {}).get("resolution_buckets_ms") or []:
                totals[(lo, hi)] = totals.get((lo, hi), 0.0) + n
        if not totals or sum(totals.values()) <= 0:
            continue
        bounds = sorted(totals)
        count = sum(totals.values())
        edges = [bounds[0][1] / 2 if bounds[0][0] <= 0 else bounds[0][0]]
        edges += [hi for _lo, hi in bounds]
        share = [totals[b] / count * 100 for b in bounds]
        ax.stairs(
            share,
            edges,
            label=LABELS[system].replace("\n", " "),
            color=COLOURS[system],
            linewidth=2,
        )
        summary = data["summary"]["systems"].get(system, {})
        for key, style in (("resolution_p50_ms", "--"), ("resolution_p99_ms", ":")):
            if key in summary:
                ax.axvline(
                    summary[key]["median"], color=COLOURS[system], linestyle=style, linewidth=1
                )
        drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("resolution latency per task event [ms] (log; dashed p50, dotted p99)")
    ax.set_ylabel("% of events in bucket")
    ax.set_title("Stellwerk resolution latency at ~500 tasks/s\n(resolver's own histogram)")
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5, 0.5, "no histogram (metrics endpoint absent)", ha="center", transform=ax.transAxes
        )


def _hop_samples(data: dict[str, Any]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for system in LABELS:
        samples = [
            s for run in data["runs"] for s in run.get(system, {}).get("per_hop_samples_ms") or []
        ]
        if samples:
            out[system] = samples
    return out


def _hop_distribution_panel(ax: Any, data: dict[str, Any]) -> None:
    samples = _hop_samples(data)
    systems = list(samples)
    box = ax.boxplot([samples[s] for s in systems], patch_artist=True, widths=0.6)
    for patch, system in zip(box["boxes"], systems, strict=True):
        patch.set_facecolor(COLOURS[system])
        patch.set_alpha(0.6)
    ax.set_xticks(range(1, len(systems) + 1), [LABELS[s] for s in systems], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ms per hop (log)")
    ax.set_title("Per-hop latency distribution, 40-task chains\n(every chain of every run)")


def _bars(ax: Any, values: dict[str, float], title: str, unit: str, target: float | None) -> None:
    systems = list(values)
    bars = ax.bar(
        range(len(systems)), [values[s] for s in systems], color=[COLOURS[s] for s in systems]
    )
    for bar, system in zip(bars, systems, strict=True):
        value = values[system]
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height(),
            f"{value:,.2f}" if value < 10 else f"{value:,.0f}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    if target is not None:
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target {target:g}")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(systems)), [LABELS[s] for s in systems], fontsize=7)
    ax.set_ylabel(unit)
    ax.set_title(title)


def main(source: Path, target: Path) -> None:
    data = json.loads(source.read_text())
    systems = data["summary"]["systems"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _latency_panel(axes[0][0], data)
    _hop_distribution_panel(axes[0][1], data)
    hops = {s: v["per_hop_ms"]["median"] for s, v in systems.items() if "per_hop_ms" in v}
    _bars(axes[1][0], hops, "Per hop, 40-task chain (median of runs)", "ms", 1.5)
    throughput = {s: v["tasks_per_s"]["median"] for s, v in systems.items() if "tasks_per_s" in v}
    _bars(
        axes[1][1],
        throughput,
        "Throughput, 100 workflows x 20 tasks (median of runs)",
        "tasks/s",
        2000,
    )
    mode = "QUICK, 1 run" if data.get("quick") else f"{data.get('runs_done', '?')} runs"
    fig.suptitle(f"make bench ({mode}), {data.get('generated_at', '')}", fontsize=11)
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
