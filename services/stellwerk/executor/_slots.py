"""A counter of free execution slots that fetch loops take from in batches."""

from __future__ import annotations

import asyncio

__all__ = ["Slots"]


class Slots:
    """``concurrency`` slots shared by every fetch loop of one executor.

    Unlike a semaphore, :meth:`take` grabs several slots at once (to fetch a batch) but never
    more than asked, so one idle loop cannot hold every slot while it waits for work; and
    :meth:`give` is synchronous, so a task's done-callback can return its slot.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._available = asyncio.Event()
        self._available.set()

    @property
    def in_use(self) -> int:
        """Slots currently taken."""
        return self.total - self._free

    async def take(self, most: int) -> int:
        """Wait for at least one free slot; take up to ``most`` of them."""
        while self._free <= 0:
            self._available.clear()
            await self._available.wait()
        taken = max(1, min(most, self._free))
        self._free -= taken
        return taken

    def give(self, count: int = 1) -> None:
        """Return ``count`` slots."""
        if count > 0:
            self._free = min(self.total, self._free + count)
            self._available.set()
