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
