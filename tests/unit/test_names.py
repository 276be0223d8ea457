"""Names built from user input stay within what nats-server accepts (core/names.py)."""

from __future__ import annotations

import pytest

from stellwerk.core import names
from stellwerk.core.model import validate_workflow
from stellwerk_client.model import WorkflowSpec

LONGEST_METHOD = "m" * 200  # the longest method a workflow or a worker may name


def test_the_longest_method_still_has_a_consumer_name_nats_server_accepts() -> None:
    spec = WorkflowSpec.model_validate(
        {"name": "n", "tasks": [{"id": "a", "method": LONGEST_METHOD}]}
    )
    assert validate_workflow(spec) == []  # a method of 200 characters is valid
    assert len(names.dispatch_consumer(LONGEST_METHOD)) <= 255  # nats-server: error 10102


@pytest.mark.parametrize("length", [1, 2, 3, 183, 184, 185, 186, 200])
def test_consumer_names_differ_per_method_and_keep_their_old_form_where_it_fits(
    length: int,
) -> None:
    method, other = "a" * length, "b" * length
    name = names.dispatch_consumer(method)
    assert len(name) <= 255 and name != names.dispatch_consumer(other)
    token = names.encode_token(method)
    if len("dispatch-" + token) <= 255:
        assert name == f"dispatch-{token}"  # unchanged for every consumer that existed
    else:
        # hashed: a token length (65) that no base64 token has, so it meets no other name
        assert len(name) - len("dispatch-") == 65


@pytest.mark.parametrize(
    ("run_id", "task_id", "attempt"),
    [("01a24fc4a47b0838757fa6", "a.b ö", 3), ("r", "t", 1), ("r", "x" * 300, 12)],
)
def test_an_event_subject_parses_back(run_id: str, task_id: str, attempt: int) -> None:
    subject = names.event_subject(run_id, task_id, attempt)
    assert names.parse_event_subject(subject) == names.EventAddress(run_id, task_id, attempt)
    assert names.run_of_event_subject(subject) == run_id


@pytest.mark.parametrize(
    "subject",
    [
        "stellwerk.events.r",
        "stellwerk.events.r.dA.1.2",
        "stellwerk.events..dA.1",
        "stellwerk.events.r.dA.0",
        "stellwerk.events.r.dA.x",
        "stellwerk.events.r._w.1",  # not UTF-8 once decoded
        "stellwerk.dispatch.r.dA.1",
        "",
    ],
)
def test_subjects_that_name_no_attempt_parse_to_none(subject: str) -> None:
    assert names.parse_event_subject(subject) is None
