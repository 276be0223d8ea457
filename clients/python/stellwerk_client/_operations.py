"""Operator calls that restart runs and keep checkpoints of them: ``retry``, ``checkpoint``,
``checkpoints``, ``restore`` (a part of :class:`~stellwerk_client.Client`), and their typed
result :class:`Checkpoint`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as api_grpc

from ._channel import BaseClient
from ._states import _enum, _time
from ._types import Run, RunState

__all__ = ["Checkpoint", "OperatorCalls"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A saved copy of a run's state and results (:meth:`Client.checkpoint`)."""

    checkpoint_id: str
    run_id: str
    created_at: datetime | None
    run_state: RunState
    """The run's state when the checkpoint was taken."""
    completed_tasks: int
    """How many of the run's tasks had completed (their results are in the checkpoint)."""
    label: str = ""

    @classmethod
    def from_proto(cls, message: pb.Checkpoint) -> Checkpoint:
        """Convert the contract message."""
        return cls(
            checkpoint_id=message.checkpoint_id,
            run_id=message.run_id,
            created_at=_time(message, "create_time"),
            run_state=_enum(RunState, pb.RunState, message.run_state, "RUN_STATE_"),
            completed_tasks=message.completed_tasks,
            label=message.label,
        )


class OperatorCalls(BaseClient):
    """Re-running runs and their checkpoints (see README "Re-running a run")."""

    _stub: api_grpc.WorkflowServiceAsyncStub

    async def retry(
        self,
        run_id: str,
        *,
        from_tasks: Iterable[str] = (),
        request_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> Run:
        """Run again what did not complete in an ended run (its failed, blocked, skipped and
        cancelled tasks and everything downstream), keeping the other results; ``from_tasks``
        also runs those tasks and everything downstream of them. Returns the run (RUNNING
        again, without tasks). Idempotent per ``request_id`` (a fresh one unless given, so
        this call's own retries re-run once).

        Raises ``NotFoundError`` for an unknown run or task, ``WrongStateError`` for a running
        run or a completed one with nothing to run again."""
        request = api.RetryRunRequest(
            run_id=run_id,
            from_task_ids=list(from_tasks),
            request_id=request_id or uuid.uuid4().hex,
        )
        response = await self._unary(lambda t: self._stub.RetryRun(request, timeout=t), timeout)
        return Run.from_proto(response.run)

    async def checkpoint(
        self,
        run_id: str,
        *,
        label: str = "",
        request_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> Checkpoint:
        """Save a checkpoint of the run's state and results (idempotent per ``request_id``)."""
        request = api.CreateCheckpointRequest(
            run_id=run_id, label=label, request_id=request_id or uuid.uuid4().hex
        )
        response = await self._unary(
            lambda t: self._stub.CreateCheckpoint(request, timeout=t), timeout
        )
        return Checkpoint.from_proto(response.checkpoint)

    async def checkpoints(
        self,
        run_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> list[Checkpoint]:
        """The run's checkpoints, oldest first."""
        request = api.ListCheckpointsRequest(run_id=run_id)
        response = await self._unary(
            lambda t: self._stub.ListCheckpoints(request, timeout=t), timeout
        )
        return [Checkpoint.from_proto(c) for c in response.checkpoints]

    async def restore(
        self,
        checkpoint_id: str,
        *,
        request_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the call's gRPC deadline
    ) -> Run:
        """Rewind the checkpoint's run to it and resume it: tasks that completed after the
        checkpoint run again as new attempts; a running run is first cancelled. Returns the
        run (without tasks). Idempotent per ``request_id``; ``NotFoundError`` for an unknown
        checkpoint."""
        request = api.RestoreCheckpointRequest(
            checkpoint_id=checkpoint_id, request_id=request_id or uuid.uuid4().hex
        )
        response = await self._unary(
            lambda t: self._stub.RestoreCheckpoint(request, timeout=t), timeout
        )
        return Run.from_proto(response.run)
