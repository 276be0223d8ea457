"""Bounding how many attempts run at once, without starving any fetch loop."""

from __future__ import annotations

import asyncio

__all__ = ["Slots"]


class Slots:
    """``total`` execution slots shared by every fetch loop of one executor.

    Fetch loops never *hold* a slot while they wait for work (an idle method must not block a
    busy one); they only wait until some slot is free, then fetch at most that many messages.
    Each attempt takes its slot in FIFO order before its handler starts.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self._semaphore = asyncio.Semaphore(total)
        self._in_use = 0
        self._released = asyncio.Event()

    @property
    def in_use(self) -> int:
        """Slots currently taken."""
        return self._in_use

    @property
    def free(self) -> int:
        """Slots free right now."""
        return self.total - self._in_use

    async def wait_free(self) -> int:
        """Return once at least one slot is free; returns how many are."""
        while self.free <= 0:
            self._released.clear()
            await self._released.wait()
        return self.free

    async def acquire(self) -> None:
        """Take one slot (FIFO among waiters)."""
        await self._semaphore.acquire()
        self._in_use += 1

    def release(self) -> None:
        """Return one slot."""
        self._in_use -= 1
        self._semaphore.release()
        self._released.set()
