"""Counting workflows and tasks by state, straight from KV; the breakers that are not CLOSED
and the resolvers' resolution retries too."""

from __future__ import annotations

import time
from collections import Counter

from nats.js.kv import KeyValue

from stellwerk.core.breaker_book import (
    all_breakers,
    breaker_to_proto,
    resolution_retries,
    visible_breakers,
)
from stellwerk.core.convert import timestamp
from stellwerk.core.kvscan import snapshot
from stellwerk.core.records import ExecutorRecord, RunRecord, TaskRecord
from stellwerk_api.monitoring.v1 import monitor_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_pb2 as pb

__all__ = ["build_overview"]


async def build_overview(
    *, runs: KeyValue, tasks: KeyValue, executors: KeyValue
) -> api.GetOverviewResponse:
    """One pass over the buckets (a snapshot watch each, not a request per key)."""
    now = time.time()
    run_states: Counter[str] = Counter()
    for data in (await snapshot(runs, "run.*")).values():
        run_states[RunRecord.from_bytes(data).state.value] += 1
    task_states: Counter[str] = Counter()
    for data in (await snapshot(tasks, ">")).values():
        task_states[TaskRecord.from_bytes(data).state.value] += 1
    response = api.GetOverviewResponse()
    for state, count in sorted(run_states.items()):
        response.run_counts.add(state=pb.RunState.Value(f"RUN_STATE_{state}"), count=count)
    for state, count in sorted(task_states.items()):
        response.task_counts.add(state=pb.TaskState.Value(f"TASK_STATE_{state}"), count=count)
    records = [ExecutorRecord.from_bytes(d) for d in (await snapshot(executors, ">")).values()]
    for record in sorted(records, key=lambda r: r.id):
        item = response.executors.add(
            id=record.id, methods=sorted(record.methods), alive=record.alive(now)
        )
        seen = timestamp(record.last_seen)
        assert seen is not None
        item.last_seen_time.CopyFrom(seen)
    for breaker in visible_breakers(await all_breakers(runs), now):
        response.breakers.append(breaker_to_proto(breaker, now))
    response.resolution_retries = await resolution_retries(runs)
    as_of = timestamp(now)
    assert as_of is not None
    response.as_of_time.CopyFrom(as_of)
    return response
