"""The workflow model, re-exported from the client distribution (``stellwerk_client.model``).

The client validates workflows offline and builds them in code with the same model, so it lives
there; services keep importing it from here.
"""

from __future__ import annotations

from stellwerk_client.model import (
    MAX_DOCUMENT_BYTES,
    MAX_ID_LENGTH,
    MAX_PARAMS_BYTES,
    NULL_OUTPUT,
    Backoff,
    FailureStrategy,
    Priority,
    Reference,
    RetryPolicy,
    TaskSpec,
    WorkflowGraph,
    WorkflowSpec,
    alternatives,
    check_workflow,
    compensations,
    find_references,
    load_workflow,
    load_workflow_file,
    read_document,
    replaced_by,
    spec_mapping_from_proto,
    spec_to_proto,
    substitute,
    validate_workflow,
)

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_ID_LENGTH",
    "MAX_PARAMS_BYTES",
    "NULL_OUTPUT",
    "Backoff",
    "FailureStrategy",
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
]
