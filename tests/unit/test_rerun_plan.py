"""What a restart runs again (core/progress/_rerun.py): pure functions on task documents."""

from __future__ import annotations

from stellwerk.core.progress._rerun import (
    place_of,
    rerun_set,
    reset,
    restarted_header,
    restored,
)
from stellwerk.core.progress._retry import retry_of
from stellwerk.core.records import (
    RunRecord,
    RunState,
    TaskRecord,
    TaskState,
    bitmap_set,
    bitmap_test,
    new_bitmap,
)


def _task(
    task_id: str, state: TaskState, deps: list[str], dependents: list[str], **kw: object
) -> TaskRecord:
    bits = new_bitmap(len(deps))
    for i in range(len(deps)):
        bits = bitmap_set(bits, i)
    return TaskRecord(
        run_id="r",
        id=task_id,
        name=task_id,
        method="m/x",
        params={},
        dependencies=deps,
        dependents=[(d, 0) for d in dependents],
        refs={},
        sink_index=kw.pop("sink_index", None),  # type: ignore[arg-type]
        state=state,
        settled_deps=bits,
        attempt=kw.pop("attempt", 1),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def _diamond(b_state: TaskState) -> dict[str, TaskRecord]:
    """a -> (b, c) -> d; e apart."""
    tasks = [
        _task("a", TaskState.COMPLETED, [], ["b", "c"]),
        _task("b", b_state, ["a"], ["d"]),
        _task("c", TaskState.COMPLETED, ["a"], ["d"]),
        _task("d", TaskState.BLOCKED, ["b", "c"], [], sink_index=0, attempt=0),
        _task("e", TaskState.COMPLETED, [], [], sink_index=1),
    ]
    return {t.id: t for t in tasks}


def test_failed_and_blocked_run_again_completed_do_not() -> None:
    assert rerun_set(_diamond(TaskState.FAILED)) == {"b", "d"}
    assert rerun_set(_diamond(TaskState.CANCELLED)) == {"b", "d"}


def test_a_skipped_task_runs_again_with_its_dependents() -> None:
    tasks = _diamond(TaskState.SKIPPED)
    tasks["d"] = tasks["d"].evolve(state=TaskState.COMPLETED)  # it ran with null
    assert rerun_set(tasks) == {"b", "d"}


def test_from_adds_the_task_and_everything_downstream() -> None:
    tasks = _diamond(TaskState.COMPLETED)
    tasks["d"] = tasks["d"].evolve(state=TaskState.COMPLETED)
    assert rerun_set(tasks) == set()
    assert rerun_set(tasks, ["c"]) == {"c", "d"}
    assert rerun_set(tasks, ["a"]) == {"a", "b", "c", "d"}


def test_a_failure_covered_by_its_alternative_is_done_else_the_chain_runs_again() -> None:
    tasks = _diamond(TaskState.FAILED)
    tasks["b"] = tasks["b"].evolve(alternative="b2")
    tasks["b2"] = _task("b2", TaskState.COMPLETED, ["a"], ["d"])
    tasks["d"] = tasks["d"].evolve(state=TaskState.COMPLETED)
    assert rerun_set(tasks) == set()
    assert place_of("b2", tasks) == "b"
    assert rerun_set(tasks, ["b2"]) == {"b", "b2", "d"}  # an alternative names its place
    tasks["b2"] = tasks["b2"].evolve(state=TaskState.FAILED)
    tasks["d"] = tasks["d"].evolve(state=TaskState.BLOCKED)
    assert rerun_set(tasks) == {"b", "b2", "d"}


def test_reset_sets_the_bits_of_what_keeps_its_result_and_continues_the_attempts() -> None:
    tasks = _diamond(TaskState.FAILED)
    rerun = {"b", "d"}
    b = reset(tasks["b"].evolve(attempt=3, error="boom"), rerun, restart=1, now=5.0)
    assert (b.state, b.attempt, b.attempt_base, b.restart) == (TaskState.DISPATCHED, 4, 3, 1)
    assert b.error is None and b.dispatched_at == 5.0
    d = reset(tasks["d"].evolve(dep_failed=True), rerun, restart=1, now=5.0)
    assert (d.state, d.attempt, d.dep_failed) == (TaskState.PENDING, 0, False)
    assert not bitmap_test(d.settled_deps, 0) and bitmap_test(d.settled_deps, 1)


def test_a_rerun_gets_the_retry_budget_anew() -> None:
    policy = {"max_attempts": 2, "backoff": "fixed", "base_delay": 0.1, "jitter": False}
    spent = _task("t", TaskState.DISPATCHED, [], [], attempt=2, retry=policy)
    assert retry_of(spent, error="x", executor=None, start=0, end=0, retryable=True) is None
    again = reset(spent, {"t"}, restart=1, now=0.0)
    assert again.attempt == 3
    retried = retry_of(again, error="x", executor=None, start=0, end=0, retryable=True)
    assert retried is not None and retried.attempt == 4
    assert retry_of(retried, error="x", executor=None, start=0, end=0, retryable=True) is None


def test_header_and_restore() -> None:
    run = RunRecord(id="r", workflow_id="w", name="n", description="", task_count=5,
                    sink_count=2, created_at=1.0, state=RunState.FAILED, failed=True,
                    error="x", ended_at=2.0, settled_sinks="03")  # fmt: skip
    again = restarted_header(run, [0], restart=1, now=3.0)
    assert (again.state, again.restarts, again.failed, again.error) == (
        RunState.RUNNING,
        1,
        False,
        None,
    )
    assert again.ended_at is None and again.settled_sinks == "02"
    assert restarted_header(run, [], restart=1, now=3.0).state is RunState.COMPLETED

    saved = _task("c", TaskState.COMPLETED, ["a"], [], attempt=1, result=1, has_result=True)
    now = saved.evolve(attempt=2, result=2)
    back = restored(saved, now, restart=2)
    assert back is not None and (back.result, back.attempt, back.restart) == (1, 2, 2)
    assert restored(saved, saved, restart=2) is None
