"""The dependency graph of a workflow, built once per spec.

Every algorithm here is iterative and linear in tasks + edges (apart from the output size of
:meth:`WorkflowGraph.find_cycles`), so a 10,000-task chain neither hits Python's recursion limit
nor takes quadratic time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from stellwerk_client.errors import NotFoundError, Problem, WorkflowInvalidError

from ._spec import WorkflowSpec

__all__ = ["MAX_CYCLES_REPORTED", "WorkflowGraph", "cycle_problem"]

MAX_CYCLES_REPORTED = 100
""":meth:`WorkflowGraph.find_cycles` stops after this many cycles."""


def cycle_problem(cycle: list[str]) -> Problem:
    """The validation problem for one cycle: ``a -> b -> c -> a`` (``->`` reads "depends on")."""
    path = " -> ".join([*cycle, cycle[0]])
    return Problem(cycle[0], "dependencies", f"circular dependency: {path}")


class WorkflowGraph:
    """Tasks as nodes, "depends on" as edges; lookups in both directions.

    Edges to unknown tasks and self-edges are left out (``validate_workflow`` reports them), and
    of duplicate ids the first task wins, so a graph can be built from any spec.
    """

    __slots__ = ("_dependencies", "_dependents", "_ids", "_index")

    def __init__(self, ids: list[str], dependencies: list[tuple[int, ...]]) -> None:
        """Use :meth:`build`; ``dependencies[i]`` are the indexes task ``i`` depends on."""
        self._ids = ids
        self._index = {task_id: i for i, task_id in enumerate(ids)}
        self._dependencies = dependencies
        dependents: list[list[int]] = [[] for _ in ids]
        for node, deps in enumerate(dependencies):
            for dep in deps:
                dependents[dep].append(node)
        self._dependents = [tuple(d) for d in dependents]

    @classmethod
    def build(cls, spec: WorkflowSpec) -> WorkflowGraph:
        """The graph of ``spec``'s tasks, in task order."""
        index: dict[str, int] = {}
        ids: list[str] = []
        for task in spec.tasks:
            if task.id not in index:
                index[task.id] = len(ids)
                ids.append(task.id)
        dependencies: list[tuple[int, ...]] = [() for _ in ids]
        built: set[int] = set()
        for task in spec.tasks:
            node = index[task.id]
            if node in built:
                continue  # a later duplicate id: the first task's edges stand
            built.add(node)
            deps = (index.get(d) for d in task.dependencies)
            dependencies[node] = tuple(
                dict.fromkeys(d for d in deps if d is not None and d != node)
            )
        return cls(ids, dependencies)

    def _node(self, task_id: str) -> int:
        try:
            return self._index[task_id]
        except KeyError:
            raise NotFoundError(f"workflow has no task {task_id!r}") from None

    def _names(self, nodes: Iterable[int]) -> tuple[str, ...]:
        return tuple(self._ids[n] for n in nodes)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._index

    @property
    def task_ids(self) -> tuple[str, ...]:
        """Every task id, in task order."""
        return tuple(self._ids)

    def dependencies(self, task_id: str) -> tuple[str, ...]:
        """The tasks ``task_id`` depends on directly, in the order written."""
        return self._names(self._dependencies[self._node(task_id)])

    def dependents(self, task_id: str) -> tuple[str, ...]:
        """The tasks that depend on ``task_id`` directly, in task order; O(out-degree)."""
        return self._names(self._dependents[self._node(task_id)])

    @property
    def roots(self) -> tuple[str, ...]:
        """Tasks without dependencies: they can start at once."""
        return tuple(t for t, deps in zip(self._ids, self._dependencies, strict=True) if not deps)

    @property
    def sinks(self) -> tuple[str, ...]:
        """Tasks nobody depends on: the workflow's final results."""
        return tuple(t for t, deps in zip(self._ids, self._dependents, strict=True) if not deps)

    def _reach(self, start: int, edges: list[tuple[int, ...]]) -> frozenset[str]:
        seen: set[int] = set()
        queue = deque(edges[start])
        while queue:
            node = queue.popleft()
            if node not in seen:
                seen.add(node)
                queue.extend(edges[node])
        return frozenset(self._ids[n] for n in seen)

    def ancestors(self, task_id: str) -> frozenset[str]:
        """Every task ``task_id`` depends on, directly or transitively."""
        return self._reach(self._node(task_id), self._dependencies)

    def descendants(self, task_id: str) -> frozenset[str]:
        """Every task that depends on ``task_id``, directly or transitively."""
        return self._reach(self._node(task_id), self._dependents)

    def topological_order(self) -> list[str]:
        """Task ids with every task after its dependencies (ties kept in task order).

        Raises :class:`WorkflowInvalidError` naming the cycles if there is no such order.
        """
        pending = [len(deps) for deps in self._dependencies]
        queue = deque(n for n, count in enumerate(pending) if count == 0)
        order: list[str] = []
        while queue:
            node = queue.popleft()
            order.append(self._ids[node])
            for dependent in self._dependents[node]:
                pending[dependent] -= 1
                if pending[dependent] == 0:
                    queue.append(dependent)
        if len(order) < len(self._ids):
            raise WorkflowInvalidError(problems=[cycle_problem(c) for c in self.find_cycles()])
        return order

    def find_cycles(self) -> list[list[str]]:
        """The dependency cycles, each once, as ``[a, b, c]`` for ``a -> b -> c -> a``.

        One cycle per back edge of an iterative depth-first search in task order, each rotated
        to start at its earliest task; at most :data:`MAX_CYCLES_REPORTED`.
        """
        white, grey, black = 0, 1, 2
        colour = [white] * len(self._ids)
        position: dict[int, int] = {}  # node -> index in `path` while it is grey
        cycles: list[list[str]] = []
        seen: set[tuple[int, ...]] = set()
        for root in range(len(self._ids)):
            if colour[root] != white:
                continue
            path = [root]
            position[root] = 0
            colour[root] = grey
            edges = [iter(self._dependencies[root])]
            while edges:
                node = next(edges[-1], None)
                if node is None:
                    done = path.pop()
                    del position[done]
                    colour[done] = black
                    edges.pop()
                elif colour[node] == white:
                    position[node] = len(path)
                    path.append(node)
                    colour[node] = grey
                    edges.append(iter(self._dependencies[node]))
                elif colour[node] == grey:
                    cycle = path[position[node] :]
                    first = cycle.index(min(cycle))
                    key = tuple(cycle[first:] + cycle[:first])
                    if key not in seen:
                        seen.add(key)
                        cycles.append([self._ids[n] for n in key])
                        if len(cycles) >= MAX_CYCLES_REPORTED:
                            return cycles
        return cycles
