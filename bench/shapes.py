"""The DAG shapes every system runs, as plain ``(task id, dependency ids)`` lists.

Standard library only: the peers' scripts import this file inside their own virtualenvs, so
that Stellwerk, Gleitzeit and Celery run exactly the same graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CHAIN_TASKS",
    "DIAMOND_TASKS",
    "DIAMOND_WORKFLOWS",
    "FAN_TASKS",
    "HELD_TASKS",
    "HELD_WORKFLOWS",
    "LARGE_TASKS",
    "Node",
    "chain",
    "diamond",
    "held",
    "layered",
]

CHAIN_TASKS = 40
"""W1: a 40-task chain."""
DIAMOND_WORKFLOWS = 100
DIAMOND_TASKS = 20
"""W2: 100 workflows of 20 tasks, each one source, 18 parallel tasks and one sink."""
FAN_TASKS = 1000
"""W3: one workflow of 1,000 tasks: one source, 998 parallel tasks, one sink."""
LARGE_TASKS = 10_000
"""W4: a 10,000-task layered DAG (validated and submitted)."""
HELD_WORKFLOWS = 1000
HELD_TASKS = 100
"""W5: 1,000 workflows of 100 tasks each, held open by their first task."""


@dataclass(frozen=True, slots=True)
class Node:
    """One task of a shape: its id and the ids it depends on."""

    id: str
    deps: tuple[str, ...] = ()


def chain(n: int = CHAIN_TASKS, prefix: str = "t") -> list[Node]:
    """``t0 -> t1 -> ... -> t{n-1}``."""
    if n < 1:
        raise ValueError("a chain needs at least one task")
    nodes = [Node(f"{prefix}0")]
    nodes += [Node(f"{prefix}{i}", (f"{prefix}{i - 1}",)) for i in range(1, n)]
    return nodes


def diamond(n: int = DIAMOND_TASKS, prefix: str = "") -> list[Node]:
    """Fan-out and fan-in: ``src`` -> ``n - 2`` parallel tasks -> ``sink`` (``n`` tasks in all)."""
    if n < 3:
        raise ValueError("a diamond needs at least three tasks")
    src = f"{prefix}src"
    middle = [f"{prefix}m{i}" for i in range(n - 2)]
    return [Node(src), *(Node(m, (src,)) for m in middle), Node(f"{prefix}sink", tuple(middle))]


def held(n: int = HELD_TASKS, prefix: str = "") -> list[Node]:
    """W5's shape: a ``gate`` task (the one the harness holds), then a diamond below it."""
    if n < 3:
        raise ValueError("a held workflow needs at least three tasks")
    gate = f"{prefix}gate"
    middle = [f"{prefix}m{i}" for i in range(n - 2)]
    return [Node(gate), *(Node(m, (gate,)) for m in middle), Node(f"{prefix}sink", tuple(middle))]


def layered(n: int = LARGE_TASKS, width: int = 100, fan_in: int = 3) -> list[Node]:
    """``n`` tasks in layers of ``width``; each task below the first layer depends on
    ``fan_in`` tasks of the layer above, picked deterministically (a wide, deep DAG)."""
    if n < 1 or width < 1 or fan_in < 1:
        raise ValueError("n, width and fan_in must be positive")
    nodes: list[Node] = []
    for i in range(n):
        layer, pos = divmod(i, width)
        if layer == 0:
            nodes.append(Node(f"L0-{pos}"))
            continue
        above = min(width, n - (layer - 1) * width)
        picks = sorted({(pos * 7 + k * 31) % above for k in range(fan_in)})
        nodes.append(Node(f"L{layer}-{pos}", tuple(f"L{layer - 1}-{p}" for p in picks)))
    return nodes
