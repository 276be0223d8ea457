"""Record size limits: the submit-time measure is an exact-or-above bound of the documents a
submit writes, and outcomes that could not be stored read as failures (core/limits.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stellwerk.core import names
from stellwerk.core.limits import BOOKKEEPING, MAX_ERROR_CHARS, Limits, clip_error
from stellwerk.core.model import load_workflow
from stellwerk.core.progress import decode_outcome, unreadable_outcome
from stellwerk.resolver._documents import build_run_documents, new_run_id
from stellwerk.resolver._sizes import size_problems, task_problems
from stellwerk_api.events.v1 import events_pb2

MIB = 1024 * 1024


class _Measure(Limits):
    """Limits under which every task is "too large", so each problem reports its measure."""

    @property
    def task_definition(self) -> int:
        return -1


def _spec(tasks: list[dict[str, Any]], **extra: Any) -> Any:
    return load_workflow(json.dumps({"name": "w", "tasks": tasks, **extra}), format="json")


SHAPES = [
    [{"id": "a", "method": "m/x", "params": {"v": [1, 2.5, None, "ö", 2**70]}, "timeout": 2.5,
      "retry": {"max_attempts": 3}, "metadata": {"k": "v"}}],
    [{"id": "root", "name": "Wurzel ö", "method": "m/x"}]
    + [{"id": f"t{i}", "method": "m/y", "params": {"m": "${root} ${Wurzel ö} ${root.x}"},
        "dependencies": ["root"]} for i in range(12)]
    + [{"id": "join", "method": "m/z", "params": {"a": "${t1}", "b": ["${t2}"] * 50},
        "dependencies": [f"t{i}" for i in range(12)]}],
    [{"id": "a", "method": "m/x"},
     {"id": "b", "method": "m/x", "dependencies": ["a"], "on_failure": "alternative",
      "alternative_task": "alt"},
     {"id": "alt", "method": "m/x", "dependencies": ["a"], "on_failure": "skip"}]
    + [{"id": f"d{i}", "method": "m/y", "params": {"v": "${b}"}, "dependencies": ["b"]}
       for i in range(20)],
]  # fmt: skip


@pytest.mark.parametrize("tasks", SHAPES)
def test_measured_task_documents_bound_the_written_ones_closely(tasks: Any) -> None:
    spec = _spec(tasks)
    docs = build_run_documents(spec, run_id=new_run_id(), request_id="r" * 256)
    written = {t.id: len(t.to_bytes()) for t in docs.tasks}
    measured = {
        p.task: int(p.message.split(" would be ")[1].split(" bytes")[0].replace(",", ""))
        for p in task_problems(spec, _Measure(8 * MIB))
    }
    assert measured.keys() == written.keys()
    for task_id, size in written.items():
        # Above or equal (a later attempt's state and times are in the bookkeeping room), and
        # close: the difference is a PENDING task's missing dispatch time.
        assert size <= measured[task_id] <= size + 32, task_id


def test_header_leaves_bookkeeping_room_for_request_id_and_error() -> None:
    spec = _spec([{"id": "a", "method": "m/x"}], description="d" * 100)
    docs = build_run_documents(spec, run_id=new_run_id(), request_id="é" * 256)
    grown = docs.header.evolve(error=clip_error("\x00" * 10_000), ended_at=1.7e9 + 0.1234567)
    plain = build_run_documents(spec, run_id=new_run_id()).header
    assert len(grown.to_bytes()) - len(plain.to_bytes()) <= BOOKKEEPING


def test_oversized_parts_are_problems_naming_field_and_limit() -> None:
    limits = Limits(MIB)
    spec = _spec(
        [{"id": "big", "method": "m/x", "params": {"p": "x" * 600_000},
          "metadata": {"m": "y" * 600_000}}],
        description="d" * (2 * MIB),
    )  # fmt: skip
    problems = {(p.task, p.field): p.message for p in size_problems(spec, limits)}
    assert set(problems) == {(None, "description"), ("big", "params")}
    assert f"{limits.run_header:,} bytes per run header" in problems[(None, "description")]
    assert f"{limits.task_definition:,} bytes per task definition" in problems[("big", "params")]
    assert "max_payload 1,048,576" in problems[("big", "params")]


def test_many_tasks_make_the_order_list_too_large() -> None:
    spec = _spec([{"id": f"{'t' * 190}{i:06d}", "method": "m/x"} for i in range(6000)])
    fields = {p.field for p in size_problems(spec, Limits(MIB)) if p.task is None}
    assert "tasks" in fields


def test_limits_at_the_nats_default_and_at_8_mib() -> None:
    assert Limits(MIB).result == (MIB - 1024) // 2
    assert Limits(8 * MIB).result == 512 * 1024
    assert Limits(MIB).task_definition + Limits(MIB).result + BOOKKEEPING == MIB - 1024


def _event(result_json: str = "", error: str = "") -> bytes:
    return events_pb2.TaskEvent(
        format_version=2,
        run_id="r",
        task_id="t",
        attempt=1,
        outcome=events_pb2.TASK_OUTCOME_FAILED if error else events_pb2.TASK_OUTCOME_SUCCEEDED,
        result_json=result_json,
        error=error,
        executor_id="e" * 1000,
    ).SerializeToString()


def test_a_result_beyond_the_cap_reads_as_a_failure_naming_it() -> None:
    outcome = decode_outcome(_event(json.dumps("é" * 600, ensure_ascii=False)), max_result=1000)
    assert not outcome.succeeded and outcome.result is None
    assert outcome.error == (
        "the result is 1,202 bytes; this deployment stores at most 1,000 bytes per task result"
    )
    small = _event(json.dumps("é" * 400, ensure_ascii=False))
    assert decode_outcome(small, max_result=1000).succeeded


def test_errors_and_executor_ids_are_clipped() -> None:
    outcome = decode_outcome(_event(error="boom " * 10_000))
    assert outcome.error is not None and len(outcome.error) <= MAX_ERROR_CHARS
    assert outcome.executor_id is not None and len(outcome.executor_id) == 200


def test_an_unreadable_event_fails_the_attempt_its_subject_names() -> None:
    outcome = unreadable_outcome(names.event_subject("run1", "a.b ö", 3), "garbage")
    assert outcome is not None and not outcome.succeeded
    assert (outcome.run_id, outcome.task_id, outcome.attempt) == ("run1", "a.b ö", 3)
    assert "could not be read: garbage" in (outcome.error or "")
    assert unreadable_outcome("stellwerk.events.x", "garbage") is None
