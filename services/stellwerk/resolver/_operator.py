"""Operator actions on runs: ``CancelRun`` (the steps are ``core/progress/_cancel.Canceller``:
the monitor's reconciler finishes a cancel cut short with the same steps)."""

from __future__ import annotations

from stellwerk.core.progress import Canceller
from stellwerk.core.records import RunRecord
from stellwerk.resolver._queries import RunReader

__all__ = ["Operator"]


class Operator:
    """Cancel runs."""

    def __init__(self, *, reader: RunReader, canceller: Canceller) -> None:
        self._reader = reader
        self._canceller = canceller

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel ``run_id`` (idempotent); ``NotFoundError``, or ``WrongStateError`` if it
        ended COMPLETED or FAILED. Answers once every step is done."""
        await self._reader.header(run_id)  # NOT_FOUND before any key is built from the id
        return await self._canceller.cancel(run_id)
