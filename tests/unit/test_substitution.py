"""``${...}`` references: parsing (``find_references``) and substitution, one test per rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stellwerk.core.errors import ReferenceResolutionError, WorkflowInvalidError
from stellwerk.core.model import Reference, find_references, substitute

OUTPUTS: dict[str, Any] = {
    "add": {"response": "42 + 58 = 100", "result": 100, "calculation": "42 + 58"},
    "echo": {"response": "Hello", "echoed": "Hello", "length": 5},
    "llm": {"response": "text", "content": "text"},
    "py": {"result": {"numbers": [5, 7]}, "output": "", "success": True},
    "items": {"items": [{"name": "first"}, {"name": "second"}]},
    "list": [10, 20, 30],
    "scalar": 2.5,
    "nested": {"result": {"result": "inner"}},
}


def lookup(token: str) -> Any:
    return OUTPUTS[token]


def sub(value: Any) -> Any:
    return substitute(value, lookup)


# --- parsing -------------------------------------------------------------------------------


def test_find_references_walks_dict_values_and_list_items_in_order() -> None:
    value = {"a": "${add.result}", "b": ["x ${echo} y", {"c": "${items.items[0].name}"}], "d": 1}
    assert find_references(value) == [
        Reference(raw="add.result", task="add", path=("result",)),
        Reference(raw="echo", task="echo", path=()),
        Reference(raw="items.items[0].name", task="items", path=("items", 0, "name")),
    ]


def test_both_index_forms_parse() -> None:
    (dotted,) = find_references("${a.items.0.name}")
    (bracketed,) = find_references("${a.items[0][1].name}")
    assert dotted.path == ("items", "0", "name")
    assert bracketed.path == ("items", 0, 1, "name")


def test_task_tokens_keep_spaces_and_unicode() -> None:
    (ref,) = find_references("${Größe berechnen.result}")
    assert (ref.task, ref.path) == ("Größe berechnen", ("result",))
    assert str(ref) == "${Größe berechnen.result}"


def test_dict_keys_are_never_references() -> None:
    assert find_references({"${not.a.ref}": "plain"}) == []


def test_escaped_dollar_brace_is_not_a_reference() -> None:
    assert find_references("cost: $${price} and $$ and $5") == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("${abc", "unclosed '${'"),
        ("x ${}", "empty reference"),
        ("${a..b}", "empty path segment"),
        ("${a.}", "empty path segment"),
        ("${.a}", "no task before"),
        ("${a.b[x]}", "[x] is not a list index"),
        ("${a.b[0}", "'[' without ']'"),
        ("${a.b[]}", "[] is not a list index"),
        ("${a.b[0]c}", "expected '.' or '['"),
        ("${a.b]}", "']' without '['"),
        ("${a.b[-1]}", "negative list indexes"),
        ("${a ${b}", "'{' inside a reference"),
    ],
)
def test_malformed_references_raise_naming_the_text(text: str, needle: str) -> None:
    with pytest.raises(WorkflowInvalidError) as caught:
        find_references({"k": [text]})
    (problem,) = caught.value.problems
    assert problem.field == "params"
    assert needle in problem.message
    assert problem.message.startswith("params.k[0]: ")


def test_every_malformed_reference_is_reported() -> None:
    with pytest.raises(WorkflowInvalidError) as caught:
        find_references(["${}", "ok ${a}", "${b..c}"])
    assert len(caught.value.problems) == 2


def test_find_references_survives_cyclic_values() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(WorkflowInvalidError, match="nested more than"):
        find_references(cyclic)


# --- substitution --------------------------------------------------------------------------


def test_whole_string_reference_keeps_the_type() -> None:
    assert sub("${add.result}") == 100
    assert sub("${py.result.numbers}") == [5, 7]
    assert sub("${py.success}") is True
    assert sub("${list}") == [10, 20, 30]


def test_bare_task_means_task_dot_result() -> None:
    assert sub("${add}") == sub("${add.result}") == 100
    assert sub("${py}") == {"numbers": [5, 7]}


def test_result_is_the_output_itself_when_there_is_no_result_key() -> None:
    assert sub("${echo}") == OUTPUTS["echo"]
    assert sub("${echo.result}") == OUTPUTS["echo"]
    assert sub("${echo.result.length}") == 5
    assert sub("${list.result[1]}") == 20
    assert sub("${scalar}") == 2.5


def test_result_is_a_key_when_the_output_has_one() -> None:
    assert sub("${nested.result}") == {"result": "inner"}
    assert sub("${nested.result.result}") == "inner"
    with pytest.raises(ReferenceResolutionError):
        sub("${py.numbers}")  # the numbers are under "result"


def test_paths_walk_keys_and_both_index_forms() -> None:
    assert sub("${items.items[1].name}") == "second"
    assert sub("${items.items.1.name}") == "second"
    assert sub("${list.2}") == 30
    assert sub("${list.result[0]}") == 10


def test_index_on_the_task_token_is_part_of_the_token() -> None:
    seen: list[str] = []

    def record(token: str) -> Any:
        seen.append(token)
        return OUTPUTS["list"]

    substitute("${list[0]}", record)
    assert seen == ["list[0]"]


def test_inside_text_strings_and_numbers_are_inserted_as_text() -> None:
    assert sub("Sum was ${add.result}") == "Sum was 100"
    assert sub("${echo.response} world") == "Hello world"
    assert sub("x=${scalar}") == "x=2.5"
    assert sub("${add.result}-${add.result}") == "100-100"


def test_inside_text_big_integers_stay_exact() -> None:
    big = 2**100 + 1
    assert substitute("n=${t}", lambda _: {"result": big}) == f"n={big}"
    assert substitute("${t}", lambda _: {"result": big}) == big


def test_inside_text_other_values_become_json() -> None:
    assert sub("ok=${py.success}") == "ok=true"
    assert sub("d=${py}") == 'd={"numbers": [5, 7]}'
    assert substitute("n=${t}", lambda _: {"result": None}) == "n=null"
    assert substitute("u=${t}", lambda _: {"result": {"k": "ü"}}) == 'u={"k": "ü"}'


def test_escape_gives_a_literal_dollar_brace() -> None:
    assert sub("$${add.result}") == "${add.result}"
    assert sub("$${x} and ${add}") == "${x} and 100"
    assert sub("$${") == "${"


def test_substituted_values_are_not_scanned_again() -> None:
    assert substitute("${t}", lambda _: {"result": "${add}"}) == "${add}"
    assert substitute("a ${t}", lambda _: {"result": "${add}"}) == "a ${add}"


def test_nested_structures_are_substituted_and_the_input_is_untouched() -> None:
    params = {"strings": ["${echo.response}", "Sum was ${add.result}"], "n": {"v": "${add}"}}
    before = copy.deepcopy(params)
    assert sub(params) == {"strings": ["Hello", "Sum was 100"], "n": {"v": 100}}
    assert params == before


def test_keys_and_non_strings_are_left_alone() -> None:
    assert sub({"${add}": 1, "x": [1, 2.5, None, True]}) == {"${add}": 1, "x": [1, 2.5, None, True]}


def test_missing_key_names_the_reference_and_the_keys_that_exist() -> None:
    with pytest.raises(ReferenceResolutionError) as caught:
        sub("${echo.nope}")
    error = caught.value
    assert error.reference == "${echo.nope}"
    assert error.available == ("response", "echoed", "length")
    assert "${echo.nope}" in error.message
    assert "no key 'nope'" in error.message
    assert "response, echoed, length" in error.message


def test_missing_nested_key_names_where_the_walk_stopped() -> None:
    with pytest.raises(ReferenceResolutionError, match=r"'items\.items\[0\]' has no key 'x'"):
        sub("${items.items[0].x}")


def test_llm_output_has_no_result_key() -> None:
    with pytest.raises(ReferenceResolutionError, match="no key 'result'; its keys are: response"):
        sub("${llm.result.result.content}")
    assert sub("${llm.result.content}") == "text"


def test_list_index_out_of_range_names_the_length() -> None:
    with pytest.raises(ReferenceResolutionError, match=r"index 5 is out of range.*3 items"):
        sub("${list.5}")
    with pytest.raises(ReferenceResolutionError, match="index 3 is out of range"):
        sub("${list.result[3]}")


def test_negative_and_non_numeric_list_indexes_are_refused() -> None:
    with pytest.raises(ReferenceResolutionError, match="negative"):
        sub("${list.-1}")
    with pytest.raises(ReferenceResolutionError, match="'x' is not a list index"):
        sub("${list.x}")


def test_walking_into_a_scalar_fails() -> None:
    with pytest.raises(ReferenceResolutionError, match="is a string, so it has no 'x'"):
        sub("${echo.response.x}")


def test_a_failure_inside_text_also_raises() -> None:
    with pytest.raises(ReferenceResolutionError):
        sub("before ${echo.nope} after")


def test_malformed_text_at_substitution_raises_instead_of_leaving_it() -> None:
    with pytest.raises(ReferenceResolutionError, match="unclosed"):
        sub("${add")


def test_lookup_errors_propagate() -> None:
    with pytest.raises(KeyError):
        sub("${ghost}")
