"""KV documents round-trip, refuse unknown format versions, and set bits idempotently."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stellwerk.core.errors import StellwerkError
from stellwerk.core.records import (
    ExecutorRecord,
    RunRecord,
    RunState,
    TaskRecord,
    TaskState,
    bitmap_count,
    bitmap_set,
    bitmap_test,
    new_bitmap,
)


def task() -> TaskRecord:
    return TaskRecord(
        run_id="r1", id="Größe", name="n", method="m/x", params={"big": 2**70},
        dependencies=["a", "b"], dependents=[("c", 1)], refs={"a": "a"}, sink_index=None,
        settled_deps=new_bitmap(2), state=TaskState.DISPATCHED,
    )  # fmt: skip


def test_documents_round_trip_exactly() -> None:
    original = task()
    assert TaskRecord.from_bytes(original.to_bytes()) == original
    run = RunRecord(id="r1", workflow_id="w", name="n", description="", task_count=3,
                    sink_count=1, created_at=1.5, state=RunState.FAILED, error="x")  # fmt: skip
    assert RunRecord.from_bytes(run.to_bytes()) == run
    executor = ExecutorRecord(id="e", methods=["m/x"], started_at=1.0, last_seen=2.0, concurrency=4)
    assert ExecutorRecord.from_bytes(executor.to_bytes()) == executor


def test_both_encoders_agree() -> None:
    # orjson writes records unless a value needs stdlib json (integers beyond 64 bits); both
    # must give the same bytes, so documents never depend on which encoder wrote them.
    small = task().evolve(params={"n": 2**63 - 1, "s": "ü", "l": [1.5, None, True]})
    for record in (small, task()):
        fields = dataclasses.asdict(record)
        for name in (
            "trace",
            "retry_at",
            "history",
            "heartbeat_timeout",
            "on_failure",
            "alternative",
            "stored_result",
            "restart",  # written once not 0
            "attempt_base",
            "compensation",
            "role",
        ):
            del fields[name]  # written only when set
        stdlib = json.dumps({**fields, "v": 1}, separators=(",", ":"), ensure_ascii=False).encode()
        assert record.to_bytes() == stdlib
        assert TaskRecord.from_bytes(record.to_bytes()) == record


def test_unknown_format_version_is_refused() -> None:
    doc = json.loads(task().to_bytes())
    doc["v"] = 99
    with pytest.raises(StellwerkError, match="format version"):
        TaskRecord.from_bytes(json.dumps(doc).encode())


def test_bits_are_idempotent() -> None:
    bits = new_bitmap(200)
    once = bitmap_set(bits, 137)
    assert bitmap_set(once, 137) == once
    assert bitmap_test(once, 137) and not bitmap_test(once, 136)
    assert bitmap_count(bitmap_set(once, 0)) == 2
