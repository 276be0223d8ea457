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
  - nats-server was down while it ran or reported (it started before the server was back, the
    crash came before it could have reported, the next execution started after the crash; an
    executor may start a delivery it fetched before the crash during the outage) —
    ``nats_crash``, counted
    separately. Two mechanisms, both seen: an outage longer than the lease lets the delivery's
    ack wait expire, so the restarted server redelivers it at once while the first executor,
    its handler already done, is still waiting to publish the outcome (the redelivery's KV check
    finds nothing committed yet); and JetStream persists a consumer's delivery state lazily even
    with ``sync_interval: always``, so what it handed out in the last few milliseconds before the
    crash is delivered again as a *first* delivery after the restart;
  anything else is an *unexplained duplicate*;
* no two executions overlap in time (an execution of a killed pid ends at the kill) — except
  across a nats-server crash (the earlier one in flight at the crash, the later one started
  after it: the "delivery unsaved" mechanism above), counted as ``nats_overlaps`` with evidence
  in ``notes``: the delivery-as-claim design cannot prevent it, only a KV claim could;
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
    nats_overlaps: int = 0
    """Overlaps where the earlier execution was in flight when nats-server crashed (see notes)."""
    after_commit: int = 0
    raced_commit: int = 0
    unfinished: int = 0
    key_mismatches: int = 0
    drop_recovery: list[float] = field(default_factory=list)
    """Per dropped outcome: seconds from the end of the dropped run to the task's commit."""
    per_task: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Evidence of what is counted separately rather than failed (nats-server crash effects)."""

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
    nats_outages: Iterable[tuple[float, float]] = (),
) -> LedgerAnalysis:
    """Check every attempt's executions (see the module docstring).

    ``kills``: executor pid -> time it was dead; ``drops``: (pid, run, task, attempt) -> dropped
    outcomes logged; ``claims_lost``: the same for attempts given up on a lapsed claim;
    ``commits``: (run, task) -> commit time of tasks that are COMPLETED/FAILED; ``nats_outages``:
    (SIGKILL, back up) times of nats-server.
    """
    out = LedgerAnalysis()
    groups: dict[AttemptKey, list[Execution]] = defaultdict(list)
    for e in executions:
        groups[(e.run, e.task, e.attempt)].append(e)
        out.executions += 1
        out.per_task[(e.run, e.task)] += 1
    context = _Context(kills, dict(drops), dict(claims_lost), commits, sorted(nats_outages))
    for key, group in groups.items():
        _judge_attempt(out, key, sorted(group, key=lambda e: e.start), context)
    return out


@dataclass
class _Context:
    kills: Mapping[int, float]
    drops_left: dict[tuple[int, str, str, int], int]
    claims_left: dict[tuple[int, str, str, int], int]
    commits: Mapping[tuple[str, str], float]
    outages: list[tuple[float, float]]


def _judge_attempt(
    out: LedgerAnalysis, key: AttemptKey, group: list[Execution], ctx: _Context
) -> None:
    """Apply the rules to the executions of one attempt, ordered by start."""
    run, task, attempt = key
    label = f"{run}/{task} attempt {attempt}"
    if len({e.key for e in group}) > 1:
        out.key_mismatches += 1
        out.problem(f"{label}: idempotency key changed between runs")
    commit = ctx.commits.get((run, task))
    holder: Execution | None = None  # the execution that ends last so far
    holder_end = float("-inf")
    previous: Execution | None = None
    for e in group:
        finish = e.end if e.end is not None else ctx.kills.get(e.pid, float("inf"))
        if e.end is None and e.pid not in ctx.kills:
            out.unfinished += 1
            out.problem(
                f"{label}: execution never ended and its executor was not killed "
                f"{_describe(e, ctx.kills)}"
            )
        if holder is not None and e.start < holder_end:
            what = f"{_describe(e, ctx.kills)} started before {_describe(holder, ctx.kills)} ended"
            if _nats_crash(holder, e, ctx.outages):
                out.nats_overlaps += 1
                out.notes.append(f"{label}: overlap across a nats-server crash; {what}")
            else:
                out.overlaps += 1
                out.problem(f"{label}: overlapping executions; {what}")
        if finish > holder_end:
            holder, holder_end = e, finish
        if previous is not None:
            _judge_re_run(out, label, previous, e, commit, ctx)
        if commit is not None and e.start > commit:
            if e.start > commit + COMMIT_MARGIN:
                out.after_commit += 1
                out.problem(
                    f"{label}: ran after its result was committed at {commit:.3f} "
                    f"{_describe(e, ctx.kills)}"
                )
            else:
                out.raced_commit += 1
        previous = e


def _judge_re_run(
    out: LedgerAnalysis,
    label: str,
    previous: Execution,
    e: Execution,
    commit: float | None,
    ctx: _Context,
) -> None:
    reason = _why_lost(previous, e, ctx.kills, ctx.drops_left, ctx.claims_left) or _nats_crash(
        previous, e, ctx.outages
    )
    if reason is None:
        out.unexplained += 1
        out.problem(
            f"{label}: unexplained duplicate {_describe(e, ctx.kills)} after "
            f"{_describe(previous, ctx.kills)}"
        )
        return
    out.re_executions[reason] += 1
    if reason == "dropped" and commit is not None and previous.end is not None:
        out.drop_recovery.append(commit - previous.end)


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


def _nats_crash(
    before: Execution, after: Execution, outages: list[tuple[float, float]]
) -> str | None:
    """Whether ``before`` was running or reporting during a nats-server outage (it started before
    the server was back, and the crash came before it could have reported), and ``after`` started
    after the crash."""
    for crashed, back in outages:
        reported_by = (before.end if before.end is not None else crashed) + REPORT_WINDOW
        if before.start <= back and crashed <= reported_by and crashed <= after.start:
            return "nats_crash"
    return None
