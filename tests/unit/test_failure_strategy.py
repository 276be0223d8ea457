"""Failure strategies in the model (``on_failure`` / ``metadata.failure_strategy``) and the
record a final failure settles as."""

from __future__ import annotations

import pytest

from stellwerk.core.model import NULL_OUTPUT, FailureStrategy, WorkflowSpec, substitute
from stellwerk.core.progress._strategies import output_of, settle_failure
from stellwerk.core.records import TaskRecord, TaskState
from stellwerk.resolver._documents import build_run_documents
from stellwerk_client.errors import WorkflowInvalidError
from stellwerk_client.model import TaskSpec, WorkflowBuilder, load_workflow


def one_task(**extra: object) -> dict[str, object]:
    return {"tasks": [{"id": "t", "method": "mcp/tool.echo", **extra}]}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, FailureStrategy.BLOCK),
        ({"on_failure": "skip"}, FailureStrategy.SKIP),
        ({"on_failure": "BLOCK"}, FailureStrategy.BLOCK),
        ({"metadata": {"failure_strategy": "skip"}}, FailureStrategy.SKIP),
        ({"on_failure": "skip", "metadata": {"failure_strategy": "skip"}}, FailureStrategy.SKIP),
    ],
)
def test_the_strategy_is_read_from_either_spelling(
    extra: dict[str, object], expected: FailureStrategy
) -> None:
    spec = load_workflow(one_task(**extra))
    assert spec.tasks[0].on_failure is expected
    assert WorkflowSpec.from_proto(spec.to_proto()).tasks[0].on_failure is expected


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"on_failure": "retry-harder"}, "must be block, skip, alternative or compensate"),
        ({"on_failure": 3}, "must be block, skip, alternative or compensate"),
        ({"on_failure": "alternative"}, "needs alternative_task"),
        ({"alternative_task": "t"}, "only with on_failure: alternative"),
        ({"on_failure": "alternative", "alternative_task": "t"}, "its own alternative"),
        ({"on_failure": "alternative", "alternative_task": "zz"}, "unknown alternative task"),
        ({"metadata": {"failure_strategy": "ignore"}}, "metadata.failure_strategy"),
        ({"on_failure": "skip", "metadata": {"failure_strategy": "block"}}, "disagree"),
    ],
)
def test_unknown_or_conflicting_strategies_are_refused(
    extra: dict[str, object], message: str
) -> None:
    with pytest.raises(WorkflowInvalidError, match=message):
        load_workflow(one_task(**extra))


def test_the_builder_takes_a_strategy() -> None:
    builder = WorkflowBuilder("w")
    builder.task("t", "mcp/tool.echo", on_failure="skip")
    spare = builder.task("spare", "mcp/tool.echo")
    builder.task("u", "mcp/tool.echo", on_failure="alternative", alternative_task=spare)
    built = builder.build()
    assert built.tasks[0].on_failure is FailureStrategy.SKIP
    assert (built.tasks[2].on_failure, built.tasks[2].alternative_task) == (
        FailureStrategy.ALTERNATIVE,
        "spare",
    )


def test_the_model_built_directly_agrees_with_the_loader() -> None:
    built = TaskSpec(id="t", method="m", metadata={"failure_strategy": "skip"})
    assert built.on_failure is FailureStrategy.SKIP
    with pytest.raises(ValueError, match="must be block, skip, alternative or compensate"):
        TaskSpec(id="t", method="m", on_failure="undo")  # type: ignore[arg-type]


def test_references_into_a_skipped_task_are_null_whatever_their_path() -> None:
    params = {"a": "${b}", "b": "${b.result.x[3]}", "c": "got ${b.result.y}"}
    assert substitute(params, lambda _: NULL_OUTPUT) == {"a": None, "b": None, "c": "got null"}


def record(state: TaskState, on_failure: str | None) -> TaskRecord:
    return TaskRecord(
        run_id="r",
        id="t",
        name="t",
        method="m",
        params={},
        dependencies=[],
        dependents=[],
        refs={},
        sink_index=0,
        state=state,
        error="broke",
        on_failure=on_failure,
    )


def test_a_final_failure_under_skip_settles_as_skipped_and_keeps_its_error() -> None:
    skipped = settle_failure(record(TaskState.FAILED, "skip"))
    assert skipped.state is TaskState.SKIPPED
    assert skipped.error == "broke"
    assert settle_failure(skipped) == skipped  # applied twice: the same record
    assert output_of(skipped) is NULL_OUTPUT
    assert TaskRecord.from_bytes(skipped.to_bytes()) == skipped
    plain = record(TaskState.FAILED, None)
    assert settle_failure(plain) is plain
    assert b"on_failure" not in plain.to_bytes()  # documents without a strategy unchanged
    completed = record(TaskState.COMPLETED, "skip")
    assert settle_failure(completed) is completed


A = {"id": "a", "method": "m"}


def b(**extra: object) -> dict[str, object]:
    return {"id": "b", "method": "m", "dependencies": ["a"], **extra}


ALT = {"on_failure": "alternative", "alternative_task": "x"}


def test_an_alternative_is_read_from_either_spelling_and_travels() -> None:
    for task in (
        b(**ALT),
        b(metadata={"failure_strategy": "alternative", "alternative_task": "x"}),
    ):
        spec = load_workflow(
            {"tasks": [A, task, {"id": "x", "method": "m", "dependencies": ["a"]}]}
        )
        assert (spec.tasks[1].on_failure, spec.tasks[1].alternative_task) == (
            FailureStrategy.ALTERNATIVE,
            "x",
        )
        again = WorkflowSpec.from_proto(spec.to_proto()).tasks[1]
        assert again.alternative_task == "x"


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            [
                A,
                b(**ALT),
                {"id": "x", "method": "m"},
                {"id": "y", "method": "m", "dependencies": ["x"]},
            ],
            "'x' is on the normal path: 'y' depend on it",
        ),
        (
            [
                A,
                b(**ALT),
                {"id": "x", "method": "m", "on_failure": "alternative", "alternative_task": "b"},
            ],
            "alternatives cycle: 'b' -> 'x' -> 'b'",
        ),
        (
            [
                A,
                {"id": "c", "method": "m"},
                b(**ALT),
                {"id": "x", "method": "m", "dependencies": ["c"]},
            ],
            "may depend only on tasks 'b' depends on; 'c' is not one",
        ),
        (
            [A, b(**ALT), {"id": "e", "method": "m", **ALT}, {"id": "x", "method": "m"}],
            "already the alternative of 'b'",
        ),
        (
            [
                A,
                b(
                    on_failure="alternative",
                    alternative_task="x",
                    metadata={"alternative_task": "y"},
                ),
            ],
            "disagree",
        ),
    ],
)
def test_alternatives_that_cannot_work_are_refused(
    tasks: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(WorkflowInvalidError, match=message):
        load_workflow({"tasks": tasks})


def test_an_alternative_takes_the_place_of_the_task_it_replaces_in_the_documents() -> None:

    spec = load_workflow(
        {
            "tasks": [
                A,
                b(on_failure="alternative", alternative_task="x"),
                {
                    "id": "x",
                    "method": "m",
                    "dependencies": ["a"],
                    "on_failure": "alternative",
                    "alternative_task": "y",
                },
                {"id": "y", "method": "m"},
                {"id": "d", "method": "m", "dependencies": ["b"]},
            ]
        }
    )
    docs = build_run_documents(spec, run_id="0" * 22)
    by_id = {t.id: t for t in docs.tasks}
    assert by_id["a"].dependents == [("b", 0)]  # not the alternative x
    assert by_id["b"].alternative == "x" and by_id["x"].alternative == "y"
    assert by_id["x"].dependents == by_id["y"].dependents == [("d", 0)]  # b's place
    assert by_id["y"].state is TaskState.PENDING  # no dependencies, but never a root
    assert docs.header.sink_count == 1 and by_id["d"].sink_index == 0
    assert by_id["x"].sink_index is None and by_id["y"].sink_index is None
