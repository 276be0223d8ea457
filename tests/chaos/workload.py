"""Workflows of the chaos suite: random DAGs whose every task has a known expected outcome.

Every task runs ``chaos/step`` with a fixed ``n`` and its dependencies' results as ``inputs``, so
its result is ``n + sum(results of its dependencies)`` — a number that a lost, stale or doubled
input would change. A task told to fail ends FAILED, its descendants BLOCKED, the workflow FAILED.
A workflow with ``cancel_after`` is cancelled that long after its submit: each of its tasks ends
COMPLETED (with its result) or CANCELLED, and nothing of it starts after the cancel.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace

from stellwerk_api.workflow.v1 import workflow_pb2 as pb

__all__ = ["METHOD", "Expected", "TaskPlan", "WorkflowPlan", "fan_in_workflow", "random_workflow"]

METHOD = "chaos/step"


@dataclass(frozen=True)
class TaskPlan:
    """One task: its id, dependencies, own number and whether it is told to fail."""

    id: str
    deps: tuple[str, ...]
    n: int
    fail: bool = False
    flaky: int = 0
    """Attempts that fail before one succeeds (the task retries with a fixed short delay)."""


@dataclass(frozen=True)
class Expected:
    """What a task must end as: its state and (when COMPLETED) its result."""

    state: pb.TaskState.ValueType
    result: int | None
    attempts: int | None = None
    """Attempts made, when known (retried tasks: each retry exactly once)."""
    or_cancelled: bool = False
    """CANCELLED is as good (its run is cancelled while it runs)."""


@dataclass(frozen=True)
class WorkflowPlan:
    """A workflow to submit, with what every task of it must end as."""

    name: str
    tasks: tuple[TaskPlan, ...]
    sleep: float
    at: float | None = None
    cancel_after: float | None = None
    """Seconds after its submit at which the run is cancelled (``None``: never)."""

    def document(self) -> str:
        """The workflow file (JSON, which is valid Gleitzeit YAML too)."""
        tasks = []
        for task in self.tasks:
            params: dict[str, object] = {
                "n": task.n,
                "inputs": [f"${{{dep}}}" for dep in task.deps],
                "sleep": self.sleep,
            }
            if task.fail:
                params["fail"] = True
            if self.at is not None:
                params["at"] = self.at
            entry: dict[str, object] = {"id": task.id, "method": METHOD, "parameters": params}
            if task.flaky:
                params["fail_attempts"] = task.flaky
                entry["retry"] = {
                    "max_attempts": task.flaky + 1,
                    "backoff": "fixed",
                    "base_delay": 0.2,
                    "jitter": False,
                }
            if task.deps:
                entry["dependencies"] = list(task.deps)
            tasks.append(entry)
        return json.dumps({"name": self.name, "tasks": tasks})

    @property
    def expected_state(self) -> pb.RunState.ValueType:
        """FAILED when some task is told to fail, else COMPLETED (CANCELLED when cancelled)."""
        if self.cancel_after is not None:
            return pb.RUN_STATE_CANCELLED
        failing = any(t.fail for t in self.tasks)
        return pb.RUN_STATE_FAILED if failing else pb.RUN_STATE_COMPLETED

    def expected(self) -> dict[str, Expected]:
        """Every task's expected final state and result."""
        out: dict[str, Expected] = {}
        for task in self.tasks:  # tasks are in topological order
            deps = [out[d] for d in task.deps]
            if any(d.state != pb.TASK_STATE_COMPLETED for d in deps):
                out[task.id] = Expected(pb.TASK_STATE_BLOCKED, None)
            elif task.fail:
                out[task.id] = Expected(pb.TASK_STATE_FAILED, None)
            else:
                total = task.n + sum(d.result or 0 for d in deps)
                out[task.id] = Expected(pb.TASK_STATE_COMPLETED, total, task.flaky + 1)
        if self.cancel_after is not None:
            out = {k: replace(e, or_cancelled=True) for k, e in out.items()}
        return out


def random_workflow(
    rng: random.Random, name: str, *, size: int = 10, sleep: float = 0.3, failing: bool = False
) -> WorkflowPlan:
    """A random DAG of ``size`` tasks with fan-out and fan-in.

    Task 0 and 1 are roots; task ``i`` depends on 1-3 earlier tasks, with the first root always
    fanning out to tasks 2-4 and the last task joining at least three others. With ``failing``,
    one task that has descendants is told to fail.
    """
    if size < 5:
        raise ValueError("a chaos workflow needs at least 5 tasks")
    ids = [f"t{i}" for i in range(size)]
    deps: list[tuple[str, ...]] = [(), ()]
    for i in range(2, size):
        earlier = ids[:i]
        if i <= 4:
            chosen = {ids[0]}
            if rng.random() < 0.5:
                chosen.add(rng.choice(earlier))
        elif i == size - 1:
            chosen = set(rng.sample(earlier[2:], k=min(3, len(earlier) - 2)))
        else:
            chosen = set(rng.sample(earlier, k=rng.randint(1, min(3, len(earlier)))))
        deps.append(tuple(sorted(chosen, key=ids.index)))
    fail_at = -1
    if failing:
        with_descendants = sorted({ids.index(d) for ds in deps for d in ds})
        fail_at = rng.choice(with_descendants)
    # Every third task fails its first one or two attempts and retries (drawn from its own
    # generator, so the shapes drawn from ``rng`` stay as they were).
    flaky = random.Random(name)
    tasks = tuple(
        TaskPlan(
            id=ids[i],
            deps=deps[i],
            n=rng.randint(1, 1000),
            fail=i == fail_at,
            flaky=flaky.randint(1, 2) if i % 3 == 2 and i != fail_at else 0,
        )
        for i in range(size)
    )
    return WorkflowPlan(name=name, tasks=tasks, sleep=sleep)


def fan_in_workflow(rng: random.Random, name: str, *, width: int, at: float) -> WorkflowPlan:
    """``width`` parallel tasks that all finish at epoch ``at`` and one join depending on all."""
    leaves = tuple(TaskPlan(id=f"leaf-{i}", deps=(), n=rng.randint(1, 1000)) for i in range(width))
    join = TaskPlan(id="join", deps=tuple(t.id for t in leaves), n=rng.randint(1, 1000))
    return WorkflowPlan(name=name, tasks=(*leaves, join), sleep=0.0, at=at)
