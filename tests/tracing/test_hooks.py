"""The tracing hooks with the SDK's in-memory exporter: what each span carries, how the context
travels in NATS headers and stored records, and that tracing off adds nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from nats.aio.msg import Msg
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stellwerk.core import names, tracing
from stellwerk.core.records import RunRecord, TaskRecord, TaskState, new_bitmap
from stellwerk_api.events.v1 import events_pb2

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
RUN = "0190a1b2c3d4e5f6a7b8c9"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()


def task(trace: str | None = None, task_id: str = "b") -> TaskRecord:
    return TaskRecord(
        run_id=RUN, id=task_id, name=task_id, method="test/noop", params={}, dependencies=[],
        dependents=[], refs={}, sink_index=0, settled_deps=new_bitmap(0),
        state=TaskState.DISPATCHED, attempt=1, trace=trace,
    )  # fmt: skip


def event_msg(task_id: str, headers: dict[str, str] | None, stored_ago: float = 0.05) -> Msg:
    stored_ns = time.time_ns() - int(stored_ago * 1e9)
    reply = f"$JS.ACK.{names.EVENTS_STREAM}.resolver.1.7.7.{stored_ns}.0"
    subject = names.event_subject(RUN, task_id, 1)
    return Msg(None, subject=subject, reply=reply, data=b"", headers=headers)  # type: ignore[arg-type]


def only(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_nothing_configured_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    tracing.uninstall()
    assert tracing.configure("stellwerk-test") is False
    assert not tracing.enabled()
    assert tracing.server_interceptors() == []
    tracing.uninstall()


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_exporters_follow_the_otel_variables(environ: dict[str, str], wanted: list[str]) -> None:
    assert tracing.exporters_wanted(environ) == wanted


def test_hooks_are_inert_with_tracing_off() -> None:
    tracing.uninstall()
    headers = {"Nats-Msg-Id": "x"}
    with tracing.dispatching(task(TRACEPARENT), headers):
        pass
    assert headers == {"Nats-Msg-Id": "x"}
    assert tracing.reporting(events_pb2.TaskEvent(), headers) == {"Nats-Msg-Id": "x"}

    async def attempt() -> int:
        return 1

    coro = attempt()
    assert tracing.task_span(event_msg("a", None), coro) is coro
    assert asyncio.run(coro) == 1
    assert tracing.traceparent() is None


def test_records_keep_the_trace_only_when_there_is_one() -> None:
    plain = task()
    assert "trace" not in json.loads(plain.to_bytes())  # unchanged documents with tracing off
    traced = task(TRACEPARENT)
    assert TaskRecord.from_bytes(traced.to_bytes()).trace == TRACEPARENT
    header = RunRecord(id=RUN, workflow_id="w", name="n", description="", task_count=1,
                       sink_count=1, created_at=1.0, trace=TRACEPARENT)  # fmt: skip
    assert RunRecord.from_bytes(header.to_bytes()).trace == TRACEPARENT
    assert "trace" not in json.loads(
        RunRecord.from_bytes(header.to_bytes()).evolve(trace=None).to_bytes()
    )


def test_a_dispatch_without_a_span_at_hand_joins_the_runs_stored_trace(
    spans: InMemorySpanExporter,
) -> None:
    headers = {"Nats-Msg-Id": "d:1"}
    with tracing.dispatching(task(TRACEPARENT), headers):
        pass
    (span,) = only(spans, "stellwerk.dispatch")
    assert f"{span.context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert span.parent is not None and f"{span.parent.span_id:016x}" == TRACEPARENT.split("-")[2]
    assert headers["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
    assert headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert span.attributes is not None
    assert span.attributes["stellwerk.run_id"] == RUN
    assert span.attributes["stellwerk.task_id"] == "b"


async def test_a_task_span_continues_the_dispatch_and_sends_its_context_back(
    spans: InMemorySpanExporter,
) -> None:
    dispatch = events_pb2.TaskDispatch(run_id=RUN, task_id="b", attempt=2, method="test/noop")
    sent: dict[str, str] = {}

    async def attempt() -> str:
        tracing.task_started(dispatch, "exec-1")
        event = events_pb2.TaskEvent(outcome=events_pb2.TASK_OUTCOME_FAILED, error="boom")
        sent.update(tracing.reporting(event, {"Nats-Msg-Id": "e:1"}))
        return "done"

    assert (
        await tracing.task_span(event_msg("b", {"traceparent": TRACEPARENT}), attempt()) == "done"
    )
    (span,) = only(spans, "stellwerk.task")
    assert f"{span.context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert span.attributes is not None
    assert span.attributes["stellwerk.method"] == "test/noop"
    assert span.attributes["stellwerk.attempt"] == 2
    assert span.attributes["stellwerk.outcome"] == "failed"
    assert span.status.description == "boom"
    assert sent["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert sent["Nats-Msg-Id"] == "e:1"


async def test_a_resolution_pass_is_one_span_with_its_figures(
    spans: InMemorySpanExporter,
) -> None:
    other = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    batch: list[tuple[Msg, float]] = [
        (event_msg("a", {"traceparent": TRACEPARENT}, stored_ago=0.2), time.perf_counter()),
        (event_msg("c", {"traceparent": other}), time.perf_counter()),
    ]

    async def publish(task_id: str) -> None:
        with tracing.dispatching(task(task_id=task_id), {}):
            await asyncio.sleep(0)

    with tracing.resolving(batch):
        # Dispatches run in tasks of their own (gathered) and still count in the pass.
        await asyncio.gather(publish("d"), publish("e"))
    (resolve,) = only(spans, "stellwerk.resolve")
    attributes: dict[str, Any] = dict(resolve.attributes or {})
    assert attributes["stellwerk.run_id"] == attributes["stellwerk.workflow_id"] == RUN
    assert attributes["stellwerk.task_id"] == "a"
    assert attributes["stellwerk.ready_count"] == 2
    assert 150 <= attributes["stellwerk.event_lag_ms"] < 5000
    assert attributes["stellwerk.batch_size"] == 2
    assert f"{resolve.context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert [f"{link.context.span_id:016x}" for link in resolve.links] == [other.split("-")[2]]
    dispatches = only(spans, "stellwerk.dispatch")
    assert len(dispatches) == 2
    assert all(
        d.parent is not None and d.parent.span_id == resolve.context.span_id for d in dispatches
    )


def test_the_submit_stores_the_current_context(spans: InMemorySpanExporter) -> None:
    from opentelemetry import trace

    with trace.get_tracer("t", tracer_provider=tracing._provider).start_as_current_span(
        "submit"
    ) as span:
        tracing.note_run(RUN)
        stored = tracing.traceparent()
    assert stored is not None
    assert stored.split("-")[2] == f"{span.get_span_context().span_id:016x}"
    (done,) = only(spans, "submit")
    assert (done.attributes or {})["stellwerk.run_id"] == RUN
