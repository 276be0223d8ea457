"""``GetRun`` with results stored out of line (``core/blobs.py``): their text is read back and
returned in ``TaskRun.result_json`` like any other result, as long as the response stays
within gRPC's message limit (``GRPC_MAX_MESSAGE_BYTES``, 64 MiB, which the servers and the
Python client both use). A stored result that would not fit, or cannot be read, is left out:
``result_json`` stays empty and ``result_size`` gives its size — never a truncated text that
would read as a different value. ``WatchRun`` and ``ListRuns`` never carry them (sizes only).
"""

from __future__ import annotations

import logging

from stellwerk.core.blobs import BlobStore, LargeResult, StoredText
from stellwerk.core.errors import TaskError
from stellwerk.core.limits import GRPC_MAX_MESSAGE_BYTES
from stellwerk.core.records import TaskRecord
from stellwerk_api.workflow.v1 import workflow_pb2 as pb

__all__ = ["RESPONSE_ROOM", "StoredResults"]

logger = logging.getLogger(__name__)

RESPONSE_ROOM = 1024 * 1024
"""Bytes of a response kept free for what gRPC adds (framing, trailers, field tags)."""


class StoredResults:
    """Reads results stored out of line back into ``GetRun`` responses."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    async def inline(self, message: pb.Run, tasks: list[TaskRecord]) -> None:
        """Fill in ``message``'s stored results (in task order) while the response fits."""
        room = GRPC_MAX_MESSAGE_BYTES - RESPONSE_ROOM - message.ByteSize()
        by_id = {task.id: task for task in tasks if task.has_result and task.stored_result}
        for task_run in message.tasks:
            task = by_id.get(task_run.task_id)
            if task is None or task.stored_result is None:
                continue
            ref = StoredText.from_record(task.stored_result)
            if ref.size > room:
                continue  # left out: result_size tells the client what it is missing
            large = LargeResult.of(task.run_id, task.id, task.attempt, ref)
            try:
                task_run.result_json = await self._blobs.get(large.key, large.ref)
            except TaskError as exc:  # removed meanwhile, or damaged: logged, left out
                logger.warning("stored result of %s/%s not returned: %s", task.run_id, task.id, exc)
                continue
            room -= ref.size
