"""The workflow model: specs, loading, validation, references and the dependency graph.

Pure Python (no NATS, no gRPC): the client, the CLI and every service validate with it
(``stellwerk.core.model`` re-exports it for the services).
"""

from __future__ import annotations

from ._builder import Ref, TaskHandle, WorkflowBuilder
from ._compensations import compensations
from ._graph import WorkflowGraph
from ._loader import load_workflow, load_workflow_file
from ._parse import MAX_DOCUMENT_BYTES, read_document
from ._proto import spec_mapping_from_proto, spec_to_proto
from ._references import NULL_OUTPUT, Reference, find_references, substitute
from ._spec import (
    MAX_ID_LENGTH,
    Backoff,
    FailureStrategy,
    Priority,
    RetryPolicy,
    TaskSpec,
    WorkflowSpec,
)
from ._strategies import alternatives, replaced_by
from ._validate import check_workflow, validate_workflow
from ._values import MAX_PARAMS_BYTES

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_ID_LENGTH",
    "MAX_PARAMS_BYTES",
    "NULL_OUTPUT",
    "Backoff",
    "FailureStrategy",
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
]
