"""Running steps side by side, and awaiting writes already sent: the concurrency shapes of
propagation and applying outcomes.

They are generic (no record, no store), so they live apart from ``_propagate.py``, which uses
them and still exports ``awaited_in_turn`` and ``run_all`` for ``_apply.py`` and others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

__all__ = ["awaited_in_turn", "run_all", "side_by_side"]

T = TypeVar("T")


async def side_by_side(*steps: Awaitable[T]) -> list[T | Exception]:
    """Run ``steps`` concurrently and wait for every one; each result or exception in order.

    The last step runs in the calling task and only the others get a task of their own: a task
    per step showed in the resolver's profile, and most calls here have one or two steps.
    """
    if not steps:
        return []
    *others, last = steps
    started = [asyncio.ensure_future(step) for step in others]
    outcome: T | Exception
    try:
        outcome = await last
    except Exception as exc:
        outcome = exc
    except BaseException:  # cancelled: the other steps go with us
        for task in started:
            task.cancel()
        raise
    results: list[T | Exception] = []
    for task in started:
        try:
            results.append(await task)
        except Exception as exc:
            results.append(exc)
    results.append(outcome)
    return results


async def awaited_in_turn(*sent: Coroutine[Any, Any, T]) -> list[T | Exception]:
    """Await ``sent`` one after another; each result or exception in order. For the results of
    writes already sent (``send_update``, ``Dispatcher.send``): they are in flight together, so
    awaiting them in turn costs no time, and no task each. Cancelled, the rest are closed."""
    results: list[T | Exception] = []
    for index, step in enumerate(sent):
        try:
            results.append(await step)
        except Exception as exc:
            results.append(exc)
        except BaseException:
            for rest in sent[index + 1 :]:
                rest.close()
            raise
    return results


async def run_all(*steps: Awaitable[Any]) -> None:
    """Run ``steps`` side by side and wait for every one; then raise the first failure, if any
    (``gather`` would return at the first failure and leave the rest running unobserved)."""
    for result in await side_by_side(*steps):
        if isinstance(result, Exception):
            raise result
