"""Whole-workflow validation and the spec model's own checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from stellwerk.core.errors import NotFoundError, Problem, WorkflowInvalidError
from stellwerk.core.model import (
    Priority,
    RetryPolicy,
    TaskSpec,
    WorkflowSpec,
    check_workflow,
    load_workflow,
    load_workflow_file,
    validate_workflow,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def task(task_id: str, *deps: str, **fields: Any) -> TaskSpec:
    return TaskSpec(id=task_id, method=fields.pop("method", "m/x"), dependencies=deps, **fields)


def spec(*tasks: TaskSpec) -> WorkflowSpec:
    return WorkflowSpec(tasks=tasks)


def messages(problems: list[Problem], field: str | None = None) -> list[str]:
    return [p.message for p in problems if field is None or p.field == field]


def test_a_valid_workflow_has_no_problems() -> None:
    workflow = spec(task("a"), task("b", "a", params={"x": "${a.result}"}))
    assert validate_workflow(workflow) == []
    check_workflow(workflow)  # does not raise


def test_empty_workflow() -> None:
    assert validate_workflow(spec()) == [Problem(None, "tasks", "the workflow has no tasks")]


def test_duplicate_ids_are_reported_once_per_id() -> None:
    problems = validate_workflow(spec(task("a"), task("a"), task("a"), task("b")))
    assert problems == [Problem("a", "id", "3 tasks have the id 'a'")]


def test_unknown_and_self_dependencies() -> None:
    problems = validate_workflow(spec(task("a", "ghost", "a")))
    assert problems == [
        Problem("a", "dependencies", "unknown dependency 'ghost': no task has this id or name"),
        Problem("a", "dependencies", "a task cannot depend on itself"),
    ]


def test_a_shared_name_is_ambiguous_as_dependency() -> None:
    workflow = spec(task("a", name="Same"), task("b", name="Same"), task("c", "Same"))
    (problem,) = validate_workflow(workflow)
    assert problem.task == "c"
    assert "'Same' is ambiguous: 2 tasks have it ('a', 'b')" in problem.message


def test_each_cycle_is_reported_once_with_its_true_path() -> None:
    workflow = spec(task("a", "b"), task("b", "c"), task("c", "a"), task("d", "b"))
    assert validate_workflow(workflow) == [
        Problem("a", "dependencies", "circular dependency: a -> b -> c -> a")
    ]


def test_two_cycles_sharing_a_task_are_two_problems() -> None:
    workflow = spec(task("a", "b"), task("b", "a", "c"), task("c", "b"))
    assert messages(validate_workflow(workflow)) == [
        "circular dependency: a -> b -> a",
        "circular dependency: b -> c -> b",
    ]


def test_cycle_reached_from_the_middle_starts_at_its_earliest_task() -> None:
    workflow = spec(task("x", "c"), task("a", "b"), task("b", "c"), task("c", "a"))
    assert messages(validate_workflow(workflow)) == ["circular dependency: a -> b -> c -> a"]


def test_methods_are_checked_only_when_known_methods_are_given() -> None:
    workflow = spec(task("a", method="mcp/tool.ad"))
    assert validate_workflow(workflow) == []
    (problem,) = validate_workflow(workflow, known_methods={"mcp/tool.add", "python/execute"})
    assert problem == Problem(
        "a", "method", "unknown method 'mcp/tool.ad' (did you mean 'mcp/tool.add'?)"
    )
    # load_workflow never checks methods.
    load_workflow({"tasks": [{"id": "a", "method": "no/such.method"}]})


# --- references ----------------------------------------------------------------------------


def test_reference_to_an_unknown_task() -> None:
    (problem,) = validate_workflow(spec(task("a", params={"x": "${ghost.y}"})))
    assert problem == Problem(
        "a", "params", "params.x: unknown task 'ghost' in reference ${ghost.y}"
    )


def test_reference_with_an_index_on_the_task_gets_a_hint() -> None:
    workflow = spec(task("a"), task("b", "a", params={"x": "${a[0]}"}))
    (problem,) = validate_workflow(workflow)
    assert "unknown task 'a[0]'" in problem.message
    assert "${task.result[0]}" in problem.message


def test_reference_by_an_ambiguous_name() -> None:
    workflow = spec(
        task("a", name="N"), task("b", name="N"), task("c", "a", "b", params={"x": ["${N}"]})
    )
    (problem,) = validate_workflow(workflow)
    assert problem.message.startswith("params.x[0]: the task name 'N' in reference ${N}")
    assert "ambiguous" in problem.message


def test_reference_to_the_task_itself() -> None:
    (problem,) = validate_workflow(spec(task("a", params={"x": "${a.result}"})))
    assert problem.message == "params.x: ${a.result} refers to the task's own output"


def test_reference_outside_the_dependencies_names_the_dependency_to_add() -> None:
    workflow = spec(
        task("a", name="Alpha"),
        task("b"),
        task("c", "b", params={"deep": {"list": ["x ${Alpha.v} y", "${Alpha.v}"]}}),
    )
    (problem,) = validate_workflow(workflow)  # the repeat in the list is not reported twice
    assert problem == Problem(
        "c",
        "params",
        "params.deep.list[0]: ${Alpha.v} uses task 'a' (named 'Alpha'), which is not among "
        "this task's dependencies; add 'a' to dependencies",
    )


def test_transitive_dependencies_allow_references() -> None:
    workflow = spec(task("a"), task("b", "a"), task("c", "b", params={"x": "${a}"}))
    assert validate_workflow(workflow) == []


def test_references_in_dict_keys_are_literal() -> None:
    assert validate_workflow(spec(task("a", params={"${ghost}": 1}))) == []


def test_malformed_references_are_problems_of_params() -> None:
    workflow = spec(task("a", params={"x": "${unclosed", "y": ["${}", "${a..b}"]}))
    problems = validate_workflow(workflow)
    assert [p.field for p in problems] == ["params"] * 3
    assert "unclosed '${'" in problems[0].message
    assert "params.y[0]: empty reference" in problems[1].message
    assert "empty path segment" in problems[2].message


def test_check_workflow_raises_with_every_problem() -> None:
    with pytest.raises(WorkflowInvalidError) as caught:
        check_workflow(spec(task("a", "ghost"), task("b", "b")))
    assert [p.task for p in caught.value.problems] == ["a", "b"]


# --- the spec model ------------------------------------------------------------------------


def test_lookup_by_id_and_unique_name() -> None:
    workflow = spec(task("a", name="Alpha"), task("b", name="Twin"), task("c", name="Twin"))
    assert workflow.task("a").name == "Alpha"
    with pytest.raises(NotFoundError):
        workflow.task("Alpha")
    assert workflow.resolve_task_ref("a") == "a"
    assert workflow.resolve_task_ref("Alpha") == "a"
    assert workflow.resolve_task_ref("Twin") is None
    assert workflow.resolve_task_ref("nobody") is None


def test_an_id_wins_over_another_tasks_name() -> None:
    workflow = spec(task("a", name="b"), task("b", name="x"))
    assert workflow.resolve_task_ref("b") == "b"


def test_direct_construction_fills_gleitzeit_defaults() -> None:
    built = TaskSpec(id="t", method="llm/chat", dependencies=("a", "b", "a"))
    assert (built.name, built.protocol, built.dependencies) == ("t", "llm/v1", ("a", "b"))
    assert TaskSpec(id="t", method="add").protocol == "python/v1"
    assert WorkflowSpec(id="flow").name == "flow"
    assert WorkflowSpec().name == "Unnamed Workflow"


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "a.b"},
        {"name": ""},
        {"method": "9"},
        {"timeout": 0},
        {"timeout": 86_401},
        {"params": {"x": float("nan")}},
        {"params": {"x": "y" * (1024 * 1024)}},
        {"metadata": {"x": {1, 2}}},
        {"priority": "sometimes"},
        {"unknown": 1},
    ],
)
def test_direct_construction_refuses_bad_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TaskSpec(**{"id": "t", "method": "m", **fields})


def test_retry_policy_ranges() -> None:
    assert RetryPolicy() == RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=300.0)
    with pytest.raises(ValidationError, match="max_delay"):
        RetryPolicy(base_delay=50, max_delay=10)
    with pytest.raises(ValidationError):
        RetryPolicy(max_delay=3601)


def test_specs_are_frozen() -> None:
    built = task("a")
    with pytest.raises(ValidationError):
        built.id = "b"


@pytest.mark.parametrize("name", ["simple_mcp_workflow.yaml", "python_only_workflow.yaml"])
def test_loaded_specs_pass_the_models_own_validation(name: str) -> None:
    # The loader builds specs without validating twice; this holds it to the model's rules.
    loaded = load_workflow_file(EXAMPLES / name)
    assert WorkflowSpec.model_validate(loaded.model_dump()) == loaded


def test_loaded_spec_with_every_field_passes_the_models_validation() -> None:
    loaded = load_workflow(
        {
            "id": "flow",
            "metadata": {"owner": "me"},
            "tasks": [
                {
                    "id": "Größe",
                    "name": "Size",
                    "method": "mcp/tool.add",
                    "protocol": "mcp/v2",
                    "params": {"a": 2**70, "b": [1.5, None, True]},
                    "priority": "Urgent",
                    "timeout": 12,
                    "retry": {"max_attempts": 4, "backoff": "fixed", "max_delay": 10},
                    "metadata": {"k": "v"},
                },
                {"name": "second", "method": "m", "dependencies": ["Size"], "priority": 3},
            ],
        }
    )
    assert WorkflowSpec.model_validate(loaded.model_dump()) == loaded
    assert loaded.task("second").dependencies == ("Größe",)
    assert loaded.task("second").priority is Priority.LOW
