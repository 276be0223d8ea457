"""Every public ``__all__`` is pinned here, as httpx's ``tests/test_exported_members.py`` does.

Adding or removing a public name is a change of the API: this test fails until the list below
says so too, so it cannot happen by accident. Every public module (no ``_`` in its path) that
declares ``__all__`` is pinned; :func:`test_every_public_module_is_pinned` holds that.
"""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

EXPORTED: dict[str, list[str]] = {
    "stellwerk": [
        "AlreadyExistsError",
        "ConflictError",
        "DeadlineExceededError",
        "InvalidArgumentError",
        "NonRetryableError",
        "NotFoundError",
        "Problem",
        "ReferenceResolutionError",
        "StellwerkError",
        "TaskContext",
        "TaskError",
        "UnavailableError",
        "WorkflowInvalidError",
        "WrongStateError",
        "handler",
    ],
    "stellwerk_client": [
        "AlreadyExistsError",
        "BreakerState",
        "Checkpoint",
        "CircuitBreaker",
        "Client",
        "ConflictError",
        "DEFAULT_TIMEOUT",
        "DeadlineExceededError",
        "ExecutorClient",
        "ExecutorInfo",
        "ExecutorStatus",
        "HealthCheck",
        "HealthProbe",
        "HealthReport",
        "InvalidArgumentError",
        "Method",
        "MonitorClient",
        "NotFoundError",
        "Overview",
        "Problem",
        "QueueDepth",
        "Ref",
        "RetryConfig",
        "Run",
        "RunChange",
        "RunExplanation",
        "RunPage",
        "RunState",
        "StellwerkError",
        "SyncClient",
        "TaskAttempt",
        "TaskHandle",
        "TaskRun",
        "TaskState",
        "TaskWait",
        "UnavailableError",
        "Validation",
        "WATCH_SEGMENT",
        "Workflow",
        "WorkflowBuilder",
        "WorkflowInvalidError",
        "WorkflowSpec",
        "WrongStateError",
        "load_workflow",
        "wait_for_health",
    ],
    "stellwerk.executor": [
        "Executor",
    ],
    "stellwerk.resolver": [
        "Resolver",
    ],
    "stellwerk.monitor": [
        "Monitor",
    ],
    "stellwerk.core.acks": [
        "hand_back",
    ],
    "stellwerk.core.deathsig": [
        "pdeathsig_preexec",
    ],
    "stellwerk.core.entrypoint": [
        "EXIT_FAILED",
        "EXIT_INVALID",
        "main",
    ],
    "stellwerk.core.errors": [
        "AlreadyExistsError",
        "ConflictError",
        "DeadlineExceededError",
        "InvalidArgumentError",
        "MAX_MESSAGE_CHARS",
        "MalformedRequestError",
        "NonRetryableError",
        "NotFoundError",
        "Problem",
        "ReferenceResolutionError",
        "StellwerkError",
        "TaskError",
        "UnavailableError",
        "WorkflowInvalidError",
        "WrongStateError",
        "clip",
        "shorten",
        "summarise",
    ],
    "stellwerk_client.errors": [
        "AlreadyExistsError",
        "ConflictError",
        "DeadlineExceededError",
        "InvalidArgumentError",
        "MAX_MESSAGE_CHARS",
        "MalformedRequestError",
        "NonRetryableError",
        "NotFoundError",
        "Problem",
        "ReferenceResolutionError",
        "StellwerkError",
        "TaskError",
        "UnavailableError",
        "WorkflowInvalidError",
        "WrongStateError",
        "clip",
        "shorten",
        "summarise",
    ],
    "stellwerk_client.wire": [
        "DOMAIN",
        "GRPC_MAX_MESSAGE_BYTES",
        "MAX_STATUS_DETAILS_BYTES",
        "MAX_STATUS_MESSAGE_BYTES",
        "RUN_ID_PATTERN",
        "STATUS_DETAILS_KEY",
        "error_from_rpc",
        "is_run_id",
        "status_for",
    ],
    "stellwerk.core.grpc_errors": [
        "DOMAIN",
        "DomainErrorInterceptor",
        "MAX_STATUS_DETAILS_BYTES",
        "MAX_STATUS_MESSAGE_BYTES",
        "error_from_rpc",
        "status_for",
    ],
    "stellwerk.core.handlers": [
        "HandlerDefinition",
        "Heartbeats",
        "TaskContext",
        "collect_handlers",
        "handler",
        "handler_definition",
        "handlers_in",
    ],
    "stellwerk.core.jetstream": [
        "Delivery",
        "Topology",
        "cancel_requested",
        "connect",
        "delivery_of",
        "ensure_dispatch_consumer",
        "ensure_resolver_consumer",
        "ensure_topology",
        "last_message",
    ],
    "stellwerk.core.checkpoints": [
        "CheckpointInfo",
        "CheckpointStore",
        "checkpoint_id_for",
    ],
    "stellwerk.core.kvscan": [
        "list_keys",
        "remove",
        "snapshot",
    ],
    "stellwerk.core.kvwatch": [
        "POLL",
        "RENEW_AFTER",
        "follow_keys",
    ],
    "stellwerk.core.lifecycle": [
        "Service",
        "ServiceFailedError",
        "Supervise",
        "cancel_requested",
        "run_until_signalled",
    ],
    "stellwerk.core.blobs": [
        "BlobKey",
        "BlobStore",
        "CHUNK_BYTES",
        "LargeResult",
        "PARAMS",
        "RESULT",
        "StoredText",
    ],
    "stellwerk.core.limits": [
        "BOOKKEEPING",
        "DEFAULT_MAX_RESULT_BYTES",
        "GRPC_MAX_MESSAGE_BYTES",
        "HEADROOM",
        "Limits",
        "MAX_ERROR_CHARS",
        "MAX_EXECUTOR_ID_CHARS",
        "MAX_RESULT",
        "TooLargeError",
        "clip_error",
        "result_over_cap",
        "result_too_large",
    ],
    "stellwerk.core.metrics": sorted(
        [
            "LATENCY_BUCKETS",
            "TASK_DURATION_BUCKETS",
            "Counter",
            "Gauge",
            "Histogram",
            "MetricsServer",
            "Registry",
        ]
    ),
    "stellwerk.core.model": [
        "Backoff",
        "FailureStrategy",
        "MAX_DOCUMENT_BYTES",
        "MAX_ID_LENGTH",
        "MAX_PARAMS_BYTES",
        "NULL_OUTPUT",
        "Priority",
        "Reference",
        "RetryPolicy",
        "TaskSpec",
        "WorkflowGraph",
        "WorkflowSpec",
        "alternatives",
        "check_workflow",
        "compensations",
        "find_references",
        "load_workflow",
        "load_workflow_file",
        "read_document",
        "replaced_by",
        "spec_mapping_from_proto",
        "spec_to_proto",
        "substitute",
        "validate_workflow",
    ],
    "stellwerk_client.model": [
        "Backoff",
        "FailureStrategy",
        "MAX_DOCUMENT_BYTES",
        "MAX_ID_LENGTH",
        "MAX_PARAMS_BYTES",
        "NULL_OUTPUT",
        "Priority",
        "Ref",
        "Reference",
        "RetryPolicy",
        "TaskHandle",
        "TaskSpec",
        "WorkflowBuilder",
        "WorkflowGraph",
        "WorkflowSpec",
        "alternatives",
        "check_workflow",
        "compensations",
        "find_references",
        "load_workflow",
        "load_workflow_file",
        "read_document",
        "replaced_by",
        "spec_mapping_from_proto",
        "spec_to_proto",
        "substitute",
        "validate_workflow",
    ],
    "stellwerk.core.natsd": [
        "NatsServer",
        "find_binary",
        "free_port",
    ],
    "stellwerk.core.progress": [
        "CANCELLED_ERROR",
        "CancelledRuns",
        "Canceller",
        "Dispatcher",
        "LargeValues",
        "Outcome",
        "Progress",
        "Restarter",
        "decode_outcome",
        "handoff_unfinished",
        "resolve_params",
        "unreadable_outcome",
    ],
    "stellwerk.core.publish": [
        "Ack",
        "JetStreamWriter",
        "Message",
        "NATS_FAILURES",
        "kv_subject",
        "publish_all",
    ],
    "stellwerk.core.records": [
        "ExecutorRecord",
        "FORMAT_VERSION",
        "RunRecord",
        "RunState",
        "TaskRecord",
        "TaskState",
        "bitmap_count",
        "bitmap_set",
        "bitmap_test",
        "dumps",
        "loads",
        "new_bitmap",
        "retry_waiting",
    ],
    "stellwerk.core.breaker_book": [
        "BreakerBook",
        "CLOSE",
        "all_breakers",
        "breaker_to_proto",
        "read_breakers",
        "resolution_retries",
        "visible_breakers",
    ],
    "stellwerk.core.breakers": [
        "Breaker",
        "BreakerPolicy",
        "BreakerState",
        "METHOD_SCOPE",
        "RETIRED_RETRIES_KEY",
        "RUN_SCOPE",
        "breaker_key",
        "closed_by_success",
        "method_scope",
        "opened_by_failure",
        "resolution_retries_key",
        "run_scope",
        "scope_of_breaker_key",
        "trial_taken",
    ],
    "stellwerk.core.convert": [
        "run_to_proto",
        "spec_mapping_from_proto",
        "spec_to_proto",
        "task_to_proto",
        "timestamp",
    ],
    "stellwerk.core.monitoring": [
        "Check",
        "Health",
        "MonitorServicer",
        "Queue",
        "StuckRun",
        "assess",
        "build_overview",
        "health_response",
    ],
    "stellwerk.core.names": [
        "BLOBS_STREAM",
        "BLOBS_SUBJECTS",
        "CHECKPOINTS_BUCKET",
        "CLAIMS_BUCKET",
        "CLAIMS_TTL",
        "DISPATCH_STREAM",
        "EVENTS_STREAM",
        "EVENT_FORMAT_VERSION",
        "EXECUTORS_BUCKET",
        "EventAddress",
        "READABLE_FORMAT_VERSIONS",
        "RESOLVER_CONSUMER",
        "RUNS_BUCKET",
        "TASKS_BUCKET",
        "blob_chunk_subject",
        "cancel_key",
        "checkpoint_key",
        "checkpoint_lookup",
        "checkpoint_part_key",
        "claim_key",
        "decode_token",
        "dispatch_consumer",
        "dispatch_filter",
        "dispatch_msg_id",
        "dispatch_subject",
        "encode_token",
        "event_msg_id",
        "event_subject",
        "finished_key",
        "idempotency_key",
        "is_checkpoint_id",
        "is_run_id",
        "order_key",
        "parse_event_subject",
        "request_key",
        "restart_key",
        "run_blobs_filter",
        "run_checkpoints_filter",
        "run_dispatches_filter",
        "run_events_filter",
        "run_key",
        "run_of_event_subject",
        "staging_key",
        "task_key",
        "task_prefix",
    ],
    "stellwerk.core.puller": [
        "Puller",
    ],
    "stellwerk.executor.methods": [
        "DEFAULT_SCRIPT_TIMEOUT",
        "MethodInfo",
        "MethodKind",
        "MethodTable",
        "PYTHON_EXECUTE",
        "build_method_table",
    ],
    "stellwerk_client.cli": [
        "EXIT_FAILED",
        "EXIT_INVALID",
        "EXIT_OK",
        "EXIT_TIMEOUT",
        "EXIT_UNAVAILABLE",
        "build_parser",
        "main",
    ],
    "stellwerk.core.retry_counts": [
        "REFRESH_EVERY",
        "RetryCountPublisher",
        "STALE_AFTER",
        "fold_stale_counts",
    ],
    "stellwerk.core.settings": [
        "Settings",
        "parse_listen",
    ],
    "stellwerk.core.store": [
        "DocumentStore",
        "Versioned",
        "run_store",
        "task_store",
    ],
    "stellwerk.core.tracing": [
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
    ],
}


@pytest.mark.parametrize("module_name", sorted(EXPORTED))
def test_all_is_exactly_the_pinned_names(module_name: str) -> None:
    module = importlib.import_module(module_name)

    assert sorted(module.__all__) == EXPORTED[module_name]
    assert len(set(module.__all__)) == len(module.__all__), "a name listed twice"


@pytest.mark.parametrize("module_name", sorted(EXPORTED))
def test_every_exported_name_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)

    assert [name for name in module.__all__ if not hasattr(module, name)] == []


@pytest.mark.parametrize("package_name", ["stellwerk", "stellwerk_client"])
def test_packages_export_every_public_name_they_import(package_name: str) -> None:
    """A name a package imports for its users and forgets to list in ``__all__`` is an export
    nobody decided on (submodules are attributes too, and are not exports)."""
    package = importlib.import_module(package_name)
    public = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__ import annotations
    }

    assert public == set(package.__all__)


def _public_modules_with_all(package_name: str) -> set[str]:
    package = importlib.import_module(package_name)
    found = {package_name} if hasattr(package, "__all__") else set()
    for info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue  # private, or a ``__main__`` that would start a service on import
        if hasattr(importlib.import_module(info.name), "__all__"):
            found.add(info.name)
    return found


@pytest.mark.parametrize("package_name", ["stellwerk", "stellwerk_client"])
def test_every_public_module_is_pinned(package_name: str) -> None:
    """A new public module's ``__all__`` is an API too: it joins ``EXPORTED`` when it appears."""
    assert sorted(_public_modules_with_all(package_name) - set(EXPORTED)) == []
