"""Loading workflow documents: the Gleitzeit format, field checks and hostile input."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from stellwerk.core.errors import NotFoundError, Problem, WorkflowInvalidError
from stellwerk.core.model import (
    MAX_DOCUMENT_BYTES,
    Backoff,
    Priority,
    RetryPolicy,
    WorkflowGraph,
    WorkflowSpec,
    load_workflow,
    load_workflow_file,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def problems_of(source: Any, **kwargs: Any) -> list[Problem]:
    with pytest.raises(WorkflowInvalidError) as caught:
        load_workflow(source, **kwargs)
    assert caught.value.problems, "an invalid workflow must name its problems"
    return list(caught.value.problems)


def one_task(**task: Any) -> dict[str, Any]:
    return {"tasks": [{"id": "t", "method": "m/x", **task}]}


def find(problems: list[Problem], field: str, task: str | None = "t") -> Problem:
    matches = [p for p in problems if p.field == field and p.task == task]
    assert matches, f"no problem for {task!r}/{field!r} in {problems}"
    return matches[0]


# --- the example file ----------------------------------------------------------------------


def test_example_file_loads_with_dependencies_and_exact_params() -> None:
    spec = load_workflow_file(EXAMPLES / "simple_mcp_workflow.yaml")

    assert spec.name == "Simple MCP Workflow"
    assert spec.id is None
    assert [t.id for t in spec.tasks] == [
        "echo_test",
        "calculate_sum",
        "calculate_product",
        "combine_results",
    ]
    assert spec.task("calculate_product").dependencies == ("calculate_sum",)
    assert spec.task("combine_results").dependencies == ("echo_test", "calculate_product")
    params = spec.task("calculate_sum").params
    assert params == {"a": 42, "b": 58}
    assert all(type(v) is int for v in params.values())
    assert spec.task("echo_test").protocol == "mcp/v1"
    assert spec.task("echo_test").name == "Echo Message"
    assert spec.task("echo_test").priority is Priority.NORMAL


def test_example_loads_the_same_from_json_text_and_from_a_mapping() -> None:
    from_yaml = load_workflow_file(EXAMPLES / "simple_mcp_workflow.yaml")
    as_dict = from_yaml.model_dump(mode="json")
    assert load_workflow(json.dumps(as_dict)) == from_yaml
    assert load_workflow(as_dict) == from_yaml


def test_gleitzeit_defaults_and_aliases() -> None:
    spec = load_workflow(
        {
            "id": "wf",
            "providers": ["x"],
            "version": "1",
            "timeout": 10,
            "wait_for_completion": True,
            "tasks": [
                {"name": "only name", "method": "add", "parameters": {"a": 1}, "tags": ["x"]},
                {"id": "b", "method": "llm/chat", "priority": 1, "description": "ignored"},
                {"id": "c", "method": "x/y", "protocol": "custom/v2", "priority": "URGENT"},
            ],
        }
    )
    assert spec.name == "wf"
    first, second, third = spec.tasks
    assert (first.id, first.name, first.protocol) == ("only name", "only name", "python/v1")
    assert first.params == {"a": 1}
    assert (second.protocol, second.priority) == ("llm/v1", Priority.HIGH)
    assert (third.protocol, third.priority) == ("custom/v2", Priority.URGENT)
    assert load_workflow({"tasks": [{"id": "a", "method": "m"}]}).name == "Unnamed Workflow"


def test_numeric_priorities_mean_high_normal_low() -> None:
    tasks = [{"id": f"t{n}", "method": "m", "priority": n} for n in (1, 2, 3)]
    spec = load_workflow({"tasks": tasks})
    assert [t.priority for t in spec.tasks] == [Priority.HIGH, Priority.NORMAL, Priority.LOW]


def test_retry_and_timeout_are_read() -> None:
    spec = load_workflow(
        one_task(
            timeout=30,
            retry={"max_attempts": 5, "backoff": "linear", "base_delay": 2, "jitter": False},
        )
    )
    task = spec.tasks[0]
    assert task.timeout == 30.0
    assert task.retry == RetryPolicy(
        max_attempts=5, backoff=Backoff.LINEAR, base_delay=2.0, jitter=False
    )


def test_dependencies_by_name_become_ids_in_order_without_repeats() -> None:
    spec = load_workflow(
        {
            "tasks": [
                {"id": "a", "name": "Alpha", "method": "m"},
                {"id": "b", "name": "Beta", "method": "m"},
                {"id": "c", "method": "m", "dependencies": ["Beta", "a", "Alpha", "b"]},
            ]
        }
    )
    assert spec.task("c").dependencies == ("b", "a")


def test_unicode_ids_with_spaces() -> None:
    spec = load_workflow(
        """
tasks:
  - id: "Größe berechnen"
    method: mcp/tool.add
    params: {a: 1, b: 2}
  - id: "日本"
    method: mcp/tool.echo
    dependencies: ["Größe berechnen"]
    params: {message: "${Größe berechnen.result} ${Größe berechnen}"}
  - name: "with  spaces "
    method: mcp/tool.echo
    dependencies: ["日本"]
    params: {message: "${日本.response}"}
""".encode()
    )
    assert [t.id for t in spec.tasks] == ["Größe berechnen", "日本", "with  spaces "]
    assert spec.task("日本").dependencies == ("Größe berechnen",)


def test_big_integers_stay_exact() -> None:
    big = 2**200 + 1
    spec = load_workflow(f'{{"tasks": [{{"id": "t", "method": "m", "params": {{"n": {big}}}}}]}}')
    assert spec.tasks[0].params["n"] == big
    spec = load_workflow(f"tasks:\n  - id: t\n    method: m\n    params: {{n: {big}}}\n")
    assert spec.tasks[0].params["n"] == big


# --- hostile documents ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        (b"tasks: [\xff\xfe]", "not UTF-8"),
        ("", "empty"),
        ("- a\n- b\n", "must be a mapping, got a list"),
        ("just text", "must be a mapping, got a string"),
        ("tasks: [unclosed", "invalid YAML"),
        ('{"tasks": [}', "invalid JSON"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ('{"id": "x", "id": "y"}', "duplicate key 'id'"),
        ("[" * 5000 + "]" * 5000, "invalid YAML"),
        ('{"a":' * 5000 + "1" + "}" * 5000, "nested too deeply"),
        ("a: !!python/object:os.system x", "invalid YAML"),
        ("n: " + "9" * 5000, "cannot read the YAML document"),
        ('{"n": ' + "9" * 5000 + "}", "cannot read the JSON document"),
        (42, "not an integer"),
    ],
)
def test_unreadable_documents_become_problems(source: Any, needle: str) -> None:
    problems = problems_of(source)
    assert any(needle in p.message for p in problems), problems


def test_yaml_aliases_are_refused_billion_laughs_included() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    problems = problems_of("\n".join(lines) + "\ntasks: []\n")
    assert len(problems) == 1
    assert "aliases" in problems[0].message
    assert "line 1" in problems[0].message


def test_a_plain_anchor_without_alias_is_harmless() -> None:
    spec = load_workflow("tasks:\n  - &t {id: a, method: m}\n")
    assert spec.tasks[0].id == "a"


def test_documents_over_64_mib_are_refused_before_parsing() -> None:
    text = "#" * (MAX_DOCUMENT_BYTES + 1)
    assert "larger than" in problems_of(text)[0].message
    assert "larger than" in problems_of(text.encode())[0].message
    # Multi-byte characters count in bytes, not characters.
    wide = "# " + "ä" * (MAX_DOCUMENT_BYTES // 2)
    assert "larger than" in problems_of(wide)[0].message


def test_non_yaml_file_suffix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flow.txt"
    path.write_text("tasks: []")
    with pytest.raises(WorkflowInvalidError) as caught:
        load_workflow_file(path)
    assert caught.value.problems[0].field == "path"
    with pytest.raises(NotFoundError):
        load_workflow_file(tmp_path / "missing.yaml")


def test_json_file_is_read_as_json(tmp_path: Path) -> None:
    path = tmp_path / "flow.JSON"
    path.write_text('{"tasks": [{"id": "a", "method": "m", "params": {"x": 1e3}}]}')
    assert load_workflow_file(path).tasks[0].params == {"x": 1000.0}


def test_unknown_format_and_batch_workflows_are_refused() -> None:
    assert "unknown format" in problems_of("tasks: []", format="toml")[0].message
    for doc in ({"type": "batch", "template": {}}, {"name": "b", "batch": {"directory": "."}}):
        (problem,) = problems_of(doc)
        assert problem.message == "batch workflows (type: batch) are not supported yet"


# --- workflow and task fields --------------------------------------------------------------


def test_unknown_keys_name_the_key_and_the_allowed_keys() -> None:
    problems = problems_of({"tasks": [{"id": "t", "method": "m", "retry_policy": {}}], "x": 1})
    workflow_key = find(problems, "x", None)
    assert "unknown key 'x'" in workflow_key.message
    assert "description, id, metadata, name" in workflow_key.message
    task_key = find(problems, "retry_policy")
    assert "did you mean 'retry'?" in task_key.message
    assert "dependencies" in task_key.message


def test_gleitzeits_later_retry_spelling_is_accepted() -> None:
    retry = {"max_attempts": 4, "backoff_strategy": "linear", "base_delay": 0.5}
    task = load_workflow(one_task(retry_config=retry)).tasks[0]
    assert task.retry is not None
    assert (task.retry.max_attempts, str(task.retry.backoff)) == (4, "linear")
    both = problems_of({"tasks": [{"id": "t", "method": "m/x", "retry": {}, "retry_config": {}}]})
    assert "not both" in find(both, "retry").message


@pytest.mark.parametrize(
    ("task", "field", "needle"),
    [
        ({"priority": [1]}, "priority", "got [1]"),
        ({"priority": "sometimes"}, "priority", "urgent, high, normal or low"),
        ({"priority": 4}, "priority", "got 4"),
        ({"priority": True}, "priority", "got True"),
        ({"timeout": -5}, "timeout", "more than 0"),
        ({"timeout": 0}, "timeout", "more than 0"),
        ({"timeout": 86_401}, "timeout", "at most 86400"),
        ({"timeout": 10**400}, "timeout", "at most 86400"),
        ({"timeout": True}, "timeout", "got a boolean"),
        ({"timeout": "30s"}, "timeout", "got a string"),
        ({"timeout": float("nan")}, "timeout", "finite"),
        ({"params": [1]}, "params", "must be a mapping"),
        ({"params": {"x": float("inf")}}, "params", "params.x: inf"),
        ({"params": {"x": {"when": __import__("datetime").date(2024, 1, 1)}}}, "params", "quote"),
        ({"params": {"x": (1, 2)}}, "params", "use a list"),
        ({"params": {"x": {1: "a"}}}, "params", "JSON object keys are strings"),
        ({"params": {}, "parameters": {}}, "params", "not both"),
        ({"metadata": "m"}, "metadata", "must be a mapping"),
        ({"dependencies": "a"}, "dependencies", "write ['a']"),
        ({"dependencies": [1]}, "dependencies", "dependencies[0]"),
        ({"method": "9lives"}, "method", "start with a letter"),
        ({"method": "a..b"}, "method", "'..'"),
        ({"method": "a.b."}, "method", "end with '.'"),
        ({"method": ""}, "method", "empty"),
        ({"method": None}, "method", "missing"),
        ({"protocol": "not a protocol"}, "protocol", "name/v1"),
        ({"retry": "often"}, "retry", "must be a mapping"),
        ({"retry": {"max_attempts": 11}}, "retry.max_attempts", "less than or equal to 10"),
        ({"retry": {"max_attempts": True}}, "retry.max_attempts", "valid integer"),
        ({"retry": {"backoff": "random"}}, "retry.backoff", "exponential"),
        ({"retry": {"base_delay": 0.01}}, "retry.base_delay", "greater than or equal to 0.1"),
        ({"retry": {"base_delay": 10, "max_delay": 5}}, "retry", "max_delay (5)"),
        ({"retry": {"tries": 3}}, "retry.tries", "allowed keys: backoff"),
    ],
)
def test_bad_task_fields_are_named(task: dict[str, Any], field: str, needle: str) -> None:
    problem = find(problems_of(one_task(**task)), field)
    assert needle in problem.message


def test_deeply_nested_params_are_refused_without_recursion_error() -> None:
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(5000):
        inner["x"] = {}
        inner = inner["x"]
    problem = find(problems_of(one_task(params=nested)), "params")
    assert "nested more than 100 levels" in problem.message
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert "nested more than" in find(problems_of(one_task(params=cyclic)), "params").message


def test_params_over_one_mib_name_the_limit() -> None:
    problem = find(problems_of(one_task(params={"text": "x" * (2 * 1024 * 1024)})), "params")
    assert problem.message == "params are 2,097,163 bytes as JSON; the limit is 1 MiB per task"
    # Just under the limit is fine (bytes of UTF-8, so 'ä' counts twice).
    load_workflow(one_task(params={"t": "ä" * (512 * 1024 - 10)}))


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "must not be empty"),
        ("  ", "must not be empty"),
        ("a.b", "contains '.'"),
        ("${x}", "'$', '{', '}'"),
        ("tab\there", "control character"),
        ("x" * 201, "201 characters long"),
        (7, "must be a string, got an integer"),
    ],
)
def test_bad_ids_and_names(value: object, needle: str) -> None:
    problem = find(problems_of(one_task(id=value)), "id", "#0")
    assert needle in problem.message
    problem = find(problems_of({"tasks": [{"name": value, "method": "m"}]}), "name", "#0")
    assert needle in problem.message


def test_a_task_needs_an_id_or_a_name() -> None:
    problem = find(problems_of({"tasks": [{"method": "m"}]}), "id", "#0")
    assert problem.message == "a task needs an id or a name"


def test_non_mapping_tasks_and_tasks_that_are_not_a_list() -> None:
    problems = problems_of({"tasks": ["a", None, {"id": "ok", "method": "m"}]})
    assert [(p.task, p.field) for p in problems] == [("#0", "tasks"), ("#1", "tasks")]
    assert "got a mapping" in find(problems_of({"tasks": {"a": 1}}), "tasks", None).message


@pytest.mark.parametrize("tasks", [[], None])
def test_empty_workflows_are_refused(tasks: object) -> None:
    (problem,) = problems_of({"name": "w", "tasks": tasks})
    assert (problem.field, problem.message) == ("tasks", "the workflow has no tasks")


def test_workflow_level_fields_are_checked() -> None:
    problems = problems_of(
        {"id": 5, "name": "", "description": 1, "metadata": [], "tasks": [{"id": "a"}]}
    )
    assert {p.field for p in problems if p.task is None} >= {
        "id",
        "name",
        "description",
        "metadata",
    }


def test_many_problems_are_reported_at_once() -> None:
    problems = problems_of(
        """
name: many
colour: blue
tasks:
  - id: a
    method: m
    priority: sometimes
  - id: b
    method: "9"
    dependencies: [a, ghost]
  - id: c
    method: m
    timeout: -1
    dependencies: [d]
    params: {x: "${a.out}"}
  - id: d
    method: m
    dependencies: [c]
"""
    )
    where = {(p.task, p.field) for p in problems}
    assert where >= {
        (None, "colour"),
        ("a", "priority"),
        ("b", "method"),
        ("b", "dependencies"),
        ("c", "timeout"),
        ("c", "params"),
        ("c", "dependencies"),
    }
    assert any(p.message == "circular dependency: c -> d -> c" for p in problems)


def test_a_broken_field_does_not_hide_structural_problems_elsewhere() -> None:
    problems = problems_of(
        {
            "tasks": [
                {"id": "a", "method": "m", "priority": "bad", "dependencies": ["b"]},
                {"id": "b", "method": "m", "dependencies": ["a"]},
            ]
        }
    )
    assert [p.field for p in problems] == ["priority", "dependencies"]
    assert problems[1].message == "circular dependency: a -> b -> a"


# --- scale and robustness ------------------------------------------------------------------


def test_ten_thousand_tasks_chain_and_fan_out_load() -> None:
    tasks: list[dict[str, Any]] = [{"id": "t0", "method": "m", "params": {"n": 0}}]
    for i in range(1, 5000):  # a chain, each task reading the one before and the root
        tasks.append(
            {
                "id": f"t{i}",
                "method": "m",
                "dependencies": [f"t{i - 1}"],
                "params": {"prev": f"${{t{i - 1}.result}}", "root": "${t0}"},
            }
        )
    for i in range(5000):  # a fan-out from the middle of the chain
        tasks.append({"id": f"f{i}", "method": "m", "dependencies": ["t2500"],
                      "params": {"x": "${t100.result}"}})  # fmt: skip
    text = json.dumps({"name": "big", "tasks": tasks})

    spec = load_workflow(text)

    assert len(spec.tasks) == 10_000
    graph = WorkflowGraph.build(spec)
    assert len(graph.dependents("t2500")) == 5001
    assert len(graph.ancestors("t4999")) == 4999
    assert graph.topological_order()[:3] == ["t0", "t1", "t2"]


def test_ten_thousand_task_cycle_is_reported_without_recursion_error() -> None:
    n = 10_000
    tasks = [{"id": f"t{i}", "method": "m", "dependencies": [f"t{(i + 1) % n}"]} for i in range(n)]
    (problem,) = problems_of({"tasks": tasks})
    assert problem.message.startswith("circular dependency: t0 -> t1 -> t2")
    assert problem.message.endswith("t9999 -> t0")


def test_load_workflow_never_raises_anything_else_on_mangled_input() -> None:
    base = (EXAMPLES / "simple_mcp_workflow.yaml").read_bytes()
    alphabet = b"{}[]:,-&*!|>'\"\n\t #$.\\\x00\xff0"
    rng = random.Random(20240601)
    for _ in range(600):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(data))
            action = rng.random()
            if action < 0.4:
                data[pos] = rng.choice(alphabet)
            elif action < 0.7:
                del data[pos : pos + rng.randint(1, 20)]
            else:
                data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))
        try:
            spec = load_workflow(bytes(data))
        except WorkflowInvalidError as error:
            assert error.problems
        else:
            assert isinstance(spec, WorkflowSpec)
