"""Checks after a scenario: final states and results against the plans, and the ledger against
the kills, dropped outcomes and commit times (rules in ``tests.chaos.ledger``); no execution of a
cancelled run starts after its cancel."""

from __future__ import annotations

import json

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from tests.chaos.cluster import Cluster
from tests.chaos.ledger import COMMIT_MARGIN, analyse, read_ledger
from tests.chaos.report import Report
from tests.chaos.workload import WorkflowPlan

__all__ = ["check_outcome"]

_COMMITTED = (pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED)


def _seconds(task: pb.TaskRun) -> float | None:
    return task.end_time.ToNanoseconds() / 1e9 if task.HasField("end_time") else None


def check_outcome(
    report: Report,
    plans: list[WorkflowPlan],
    cancels: dict[int, float],
    finals: dict[int, pb.Run],
    cluster: Cluster,
) -> None:
    """Fill ``report`` with the verdict on states, results and every execution in the ledger
    (``cancels``: index of each cancelled plan -> when its cancel was recorded)."""
    commits: dict[tuple[str, str], float] = {}
    for index, plan in enumerate(plans):
        run = finals[index]
        tasks = {t.task_id: t for t in run.tasks}
        fine = run.state == plan.expected_state
        if run.state in (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED, pb.RUN_STATE_CANCELLED):
            report.workflows_terminal += 1
        if not fine:
            report.problems.append(
                f"run {run.run_id} ({plan.name}): {pb.RunState.Name(run.state)}, expected "
                f"{pb.RunState.Name(plan.expected_state)} ({run.error})"
            )
        for task_id, want in plan.expected().items():
            got = tasks.get(task_id)
            if got is None:
                fine = False
                report.lost_results += 1
                report.problems.append(f"run {run.run_id}: task {task_id} is missing")
                continue
            if want.or_cancelled and got.state == pb.TASK_STATE_CANCELLED:
                continue
            if (committed := _seconds(got)) is not None and got.state in _COMMITTED:
                commits[(run.run_id, task_id)] = committed
            result = json.loads(got.result_json) if got.result_json else None
            if want.state == pb.TASK_STATE_COMPLETED and (
                got.state != want.state or result != want.result
            ):
                fine = False
                report.lost_results += 1
                report.problems.append(
                    f"lost result: run {run.run_id} task {task_id} is "
                    f"{pb.TaskState.Name(got.state)} with {got.result_json or 'no result'}, "
                    f"expected {want.result} ({got.error})"
                )
            elif want.attempts is not None and got.attempts != want.attempts:
                fine = False
                report.problems.append(
                    f"retry lost or doubled: run {run.run_id} task {task_id} made "
                    f"{got.attempts} attempts, expected {want.attempts}"
                )
            elif got.state != want.state:
                fine = False
                report.wrong_states += 1
                report.problems.append(
                    f"wrong state: run {run.run_id} task {task_id} is "
                    f"{pb.TaskState.Name(got.state)}"
                    f", expected {pb.TaskState.Name(want.state)} ({got.error})"
                )
        if fine:
            report.workflows_as_expected += 1
    _check_ledger(report, plans, finals, cluster, commits)
    _check_cancels(report, cancels, finals, cluster)


def _check_cancels(
    report: Report, cancels: dict[int, float], finals: dict[int, pb.Run], cluster: Cluster
) -> None:
    """No execution of a cancelled run starts after its cancel (the header's end time; the
    marker that executors act on is stored before it, so only a watch delivery's margin)."""
    executions, _ = read_ledger(cluster.ledger)
    for index, at in cancels.items():
        run_id = finals[index].run_id
        late = [e for e in executions if e.run == run_id and e.start > at + COMMIT_MARGIN]
        for e in late:
            report.problems.append(
                f"run {run_id}: {e.task} attempt {e.attempt} started {e.start - at:.3f} s "
                "after its run was cancelled"
            )
    report.extra["cancelled runs"] = str(len(cancels))


def _check_ledger(
    report: Report,
    plans: list[WorkflowPlan],
    finals: dict[int, pb.Run],
    cluster: Cluster,
    commits: dict[tuple[str, str], float],
) -> None:
    executions, bad = read_ledger(cluster.ledger)
    report.bad_ledger_lines = bad
    executor_pids = cluster.executor_pids()
    kills = {k.pid: k.time for k in cluster.kills if k.pid in executor_pids}
    found = analyse(
        executions,
        kills=kills,
        drops=cluster.dropped_outcomes(),
        claims_lost=cluster.lost_claims(),
        commits=commits,
        nats_outages=cluster.nats_outages,
    )
    report.executions = found.executions
    report.re_executions = found.re_executions
    report.unexplained_duplicates = found.unexplained
    report.overlaps = found.overlaps
    report.nats_overlaps = found.nats_overlaps
    report.notes.extend(found.notes)
    report.after_commit = found.after_commit
    report.raced_commit = found.raced_commit
    report.unfinished_executions = found.unfinished
    report.problems.extend(found.problems)
    if found.drop_recovery:
        report.extra["dropped outcome -> commit (recovery)"] = (
            f"max {max(found.drop_recovery):.1f} s, mean "
            f"{sum(found.drop_recovery) / len(found.drop_recovery):.1f} s over "
            f"{len(found.drop_recovery)} drops"
        )
    ours = {run.run_id for run in finals.values()}
    strangers = {e.run for e in executions} - ours
    if strangers:
        report.problems.append(f"executions of runs nobody submitted: {sorted(strangers)[:5]}")
    finished = {(e.run, e.task, e.attempt) for e in executions if e.end is not None}
    for index, plan in enumerate(plans):
        run = finals[index]
        for task in run.tasks:
            runs_of_task = found.per_task[(run.run_id, task.task_id)]
            if task.state == pb.TASK_STATE_BLOCKED and runs_of_task:
                report.problems.append(
                    f"run {run.run_id}: BLOCKED task {task.task_id} was executed"
                )
            if task.state == pb.TASK_STATE_COMPLETED and (
                (run.run_id, task.task_id, task.attempts) not in finished
            ):
                report.problems.append(
                    f"run {run.run_id}: task {task.task_id} COMPLETED (attempt {task.attempts}) "
                    "without a finished execution of that attempt in the ledger"
                )
        if plan.name == "fan-in":
            joins = found.per_task[(run.run_id, "join")]
            report.extra["fan-in join executions"] = str(joins)
            if joins != 1:
                report.problems.append(f"the fan-in join ran {joins} times, expected exactly once")
