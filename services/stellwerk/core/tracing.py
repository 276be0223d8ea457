"""Distributed tracing with OpenTelemetry: one workflow run is one trace, across all services.

Set up from the standard ``OTEL_*`` variables by :func:`configure` (every service calls it as it
starts). Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``;
``none`` is off) or, without it, when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``
or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true`` turns it off. The OTLP
protocol is ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (``grpc`` or ``http/protobuf``, the
default); the service name ``OTEL_SERVICE_NAME``, else ``stellwerk-<service>``. Everything else
(headers, timeouts, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_RESOURCE_ATTRIBUTES``) is
read by the SDK itself.

With tracing off nothing of OpenTelemetry is imported and every hook below returns at its first
line: no span objects, no header encoding on the hot path.

How the context travels (W3C ``traceparent``), so one run is one trace:

- gRPC: client and server interceptors (``opentelemetry-instrumentation-grpc``). A submit's
  server span is the root of the run's trace (or a child of the client's span).
- The submit stores the submit's ``traceparent`` with the run: in the run header and in every
  task document (``RunRecord.trace``, ``TaskRecord.trace``), so that a dispatch made without a
  span at hand (the monitor's reconciler, in another process, maybe days later) still joins the
  run's trace.
- Each dispatch is a ``stellwerk.dispatch`` span (child of whatever is current: the submit, a
  resolution pass; else of the stored context); its context goes in the dispatch message's NATS
  headers.
- The executor runs each delivery in a ``stellwerk.task`` span, child of the dispatch's headers;
  the outcome message carries the task span's context back in its headers.
- The resolver applies a run's outcomes in a ``stellwerk.resolve`` span per pass, child of the
  (first) outcome's headers; the dispatches it makes are its children.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from stellwerk.core import names
from stellwerk.core.jetstream import delivery_of

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from stellwerk.core.records import TaskRecord
    from stellwerk_api.events.v1 import events_pb2

__all__ = [
    "configure",
    "dispatching",
    "enabled",
    "exporters_wanted",
    "flush",
    "install",
    "note_run",
    "reporting",
    "resolving",
    "server_interceptors",
    "task_span",
    "task_started",
    "traceparent",
    "uninstall",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_configured = False
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


class _Pass:
    """What one resolution pass counts: the dispatches it published."""

    __slots__ = ("dispatched",)

    def __init__(self) -> None:
        self.dispatched = 0


_PASS: contextvars.ContextVar[_Pass | None] = contextvars.ContextVar(
    "stellwerk_resolve_pass", default=None
)


def enabled() -> bool:
    """Whether this process records spans."""
    return _tracer is not None


def exporters_wanted(environ: Mapping[str, str]) -> list[str]:
    """The span exporters ``environ`` asks for (empty: tracing off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    listed = environ.get("OTEL_TRACES_EXPORTER")
    if listed is None:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    wanted = [name.strip().lower() for name in listed.split(",")]
    return [name for name in wanted if name and name != "none"]


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"unknown OTEL_TRACES_EXPORTER {name!r} (known: otlp, console, none)")
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol != "http/protobuf":
        raise ValueError(f"unsupported OTLP protocol {protocol!r} (known: grpc, http/protobuf)")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def configure(default_service: str) -> bool:
    """Set up this process's tracer provider from the ``OTEL_*`` variables (once per process;
    later calls keep the first setup). Returns whether tracing is on. A setting it cannot use is
    logged and leaves tracing off: observability never stops a service."""
    global _configured
    if _configured:
        return enabled()
    _configured = True
    environ = os.environ
    wanted = exporters_wanted(environ)
    if not wanted:
        return False
    try:
        exporters = [_exporter(name, environ) for name in wanted]
    except ValueError as exc:
        logger.error("tracing stays off: %s", exc)
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = environ.get("OTEL_SERVICE_NAME") or default_service
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    install(provider)
    logger.info("tracing on: service %s, exporters %s", service, ", ".join(wanted))
    return True


def install(provider: TracerProvider) -> None:
    """Record spans with ``provider`` (tests pass one with an in-memory exporter)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("stellwerk")


def uninstall() -> None:
    """Tracing off again (tests)."""
    global _tracer, _provider, _configured
    _tracer = _provider = None
    _configured = False


def flush(timeout: float = 5.0) -> None:
    """Export what is still buffered (a stopping service)."""
    if _provider is not None:
        _provider.force_flush(int(timeout * 1000))


# -- gRPC ---------------------------------------------------------------------------------


def server_interceptors() -> list[Any]:
    """Interceptors for a ``grpc.aio`` server: a span per RPC (none with tracing off)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_provider)]  # type: ignore[no-untyped-call]


# -- the run's stored context ------------------------------------------------------------------


def traceparent() -> str | None:
    """The current span's W3C ``traceparent``, to store with a run (``None`` with tracing off)."""
    if _tracer is None:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def note_run(run_id: str) -> None:
    """Name the run on the current span (the submit's)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(
        {"stellwerk.run_id": run_id, "stellwerk.workflow_id": run_id}
    )


# -- dispatch (resolver, monitor) -----------------------------------------------------------


def dispatching(
    task: TaskRecord, headers: dict[str, str]
) -> contextlib.AbstractContextManager[None]:
    """Around the publish of ``task``'s dispatch: a ``stellwerk.dispatch`` span whose context
    goes into ``headers``, counted in the resolution pass it belongs to."""
    if _tracer is None:
        return _NOTHING
    return _dispatch_span(_tracer, task, headers)


@contextlib.contextmanager
def _dispatch_span(tracer: Tracer, task: TaskRecord, headers: dict[str, str]) -> Iterator[None]:
    from opentelemetry import propagate, trace

    parent = None
    if not trace.get_current_span().get_span_context().is_valid and task.trace:
        parent = propagate.extract({"traceparent": task.trace})  # no span at hand: the run's
    with tracer.start_as_current_span(
        "stellwerk.dispatch",
        context=parent,
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "stellwerk.run_id": task.run_id,
            "stellwerk.workflow_id": task.run_id,
            "stellwerk.task_id": task.id,
            "stellwerk.method": task.method,
            "stellwerk.attempt": task.attempt,
            "stellwerk.generation": task.generation,
            "messaging.system": "nats",
            "messaging.destination.name": names.DISPATCH_STREAM,
        },
    ):
        propagate.inject(headers)
        yield
    current = _PASS.get()
    if current is not None:
        current.dispatched += 1


# -- execution (executor) -------------------------------------------------------------------


def task_span(msg: Msg, attempt: Coroutine[Any, Any, _T]) -> Coroutine[Any, Any, _T]:
    """``attempt`` (the handling of dispatch ``msg``) inside a ``stellwerk.task`` span, child of
    the context in the message's headers; ``attempt`` itself with tracing off."""
    if _tracer is None:
        return attempt
    return _in_task_span(_tracer, msg, attempt)


async def _in_task_span(tracer: Tracer, msg: Msg, attempt: Coroutine[Any, Any, _T]) -> _T:
    from opentelemetry import propagate, trace

    with tracer.start_as_current_span(
        "stellwerk.task",
        context=propagate.extract(msg.headers or {}),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "stellwerk.delivery": delivery_of(msg).num_delivered,
        },
    ):
        return await attempt


def task_started(dispatch: events_pb2.TaskDispatch, executor_id: str) -> None:
    """Describe the current ``stellwerk.task`` span by the dispatch it runs."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(
        {
            "stellwerk.run_id": dispatch.run_id,
            "stellwerk.workflow_id": dispatch.run_id,
            "stellwerk.task_id": dispatch.task_id,
            "stellwerk.method": dispatch.method,
            "stellwerk.attempt": dispatch.attempt,
            "stellwerk.generation": dispatch.generation,
            "stellwerk.executor_id": executor_id,
        }
    )


def reporting(event: events_pb2.TaskEvent, headers: dict[str, str]) -> dict[str, str]:
    """``headers`` of the outcome message, with the current span's context; the outcome is
    recorded on that span."""
    if _tracer is None:
        return headers
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Status, StatusCode

    span = trace.get_current_span()
    succeeded = event.outcome == 1  # TASK_OUTCOME_SUCCEEDED
    span.set_attribute("stellwerk.outcome", "succeeded" if succeeded else "failed")
    if not succeeded:
        span.set_status(Status(StatusCode.ERROR, event.error[:200]))
    propagate.inject(headers)
    return headers


# -- resolution (resolver) ------------------------------------------------------------------


def resolving(batch: Sequence[tuple[Msg, float]]) -> contextlib.AbstractContextManager[None]:
    """Around one resolution pass over ``batch`` (outcome messages of one run, each with the
    ``time.perf_counter()`` it was received at): a ``stellwerk.resolve`` span from the first
    receipt to the end of the pass, child of the first outcome's context."""
    if _tracer is None or not batch:
        return _NOTHING
    return _resolve_span(_tracer, batch)


def _event_task(subject: str) -> str:
    """The task id in an event subject (``""`` for a subject that names no attempt)."""
    address = names.parse_event_subject(subject)
    return "" if address is None else address.task_id


@contextlib.contextmanager
def _resolve_span(tracer: Tracer, batch: Sequence[tuple[Msg, float]]) -> Iterator[None]:
    from opentelemetry import propagate, trace

    first, received = batch[0]
    ago = time.perf_counter() - received
    received_at = time.time() - ago
    stored_at = delivery_of(first).stored_at
    parent = propagate.extract(first.headers or {})
    first_context = trace.get_current_span(parent).get_span_context()
    links = []
    for msg, _ in batch[1:]:
        other = trace.get_current_span(propagate.extract(msg.headers or {})).get_span_context()
        if other.is_valid and other != first_context:
            links.append(trace.Link(other))
    run_id = names.run_of_event_subject(first.subject)
    attributes: dict[str, Any] = {
        "stellwerk.run_id": run_id,
        "stellwerk.workflow_id": run_id,
        "stellwerk.task_id": _event_task(first.subject),
        "stellwerk.batch_size": len(batch),
    }
    if len(batch) > 1:
        attributes["stellwerk.task_ids"] = [_event_task(m.subject) for m, _ in batch]
    if stored_at is not None:
        attributes["stellwerk.event_lag_ms"] = max(0.0, (received_at - stored_at) * 1000)
    counted = _Pass()
    with tracer.start_as_current_span(
        "stellwerk.resolve",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
        start_time=time.time_ns() - int(ago * 1e9),
    ) as span:
        token = _PASS.set(counted)
        try:
            yield
        finally:
            _PASS.reset(token)
            span.set_attribute("stellwerk.ready_count", counted.dispatched)
