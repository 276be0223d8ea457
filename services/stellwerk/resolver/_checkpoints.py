"""Taking checkpoints of runs (``CreateCheckpoint``), and their contract messages. Where they
are kept and why: ``core/checkpoints.py``; restoring one: ``core/progress/_restart.py``."""

from __future__ import annotations

from stellwerk.core.checkpoints import CheckpointInfo, CheckpointStore, checkpoint_id_for
from stellwerk.core.convert import timestamp
from stellwerk.resolver._queries import RunReader
from stellwerk_api.workflow.v1 import workflow_pb2 as pb

__all__ = ["Checkpointer", "checkpoint_to_proto"]


class Checkpointer:
    """Saves a run's task documents as a checkpoint."""

    def __init__(self, *, reader: RunReader, store: CheckpointStore) -> None:
        self._reader = reader
        self._store = store

    async def create(self, run_id: str, *, label: str, request_id: str) -> CheckpointInfo:
        """A checkpoint of ``run_id`` as it is now; with ``request_id``, the same checkpoint
        for every repeat of the request.

        The documents are read one by one while the run may move on, so the copy is not one
        instant; that is harmless: a restore runs again every task not completed in the copy
        and everything downstream of it, so a dependent read as completed after its dependency
        was read as running runs again too (``core/progress/_rerun.py``)."""
        run = await self._reader.header(run_id)  # NOT_FOUND for a bad or unknown id
        checkpoint_id = checkpoint_id_for(run.id, request_id)
        existing = await self._store.info(checkpoint_id)
        if existing is not None:
            return existing
        tasks = await self._reader.tasks(run.id)
        return await self._store.create(run, tasks, checkpoint_id=checkpoint_id, label=label)


def checkpoint_to_proto(info: CheckpointInfo) -> pb.Checkpoint:
    """A checkpoint as clients see it."""
    message = pb.Checkpoint(
        checkpoint_id=info.id,
        run_id=info.run_id,
        run_state=pb.RunState.Value(f"RUN_STATE_{info.run_state}"),
        completed_tasks=info.completed_tasks,
        label=info.label,
    )
    if (created := timestamp(info.created_at)) is not None:
        message.create_time.CopyFrom(created)
    return message
