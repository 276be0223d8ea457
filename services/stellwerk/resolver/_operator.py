"""Operator actions on runs: ``CancelRun`` (the steps are ``core/progress/_cancel.Canceller``),
``RetryRun`` and ``RestoreCheckpoint`` (``core/progress/_restart.Restarter``), and checkpoints
(``resolver/_checkpoints.py``). The monitor's reconciler finishes a cancel or a restart cut
short with the same steps."""

from __future__ import annotations

from collections.abc import Sequence

from stellwerk.core.checkpoints import CheckpointInfo, CheckpointStore
from stellwerk.core.progress import Canceller, Restarter
from stellwerk.core.records import RunRecord
from stellwerk.resolver._checkpoints import Checkpointer
from stellwerk.resolver._queries import RunReader

__all__ = ["Operator"]


class Operator:
    """Cancel, re-run and checkpoint runs; every id is checked before it names a key."""

    def __init__(
        self,
        *,
        reader: RunReader,
        canceller: Canceller,
        restarter: Restarter,
        checkpoints: CheckpointStore,
    ) -> None:
        self._reader = reader
        self._canceller = canceller
        self._restarter = restarter
        self._checkpoints = checkpoints
        self._checkpointer = Checkpointer(reader=reader, store=checkpoints)

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel ``run_id`` (idempotent); ``NotFoundError``, or ``WrongStateError`` if it
        ended COMPLETED or FAILED. Answers once every step is done."""
        await self._reader.header(run_id)  # NOT_FOUND before any key is built from the id
        return await self._canceller.cancel(run_id)

    async def retry(
        self, run_id: str, from_task_ids: Sequence[str], *, request_id: str
    ) -> RunRecord:
        """Re-run what did not complete in ended run ``run_id``, and ``from_task_ids`` with
        everything downstream of them; idempotent per ``request_id``."""
        await self._reader.header(run_id)
        return await self._restarter.retry(run_id, from_task_ids, request_id=request_id)

    async def checkpoint(self, run_id: str, *, label: str, request_id: str) -> CheckpointInfo:
        """Save a checkpoint of ``run_id``; idempotent per ``request_id``."""
        return await self._checkpointer.create(run_id, label=label, request_id=request_id)

    async def checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """The checkpoints of ``run_id``, oldest first."""
        await self._reader.header(run_id)
        return await self._checkpoints.list(run_id)

    async def restore(self, checkpoint_id: str, *, request_id: str) -> RunRecord:
        """Rewind the run of ``checkpoint_id`` to it and resume it (a running run is first
        cancelled); idempotent per ``request_id``."""
        info = await self._checkpoints.require(checkpoint_id)
        await self._reader.header(info.run_id)
        return await self._restarter.restore(info, request_id=request_id)
