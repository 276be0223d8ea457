"""The figures one chaos scenario produces, their verdict and their printed form."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Report", "combined"]


@dataclass
class Report:
    """Everything a scenario measured; :attr:`ok` is the verdict."""

    scenario: str
    seed: int
    workdir: str = ""
    workflows_total: int = 0
    workflows_as_expected: int = 0
    workflows_terminal: int = 0
    runs_created: int = 0
    tasks_total: int = 0
    tasks_to_run: int = 0
    """Tasks expected to execute (all but the BLOCKED ones)."""
    executions: int = 0
    re_executions: Counter[str] = field(default_factory=Counter)
    unexplained_duplicates: int = 0
    overlaps: int = 0
    nats_overlaps: int = 0
    after_commit: int = 0
    raced_commit: int = 0
    unfinished_executions: int = 0
    lost_results: int = 0
    wrong_states: int = 0
    bad_ledger_lines: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    last_kill_to_finish: float | None = None
    submit_retries: int = 0
    snapshot: Counter[str] = field(default_factory=Counter)
    snapshot_at: str = ""
    leftovers: dict[str, int] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Evidence of effects counted separately (nats-server crashes), not failures."""
    wall_time: float = 0.0
    strict_nats: bool = False
    """Fail on overlaps across a nats-server crash too (by default they are reported apart)."""

    @property
    def ok(self) -> bool:
        """Every guarantee held: all runs ended as expected, nothing ran twice unexplained."""
        return (
            not self.problems
            and self.workflows_as_expected == self.workflows_total
            and self.runs_created == self.workflows_total
            and self.unexplained_duplicates == 0
            and self.overlaps == 0
            and (self.nats_overlaps == 0 or not self.strict_nats)
            and self.after_commit == 0
            and self.unfinished_executions == 0
            and self.lost_results == 0
            and self.wrong_states == 0
            and self.bad_ledger_lines == 0
        )

    def render(self) -> str:
        """The report as text."""
        kills = ", ".join(f"{k}={v}" for k, v in sorted(self.kills.items())) or "none"
        finish = (
            f"{self.last_kill_to_finish:.1f} s" if self.last_kill_to_finish is not None else "n/a"
        )
        snapshot = ", ".join(f"{k}: {v}" for k, v in self.snapshot.most_common()) or "nothing open"
        lines = [
            f"== chaos scenario {self.scenario} (seed {self.seed}) "
            f"{'PASSED' if self.ok else 'FAILED'} ==",
            f"  workflows completed as expected: {self.workflows_as_expected}/"
            f"{self.workflows_total} (terminal {self.workflows_terminal}, runs created "
            f"{self.runs_created}, tasks {self.tasks_total})",
            f"  executions: {self.executions}",
            f"  re-executions explained by killed executors: "
            f"{self.re_executions['killed']} while running, "
            f"{self.re_executions['killed_after_handler']} after the handler returned",
            f"  re-executions explained by dropped completions: {self.re_executions['dropped']}",
            f"  re-executions explained by claims lost in a NATS outage: "
            f"{self.re_executions['claim_lost']}",
            f"  re-executions caused by a nats-server crash (lease lapsed / delivery unsaved): "
            f"{self.re_executions['nats_crash']}",
            f"  unexplained duplicates: {self.unexplained_duplicates} (must be 0)",
            f"  lost results: {self.lost_results} (must be 0); wrong states: {self.wrong_states}",
            f"  overlapping executions: {self.overlaps} (+{self.nats_overlaps} across a "
            "nats-server crash); executions after commit: "
            f"{self.after_commit} (+{self.raced_commit} racing the commit write); "
            f"unfinished without a kill: {self.unfinished_executions}",
            f"  kills: {sum(self.kills.values())} ({kills})",
            f"  time to finish after the last kill: {finish}",
            f"  state consistency {self.snapshot_at}: {snapshot}",
            f"  left in the work queues at the end: {self.leftovers or 'n/a'}",
            f"  submit/read retries (failover): {self.submit_retries}; wall time "
            f"{self.wall_time:.1f} s",
        ]
        lines += [f"  {k}: {v}" for k, v in self.extra.items()]
        if self.workdir:
            lines.append(f"  workdir (ledger, logs): {self.workdir}")
        if self.notes:
            lines.append(f"  notes ({len(self.notes)}):")
            lines += [f"    * {n}" for n in self.notes[:10]]
        if self.problems:
            lines.append(f"  problems ({len(self.problems)}):")
            lines += [f"    - {p}" for p in self.problems[:40]]
        return "\n".join(lines)


def combined(reports: list[Report]) -> str:
    """Totals over several scenarios (the long run's summary)."""
    kills: Counter[str] = Counter()
    re_runs: Counter[str] = Counter()
    for r in reports:
        kills.update(r.kills)
        re_runs.update(r.re_executions)
    finish = [r.last_kill_to_finish for r in reports if r.last_kill_to_finish is not None]
    verdict = "PASSED" if all(r.ok for r in reports) else "FAILED"
    return "\n".join(
        [
            f"== chaos total: {verdict} ==",
            f"  workflows completed as expected: {sum(r.workflows_as_expected for r in reports)}"
            f"/{sum(r.workflows_total for r in reports)} "
            f"(tasks {sum(r.tasks_total for r in reports)})",
            f"  executions: {sum(r.executions for r in reports)}",
            f"  re-executions explained by killed executors: "
            f"{re_runs['killed'] + re_runs['killed_after_handler']}",
            f"  re-executions explained by dropped completions: {re_runs['dropped']}",
            f"  re-executions explained otherwise: lost claims {re_runs['claim_lost']}, "
            f"caused by nats-server crashes {re_runs['nats_crash']} (overlapping: "
            f"{sum(r.nats_overlaps for r in reports)})",
            f"  unexplained duplicates: {sum(r.unexplained_duplicates for r in reports)}",
            f"  lost results: {sum(r.lost_results for r in reports)}",
            f"  kills: {sum(kills.values())} "
            f"({', '.join(f'{k}={v}' for k, v in sorted(kills.items()))})",
            f"  longest time to finish after the last kill: {max(finish):.1f} s"
            if finish
            else "  time to finish after the last kill: n/a",
        ]
    )
