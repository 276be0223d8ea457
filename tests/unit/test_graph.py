"""The dependency graph: lookups both ways, ordering, cycles, ancestry; iterative at scale."""

from __future__ import annotations

import pytest

from stellwerk.core.errors import NotFoundError, WorkflowInvalidError
from stellwerk.core.model import TaskSpec, WorkflowGraph, WorkflowSpec


def graph(*edges: tuple[str, tuple[str, ...]]) -> WorkflowGraph:
    tasks = [TaskSpec(id=t, method="m", dependencies=deps) for t, deps in edges]
    return WorkflowGraph.build(WorkflowSpec(tasks=tuple(tasks)))


DIAMOND = (("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ("c", "b")))


def test_dependencies_and_dependents() -> None:
    g = graph(*DIAMOND)
    assert g.dependencies("d") == ("c", "b")
    assert g.dependents("a") == ("b", "c")
    assert g.dependents("d") == ()
    assert g.dependencies("a") == ()


def test_roots_and_sinks() -> None:
    g = graph(*DIAMOND, ("lonely", ()))
    assert g.roots == ("a", "lonely")
    assert g.sinks == ("d", "lonely")


def test_topological_order_puts_dependencies_first_and_keeps_task_order() -> None:
    g = graph(("late", ("early",)), ("early", ()), ("other", ()))
    assert g.topological_order() == ["early", "other", "late"]
    order = graph(*DIAMOND).topological_order()
    assert order == ["a", "b", "c", "d"]


def test_topological_order_refuses_cycles() -> None:
    with pytest.raises(WorkflowInvalidError, match="a -> b -> a"):
        graph(("a", ("b",)), ("b", ("a",))).topological_order()


def test_ancestors_and_descendants() -> None:
    g = graph(*DIAMOND, ("e", ("d",)))
    assert g.ancestors("e") == frozenset({"a", "b", "c", "d"})
    assert g.ancestors("a") == frozenset()
    assert g.descendants("b") == frozenset({"d", "e"})


def test_unknown_task_ids_raise_not_found() -> None:
    g = graph(*DIAMOND)
    for call in (g.dependencies, g.dependents, g.ancestors, g.descendants):
        with pytest.raises(NotFoundError):
            call("ghost")
    assert "a" in g and "ghost" not in g
    assert len(g) == 4


def test_unknown_and_self_edges_are_left_out() -> None:
    g = graph(("a", ("ghost", "a")), ("b", ("a", "a")))
    assert g.dependencies("a") == ()
    assert g.dependencies("b") == ("a",)
    assert g.find_cycles() == []


def test_find_cycles_reports_each_cycle_once_rotated_to_its_earliest_task() -> None:
    g = graph(("x", ("c",)), ("a", ("b",)), ("b", ("c",)), ("c", ("a",)))
    assert g.find_cycles() == [["a", "b", "c"]]


def test_find_cycles_finds_separate_cycles() -> None:
    g = graph(("a", ("b",)), ("b", ("a",)), ("c", ("d",)), ("d", ("c",)), ("e", ("a", "c")))
    assert g.find_cycles() == [["a", "b"], ["c", "d"]]


def test_a_ten_thousand_chain_needs_no_recursion() -> None:
    n = 10_000
    g = graph(*((f"t{i}", (f"t{i - 1}",) if i else ()) for i in range(n)))
    assert g.topological_order()[-1] == f"t{n - 1}"
    assert len(g.ancestors(f"t{n - 1}")) == n - 1
    assert len(g.descendants("t0")) == n - 1
    assert g.find_cycles() == []
    assert g.roots == ("t0",) and g.sinks == (f"t{n - 1}",)


def test_a_ten_thousand_cycle_is_found_iteratively() -> None:
    n = 10_000
    g = graph(*((f"t{i}", (f"t{(i + 1) % n}",)) for i in range(n)))
    (cycle,) = g.find_cycles()
    assert len(cycle) == n and cycle[0] == "t0"


def test_duplicate_ids_keep_the_first_tasks_edges() -> None:
    g = graph(("a", ()), ("b", ("a",)), ("b", ()))
    assert g.task_ids == ("a", "b")
    assert g.dependencies("b") == ("a",)
