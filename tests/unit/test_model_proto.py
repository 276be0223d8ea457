"""The workflow model converts to its contract message and back without losing anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stellwerk.core.errors import WorkflowInvalidError
from stellwerk.core.model import WorkflowSpec, load_workflow, load_workflow_file, read_document
from stellwerk_api.workflow.v1 import workflow_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def test_example_round_trips_through_the_contract() -> None:
    spec = load_workflow_file(ROOT / "examples" / "simple_mcp_workflow.yaml")
    message = spec.to_proto()
    assert isinstance(message, pb.WorkflowSpec)
    assert message.tasks[1].params_json == json.dumps({"a": 42, "b": 58})
    assert WorkflowSpec.from_proto(message) == spec


def test_every_field_survives() -> None:
    spec = load_workflow(
        {
            "id": "wf",
            "name": "all fields",
            "description": "d",
            "metadata": {"owner": "me", "big": 2**80},
            "tasks": [
                {"id": "ä b", "method": "m/x", "params": {"n": 2**64 + 1, "f": 2.5}},
                {
                    "id": "c",
                    "name": "see",
                    "method": "m/y",
                    "dependencies": ["ä b"],
                    "priority": "urgent",
                    "timeout": 1.5,
                    "retry": {
                        "max_attempts": 4,
                        "backoff": "linear",
                        "base_delay": 0.5,
                        "max_delay": 9,
                        "jitter": False,
                    },
                    "metadata": {"k": [1, None]},
                    "params": {"v": "${ä b.n}"},
                },
            ],
        }
    )
    back = WorkflowSpec.from_proto(spec.to_proto())
    assert back == spec
    assert back.task("ä b").params["n"] == 2**64 + 1  # exact, not a double


def test_from_proto_reports_every_problem() -> None:
    message = pb.WorkflowSpec(name="bad")
    message.tasks.add(id="a", method="m/x", params_json="{oops", dependencies=["a"])
    message.tasks.add(id="b", method="", priority=99)
    with pytest.raises(WorkflowInvalidError) as info:
        WorkflowSpec.from_proto(message)
    fields = {(p.task, p.field) for p in info.value.problems}
    assert ("a", "params_json") in fields
    assert ("b", "priority") in fields


def test_read_document_refuses_unreadable_text() -> None:
    assert read_document("a: 1") == {"a": 1}
    with pytest.raises(WorkflowInvalidError):
        read_document("a: [")
