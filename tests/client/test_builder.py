"""Workflows built in code: the same model and the same validation as a YAML file."""

from __future__ import annotations

import pytest

from stellwerk_client import WorkflowBuilder, WorkflowInvalidError, load_workflow

YAML = """\
name: numbers
id: numbers-1
tasks:
  - id: add
    method: mcp/tool.add
    params: {a: 40, b: 2}
  - id: double
    method: mcp/tool.multiply
    dependencies: [add]
    params: {a: "${add}", b: 2}
    timeout: 5
  - id: say
    method: mcp/tool.echo
    dependencies: [double]
    params: {message: "twice is ${double.result}"}
"""


def _built() -> WorkflowBuilder:
    flow = WorkflowBuilder("numbers", id="numbers-1")
    add = flow.task("add", "mcp/tool.add", {"a": 40, "b": 2})
    double = flow.task("double", "mcp/tool.multiply", {"a": add.result, "b": 2}, timeout=5)
    flow.task("say", "mcp/tool.echo", {"message": f"twice is {double['result']}"})
    return flow


def test_a_built_workflow_equals_the_same_workflow_in_yaml() -> None:
    assert _built().build() == load_workflow(YAML)


def test_references_become_dependencies_and_explicit_ones_are_kept() -> None:
    flow = WorkflowBuilder("deps")
    first = flow.task("first", "m/x")
    second = flow.task("second", "m/x", after=[first])
    flow.task("third", "m/x", {"v": second["items"][0]}, after=["first"])
    spec = flow.build()
    assert spec.task("third").dependencies == ("first", "second")
    assert spec.task("third").params == {"v": "${second.items.0}"}


def test_a_built_workflow_is_validated_like_a_file_every_problem_at_once() -> None:
    flow = WorkflowBuilder("broken")
    flow.task("a", "m/x", after=["ghost"])
    flow.task("a", "m/x")
    flow.task("b", "not a method", timeout=-1)
    with pytest.raises(WorkflowInvalidError) as caught:
        flow.build()
    fields = {(p.task, p.field) for p in caught.value.problems}
    assert {("a", "dependencies"), ("b", "method"), ("b", "timeout")} <= fields
    assert any(p.field == "id" for p in caught.value.problems), caught.value.problems


def test_the_document_is_what_a_yaml_file_would_hold() -> None:
    document = _built().to_dict()
    assert document["tasks"][1] == {
        "id": "double",
        "method": "mcp/tool.multiply",
        "params": {"a": "${add}", "b": 2},
        "dependencies": ["add"],
        "timeout": 5,
    }
