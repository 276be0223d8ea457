"""The workflow model: specs, loading, validation, references and the dependency graph.

Pure Python (no NATS, no gRPC), shared by every service, the client and the CLI.
"""

from __future__ import annotations

from ._graph import WorkflowGraph
from ._loader import load_workflow, load_workflow_file
from ._parse import MAX_DOCUMENT_BYTES, read_document
from ._references import Reference, find_references, substitute
from ._spec import MAX_ID_LENGTH, Backoff, Priority, RetryPolicy, TaskSpec, WorkflowSpec
from ._validate import check_workflow, validate_workflow
from ._values import MAX_PARAMS_BYTES

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_ID_LENGTH",
    "MAX_PARAMS_BYTES",
    "Backoff",
    "Priority",
    "Reference",
    "RetryPolicy",
    "TaskSpec",
    "WorkflowGraph",
    "WorkflowSpec",
    "check_workflow",
    "find_references",
    "load_workflow",
    "load_workflow_file",
    "read_document",
    "substitute",
    "validate_workflow",
]
