"""Compensations (``compensation_task``, ``on_failure: compensate``) in the model, the layout of
a run's documents, and the saga's pure decisions (order, end state)."""

from __future__ import annotations

import pytest

from stellwerk.core.model import FailureStrategy, WorkflowSpec, compensations
from stellwerk.core.progress._saga import normal_part_ended, saga_plan
from stellwerk.core.records import RunRecord, RunState, TaskRecord, TaskState
from stellwerk.resolver._documents import build_run_documents
from stellwerk_client.errors import WorkflowInvalidError
from stellwerk_client.model import WorkflowBuilder, load_workflow

SAGA = """
tasks:
  - {id: a, method: m, compensation_task: undo_a}
  - {id: b, method: m, dependencies: [a], on_failure: compensate}
  - {id: undo_a, method: m, dependencies: [a], params: {id: "${a.result.id}"}}
"""


def test_compensation_task_is_read_from_either_spelling_and_survives_the_contract() -> None:
    for spelled in ("compensation_task: undo_a", "metadata: {compensation_task: undo_a}"):
        spec = load_workflow(SAGA.replace("compensation_task: undo_a", spelled))
        assert spec.tasks[0].compensation_task == "undo_a"
        assert spec.tasks[1].on_failure is FailureStrategy.COMPENSATE
        again = WorkflowSpec.from_proto(spec.to_proto())  # TaskSpec has no field: metadata
        assert again.tasks[0].compensation_task == "undo_a"
        assert compensations(again) == {"undo_a": "a"}


def test_the_builder_takes_a_compensation() -> None:
    builder = WorkflowBuilder("w")
    a = builder.task("a", "m", compensation_task="undo_a")
    builder.task("b", "m", after=[a], on_failure="compensate")
    builder.task("undo_a", "m", after=[a])
    assert compensations(builder.build()) == {"undo_a": "a"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (SAGA.replace("compensation_task: undo_a", "compensation_task: 3"), "compensation_task"),
        (SAGA.replace("compensation_task: undo_a", "compensation_task: 'x.y'"), "task id"),
        (SAGA.replace("on_failure: compensate", "on_failure: undo"), "or compensate"),
        (SAGA + "  - {id: z, method: m, dependencies: [undo_a]}\n", "on the normal path"),
    ],
)
def test_malformed_compensations_are_refused(document: str, message: str) -> None:
    with pytest.raises(WorkflowInvalidError, match=message):
        load_workflow(document)


def test_a_compensation_is_laid_out_off_the_normal_path() -> None:
    spec = load_workflow(SAGA)
    documents = {t.id: t for t in build_run_documents(spec, run_id="r").tasks}
    undo = documents["undo_a"]
    assert (undo.role, undo.state, undo.attempt, undo.sink_index) == (
        "compensation",
        TaskState.PENDING,
        0,
        None,
    )
    assert documents["a"].compensation == "undo_a"
    assert documents["a"].dependents == [("b", 0)]  # not its compensation
    assert documents["b"].sink_index == 0  # the only sink: a's compensation depends on a
    assert documents["b"].on_failure == "compensate"
    assert documents["a"].role is None and documents["b"].compensation is None


def done(task_id: str, ended: float, *, compensation: str | None = "undo") -> TaskRecord:
    return TaskRecord(
        run_id="r",
        id=task_id,
        name=task_id,
        method="m",
        params={},
        dependencies=[],
        dependents=[],
        refs={},
        sink_index=None,
        state=TaskState.COMPLETED,
        ended_at=ended,
        compensation=None if compensation is None else f"{compensation}_{task_id}",
    )


def test_the_saga_undoes_completed_tasks_in_reverse_completion_order() -> None:
    tasks = [
        done("first", 1.0),
        done("third", 3.0),
        done("second", 2.0),
        done("plain", 4.0, compensation=None),  # nothing to undo
        done("failed", 5.0).evolve(state=TaskState.FAILED),  # never completed
    ]
    assert [c for _, c in saga_plan(tasks)] == ["undo_third", "undo_second", "undo_first"]


def test_the_normal_part_of_a_saga_ends_compensating_not_failed() -> None:
    run = RunRecord(
        id="r", workflow_id="w", name="n", description="", task_count=1, sink_count=1,
        created_at=0.0, failed=True,
    )  # fmt: skip
    assert normal_part_ended(run).state is RunState.FAILED
    in_saga = normal_part_ended(run.evolve(saga_cause="b"))
    assert (in_saga.state, in_saga.ended_at) == (RunState.COMPENSATING, None)
    assert not RunState.COMPENSATING.ended and RunState.COMPENSATED.ended
