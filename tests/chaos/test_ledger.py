"""The chaos suite's own judges, tested without processes: the ledger rules and the workload's
expected outcomes. A checker that cannot see a duplicate would let every chaos run pass."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from stellwerk.core.model import load_workflow
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from tests.chaos.ledger import (
    COMMIT_MARGIN,
    REPORT_WINDOW,
    Execution,
    LedgerAnalysis,
    analyse,
    read_ledger,
)
from tests.chaos.workload import TaskPlan, WorkflowPlan, fan_in_workflow, random_workflow


def ex(
    x: str, start: float, end: float | None, *, pid: int = 1, cancelled: bool = False
) -> Execution:
    return Execution("r", "t", 1, "k", pid, x, start, end, cancelled)


def check(*executions: Execution, **kwargs: Any) -> LedgerAnalysis:
    args: dict[str, Any] = {"kills": {}, "drops": {}, "claims_lost": {}, "commits": {}}
    args.update(kwargs)
    return analyse(executions, **args)


def test_single_executions_are_fine() -> None:
    found = check(ex("a", 1.0, 2.0))
    assert (found.executions, found.unexplained, found.overlaps, found.problems) == (1, 0, 0, [])


def test_a_second_run_without_a_reason_is_an_unexplained_duplicate() -> None:
    found = check(ex("a", 1.0, 2.0), ex("b", 5.0, 6.0, pid=2))
    assert found.unexplained == 1
    assert "unexplained duplicate" in found.problems[0]


def test_a_run_cut_by_a_kill_explains_the_next_one() -> None:
    found = check(ex("a", 1.0, None), ex("b", 5.0, 6.0, pid=2), kills={1: 1.5})
    assert found.unexplained == 0
    assert found.re_executions["killed"] == 1
    assert found.overlaps == 0  # the killed run ended at the kill


def test_a_kill_before_the_run_started_explains_nothing() -> None:
    found = check(ex("a", 1.0, None), ex("b", 5.0, 6.0, pid=2), kills={1: 0.5})
    assert found.unexplained == 1


def test_a_kill_while_reporting_explains_but_a_much_later_kill_does_not() -> None:
    soon = check(ex("a", 1.0, 2.0), ex("b", 5.0, 6.0, pid=2), kills={1: 2.0 + REPORT_WINDOW / 2})
    assert soon.re_executions["killed_after_handler"] == 1 and soon.unexplained == 0
    late = check(ex("a", 1.0, 2.0), ex("b", 5.0, 6.0, pid=2), kills={1: 4.5})
    assert late.unexplained == 1


def test_each_logged_drop_explains_one_re_run_only() -> None:
    runs = (ex("a", 1.0, 2.0), ex("b", 5.0, 6.0, pid=2), ex("c", 9.0, 10.0, pid=3))
    found = check(*runs, drops={(1, "r", "t", 1): 1})
    assert found.re_executions["dropped"] == 1
    assert found.unexplained == 1  # b's outcome was not dropped, yet c ran


def test_a_drop_logged_by_another_executor_explains_nothing() -> None:
    found = check(ex("a", 1.0, 2.0), ex("b", 5.0, 6.0, pid=2), drops={(2, "r", "t", 1): 1})
    assert found.unexplained == 1


def test_a_cancelled_run_needs_the_executors_lost_claim_line() -> None:
    runs = (ex("a", 1.0, 1.5, cancelled=True), ex("b", 5.0, 6.0, pid=2))
    assert check(*runs, claims_lost={(1, "r", "t", 1): 1}).re_executions["claim_lost"] == 1
    assert check(*runs).unexplained == 1


def test_a_nats_crash_during_the_run_is_its_own_category() -> None:
    found = check(ex("a", 1.0, 2.0), ex("b", 5.0, 6.0, pid=2), nats_outages=[(1.8, 3.0)])
    assert found.re_executions["nats_crash"] == 1 and found.unexplained == 0
    before = check(ex("a", 1.0, 2.0), ex("b", 5.0, 6.0, pid=2), nats_outages=[(0.5, 0.9)])
    assert before.unexplained == 1
    # A delivery fetched before the crash may start (and end) while the server is down.
    during = check(ex("a", 1.5, 1.6), ex("b", 5.0, 6.0, pid=2), nats_outages=[(1.0, 3.0)])
    assert during.re_executions["nats_crash"] == 1
    # Long after the server was back and the run had reported: not the crash's doing.
    later = check(ex("a", 4.0, 4.5), ex("b", 7.0, 8.0, pid=2), nats_outages=[(1.0, 3.0)])
    assert later.unexplained == 1


def test_overlapping_runs_of_one_attempt_are_found() -> None:
    found = check(ex("a", 1.0, 3.0), ex("b", 2.0, 4.0, pid=2), drops={(1, "r", "t", 1): 1})
    assert found.overlaps == 1


def test_a_run_after_the_commit_is_found_and_a_race_with_the_write_is_not() -> None:
    runs = (ex("a", 1.0, None), ex("b", 5.0, 6.0, pid=2))
    late = check(*runs, kills={1: 1.5}, commits={("r", "t"): 4.0})
    assert late.after_commit == 1
    racing = check(*runs, kills={1: 1.5}, commits={("r", "t"): 5.0 - COMMIT_MARGIN / 2})
    assert (racing.after_commit, racing.raced_commit) == (0, 1)


def test_a_run_that_never_ended_without_a_kill_is_reported() -> None:
    assert check(ex("a", 1.0, None)).unfinished == 1


def test_a_changing_idempotency_key_is_reported() -> None:
    other = Execution("r", "t", 1, "other", 1, "b", 5.0, 6.0)
    found = check(ex("a", 1.0, None), other, kills={1: 2.0})
    assert found.key_mismatches == 1


def test_attempts_are_judged_separately() -> None:
    second = Execution("r", "t", 2, "k2", 2, "b", 5.0, 6.0)
    assert check(ex("a", 1.0, 2.0), second).unexplained == 0


def line(ev: str, x: str, t: float, **extra: Any) -> str:
    record = {"ev": ev, "run": "r", "task": "t", "attempt": 1, "key": "k", "pid": 7, "x": x, "t": t}
    return json.dumps({**record, **extra})


def test_read_ledger_pairs_lines_and_counts_garbage(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(
        "\n".join(
            [
                line("start", "a", 1.0),
                line("start", "b", 2.0),
                line("end", "a", 3.0),
                line("cancelled", "b", 2.5),
                line("start", "c", 4.0),
                '{"ev": "start", "run": "r"',  # cut short
                "not json at all",
                line("end", "ghost", 9.0),  # an end without its start
                line("explode", "d", 5.0),
            ]
        )
    )
    executions, bad = read_ledger(ledger)
    assert [(e.x, e.start, e.end, e.cancelled) for e in executions] == [
        ("a", 1.0, 3.0, False),
        ("b", 2.0, 2.5, True),
        ("c", 4.0, None, False),
    ]
    assert bad == 4


def test_expected_outcomes_follow_the_graph() -> None:
    plan = WorkflowPlan(
        name="w",
        tasks=(
            TaskPlan("a", (), 1),
            TaskPlan("b", ("a",), 10),
            TaskPlan("c", ("a",), 100, fail=True),
            TaskPlan("d", ("b", "c"), 1000),
            TaskPlan("e", ("b",), 5),
        ),
        sleep=0.0,
    )
    want = plan.expected()
    assert (want["a"].result, want["b"].result, want["e"].result) == (1, 11, 16)
    assert want["c"].state == pb.TASK_STATE_FAILED
    assert want["d"].state == pb.TASK_STATE_BLOCKED
    assert plan.expected_state == pb.RUN_STATE_FAILED


@pytest.mark.parametrize("seed", range(20))
def test_random_workflows_are_valid_dags_with_fan_out_and_fan_in(seed: int) -> None:
    rng = random.Random(seed)
    plan = random_workflow(rng, "w", failing=seed % 2 == 1)
    spec = load_workflow(plan.document(), format="json")
    assert [t.id for t in spec.tasks] == [t.id for t in plan.tasks]
    fan_out = max(sum(t.id in p.deps for p in plan.tasks) for t in plan.tasks)
    assert fan_out >= 3 and len(plan.tasks[-1].deps) >= 3
    states = [e.state for e in plan.expected().values()]
    if seed % 2:
        assert states.count(pb.TASK_STATE_FAILED) == 1 and pb.TASK_STATE_BLOCKED in states
    else:
        assert set(states) == {pb.TASK_STATE_COMPLETED}


def test_random_workflow_refuses_tiny_sizes() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        random_workflow(random.Random(0), "w", size=3)


def test_the_fan_in_join_sums_every_leaf() -> None:
    plan = fan_in_workflow(random.Random(1), "f", width=200, at=0.0)
    want = plan.expected()
    assert len(plan.tasks[-1].deps) == 200
    assert want["join"].result == plan.tasks[-1].n + sum(t.n for t in plan.tasks[:-1])


def test_recovery_of_a_dropped_outcome_is_measured_to_the_commit() -> None:
    runs = (ex("a", 1.0, 2.0), ex("b", 5.0, 6.0, pid=2))
    found = check(*runs, drops={(1, "r", "t", 1): 1}, commits={("r", "t"): 6.5})
    assert found.drop_recovery == [4.5]


def test_an_overlap_across_a_nats_crash_is_counted_apart_with_evidence() -> None:
    runs = (ex("a", 1.0, 3.0), ex("b", 2.0, 4.0, pid=2))
    found = check(*runs, nats_outages=[(1.5, 1.9)])
    assert (found.overlaps, found.nats_overlaps, found.unexplained) == (0, 1, 0)
    assert "nats-server crash" in found.notes[0] and found.problems == []
    # The later run began before the crash: no outage explains that.
    assert check(*runs, nats_outages=[(2.5, 2.9)]).overlaps == 1
