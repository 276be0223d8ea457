"""Reading the execution ledger and checking it against kills, dropped outcomes and commits.

Rules (guarantee 2 of issue 3), per attempt of a task, executions ordered by start:

* an execution after the first is *explained* only when the one before it was lost:
  - its executor pid was SIGKILLed while the handler ran (a start line without an end, the kill
    at or after the start) — ``killed``;
  - its executor pid was SIGKILLed after the handler returned, while it could still be reporting
    (within ``REPORT_WINDOW``), i.e. before the outcome could be committed —
    ``killed_after_handler``;
  - its executor logged dropping the outcome of exactly this (run, task, attempt) — ``dropped``;
  - its executor cancelled it because its claim lapsed (NATS unreachable for most of the lease;
    a ``cancelled`` line, and the executor logged losing the claim on this attempt) —
    ``claim_lost``;
  anything else is an *unexplained duplicate*;
* no two executions overlap in time (an execution of a killed pid ends at the kill);
* no execution starts after the task's result was committed (``TaskRun.end_time``, stamped by
  the resolver just before its compare-and-set; ``COMMIT_MARGIN`` absorbs that write's latency);
* an execution without an end line belongs to a killed pid (else the ledger lies or a handler
  hangs after its workflow ended).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "COMMIT_MARGIN",
    "Execution",
    "LedgerAnalysis",
    "analyse",
    "read_ledger",
]

COMMIT_MARGIN = 0.5
"""Seconds after the resolver's commit stamp in which a start still counts as racing the write."""
REPORT_WINDOW = 1.0
"""Seconds after a handler returned within which its executor may still be publishing the
outcome; a kill later than that cannot explain why the outcome went missing."""

AttemptKey = tuple[str, str, int]


@dataclass(frozen=True)
class Execution:
    """One run of the handler, from its ledger lines (``end`` is None without an end line)."""

    run: str
    task: str
    attempt: int
    key: str
    pid: int
    x: str
    start: float
    end: float | None
    cancelled: bool = False


def read_ledger(path: Path) -> tuple[list[Execution], int]:
    """Executions in the ledger, and how many lines could not be read."""
    starts: dict[str, dict[str, object]] = {}
    ends: dict[str, float] = {}
    cancelled: set[str] = set()
    bad = 0
    for raw in path.read_bytes().splitlines():
        try:
            line = json.loads(raw)
            kind, ident, moment = line["ev"], str(line["x"]), float(line["t"])
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        if kind == "start":
            starts[ident] = line
        elif kind in ("end", "cancelled"):
            ends[ident] = moment
            if kind == "cancelled":
                cancelled.add(ident)
        else:
            bad += 1
    executions = [
        Execution(
            run=str(line["run"]),
            task=str(line["task"]),
            attempt=int(str(line["attempt"])),
            key=str(line["key"]),
            pid=int(str(line["pid"])),
            x=ident,
            start=float(str(line["t"])),
            end=ends.get(ident),
            cancelled=ident in cancelled,
        )
        for ident, line in starts.items()
    ]
    bad += len(set(ends) - set(starts))  # an end without its start
    return sorted(executions, key=lambda e: e.start), bad


@dataclass
class LedgerAnalysis:
    """What the ledger shows; ``problems`` holds one line of evidence per violation."""

    executions: int = 0
    re_executions: Counter[str] = field(default_factory=Counter)
    unexplained: int = 0
    overlaps: int = 0
    after_commit: int = 0
    raced_commit: int = 0
    unfinished: int = 0
    key_mismatches: int = 0
    per_task: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        """Record one violation (the first 200 are kept with their evidence)."""
        if len(self.problems) < 200:
            self.problems.append(text)


def _describe(e: Execution, kills: Mapping[int, float]) -> str:
    end = f"{e.end:.3f}" if e.end is not None else "none"
    end += " (cancelled)" if e.cancelled else ""
    killed = f", pid killed {kills[e.pid]:.3f}" if e.pid in kills else ""
    return f"[x={e.x} pid={e.pid} start={e.start:.3f} end={end}{killed}]"


def analyse(
    executions: Iterable[Execution],
    *,
    kills: Mapping[int, float],
    drops: Mapping[tuple[int, str, str, int], int],
    claims_lost: Mapping[tuple[int, str, str, int], int],
    commits: Mapping[tuple[str, str], float],
) -> LedgerAnalysis:
    """Check every attempt's executions (see the module docstring).

    ``kills``: executor pid -> time it was dead; ``drops``: (pid, run, task, attempt) -> dropped
    outcomes logged; ``claims_lost``: the same for attempts given up on a lapsed claim; ``commits``: (run, task) -> commit time of tasks that are COMPLETED/FAILED.
    """
    out = LedgerAnalysis()
    groups: dict[AttemptKey, list[Execution]] = defaultdict(list)
    for e in executions:
        groups[(e.run, e.task, e.attempt)].append(e)
        out.executions += 1
        out.per_task[(e.run, e.task)] += 1
    drops_left = dict(drops)
    claims_left = dict(claims_lost)
    for (run, task, attempt), group in groups.items():
        group.sort(key=lambda e: e.start)
        if len({e.key for e in group}) > 1:
            out.key_mismatches += 1
            out.problem(f"{run}/{task} attempt {attempt}: idempotency key changed between runs")
        latest_end = float("-inf")
        previous: Execution | None = None
        for e in group:
            finish = e.end if e.end is not None else kills.get(e.pid, float("inf"))
            if e.end is None and e.pid not in kills:
                out.unfinished += 1
                out.problem(
                    f"{run}/{task} attempt {attempt}: execution never ended and its executor "
                    f"was not killed {_describe(e, kills)}"
                )
            if e.start < latest_end:
                out.overlaps += 1
                out.problem(
                    f"{run}/{task} attempt {attempt}: overlapping executions; "
                    f"{_describe(e, kills)} started before an earlier one ended"
                )
            latest_end = max(latest_end, finish)
            if previous is not None:
                reason = _why_lost(previous, e, kills, drops_left, claims_left)
                if reason is None:
                    out.unexplained += 1
                    out.problem(
                        f"{run}/{task} attempt {attempt}: unexplained duplicate "
                        f"{_describe(e, kills)} after {_describe(previous, kills)}"
                    )
                else:
                    out.re_executions[reason] += 1
            commit = commits.get((run, task))
            if commit is not None and e.start > commit:
                if e.start > commit + COMMIT_MARGIN:
                    out.after_commit += 1
                    out.problem(
                        f"{run}/{task} attempt {attempt}: ran after its result was committed at "
                        f"{commit:.3f} {_describe(e, kills)}"
                    )
                else:
                    out.raced_commit += 1
            previous = e
    return out


def _why_lost(
    before: Execution,
    after: Execution,
    kills: Mapping[int, float],
    drops_left: dict[tuple[int, str, str, int], int],
    claims_left: dict[tuple[int, str, str, int], int],
) -> str | None:
    """Why ``before``'s outcome never counted, so that ``after`` had to run; None if it did."""
    killed_at = kills.get(before.pid)
    key = (before.pid, before.run, before.task, before.attempt)
    if before.end is None:
        if killed_at is not None and killed_at >= before.start:
            return "killed"
        return None
    if before.cancelled:
        if claims_left.get(key, 0) > 0:
            claims_left[key] -= 1
            return "claim_lost"
        return None
    if killed_at is not None and before.end <= killed_at <= min(
        after.start, before.end + REPORT_WINDOW
    ):
        return "killed_after_handler"
    if drops_left.get(key, 0) > 0:
        drops_left[key] -= 1
        return "dropped"
    return None
