"""The built-in ``mcp/tool.*`` methods and the method table around them."""

from __future__ import annotations

from typing import Any

import pytest

from stellwerk.core.errors import TaskError
from stellwerk.core.handlers import TaskContext
from stellwerk.executor.methods import MethodKind, MethodTable, build_method_table

CTX = TaskContext(
    run_id="wf", task_id="t", attempt=1, idempotency_key="wf/t/1", method="mcp/tool.echo"
)


def test_the_context_names_the_run_and_keeps_the_old_name_as_an_alias() -> None:
    assert CTX.run_id == "wf"
    assert CTX.workflow_id == CTX.run_id  # handlers written for 0.1 read ctx.workflow_id


BUILTINS = ["mcp/tool.add", "mcp/tool.concat", "mcp/tool.echo", "mcp/tool.multiply"]


@pytest.fixture
def table() -> MethodTable:
    return build_method_table()


async def run(table: MethodTable, method: str, params: Any) -> Any:
    return await table.invoke(method, params, CTX, timeout=None)


# --- the table ------------------------------------------------------------------------------


def test_default_table_has_the_builtins_and_no_python_execute(table: MethodTable) -> None:
    assert table.names() == BUILTINS
    assert "python/execute" not in table
    assert len(table) == 4
    assert all(info.kind is MethodKind.BUILTIN and info.description for info in table.infos())
    assert [info.name for info in table.infos()] == BUILTINS


async def test_unknown_method_names_what_is_offered(table: MethodTable) -> None:
    with pytest.raises(TaskError) as info:
        await run(table, "mcp/tool.subtract", {"a": 1, "b": 2})
    assert "unknown method 'mcp/tool.subtract'" in info.value.message
    assert "mcp/tool.add" in info.value.message


async def test_python_execute_is_unknown_unless_script_dirs_are_set(table: MethodTable) -> None:
    with pytest.raises(TaskError, match="unknown method 'python/execute'"):
        await run(table, "python/execute", {"file": "x.py"})


@pytest.mark.parametrize("params", [None, [], "message", 3])
async def test_params_must_be_an_object(table: MethodTable, params: Any) -> None:
    with pytest.raises(TaskError, match="params must be an object"):
        await run(table, "mcp/tool.echo", params)


# --- echo -----------------------------------------------------------------------------------


async def test_echo(table: MethodTable) -> None:
    out = await run(table, "mcp/tool.echo", {"message": "Hello from Simple MCP!"})
    assert out == {"response": "Hello from Simple MCP!", "echoed": True, "length": 22}


async def test_echo_counts_characters_not_bytes_and_takes_arguments_form(
    table: MethodTable,
) -> None:
    out = await run(table, "mcp/tool.echo", {"arguments": {"message": "grüß"}, "message": "x"})
    assert out == {"response": "grüß", "echoed": True, "length": 4}


async def test_echo_with_non_dict_arguments_reads_params(table: MethodTable) -> None:
    out = await run(table, "mcp/tool.echo", {"arguments": "ignored", "message": ""})
    assert out == {"response": "", "echoed": True, "length": 0}


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "missing required argument 'message'"),
        ({"msg": "typo"}, "missing required argument 'message'"),
        ({"message": 5}, "'message' must be a string, got int"),
        ({"message": None}, "'message' must be a string, got NoneType"),
        ({"message": ["a"]}, "'message' must be a string, got list"),
    ],
)
async def test_echo_bad_arguments(table: MethodTable, params: Any, match: str) -> None:
    with pytest.raises(TaskError, match=match) as info:
        await run(table, "mcp/tool.echo", params)
    assert info.value.message.startswith("mcp/tool.echo: ")


# --- add / multiply -------------------------------------------------------------------------


async def test_add_keeps_integers_integers(table: MethodTable) -> None:
    out = await run(table, "mcp/tool.add", {"a": 42, "b": 58})
    assert out == {"response": "100", "result": 100, "calculation": "42 + 58 = 100"}
    assert type(out["result"]) is int


async def test_multiply(table: MethodTable) -> None:
    out = await run(table, "mcp/tool.multiply", {"arguments": {"a": 100, "b": 2}})
    assert out == {"response": "200", "result": 200, "calculation": "100 * 2 = 200"}


async def test_add_floats_and_mixed(table: MethodTable) -> None:
    out = await run(table, "mcp/tool.add", {"a": 1.5, "b": 2})
    assert out == {"response": "3.5", "result": 3.5, "calculation": "1.5 + 2 = 3.5"}


async def test_big_integers_stay_exact(table: MethodTable) -> None:
    out = await run(table, "mcp/tool.multiply", {"a": 2**64, "b": 2**64})
    assert out["result"] == 2**128
    assert out["response"] == str(2**128)


@pytest.mark.parametrize("method", ["mcp/tool.add", "mcp/tool.multiply"])
@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"b": 1}, "missing required argument 'a'"),
        ({"a": 1}, "missing required argument 'b'"),
        ({"a": "1", "b": 2}, "'a' must be a number, got str '1'"),
        ({"a": 1, "b": True}, "'b' must be a number, got bool True"),
        ({"a": None, "b": 1}, "'a' must be a number, got NoneType"),
        ({"a": [1], "b": 1}, "'a' must be a number, got list"),
        ({"a": float("nan"), "b": 1}, "'a' must be a finite number"),
        ({"a": 1, "b": float("-inf")}, "'b' must be a finite number"),
        ({"a": "x" * 1000, "b": 1}, r"got str 'x+\.\.\.$"),
    ],
)
async def test_arithmetic_bad_arguments(
    table: MethodTable, method: str, params: Any, match: str
) -> None:
    with pytest.raises(TaskError, match=match) as info:
        await run(table, method, params)
    assert info.value.message.startswith(f"{method}: ")
    assert len(info.value.message) < 200


async def test_float_overflow_is_a_task_error(table: MethodTable) -> None:
    with pytest.raises(TaskError, match="is not a finite number"):
        await run(table, "mcp/tool.multiply", {"a": 1e308, "b": 10})


async def test_integer_too_long_to_print_is_a_task_error(table: MethodTable) -> None:
    huge = 10**4000
    with pytest.raises(TaskError, match="too many digits"):
        await run(table, "mcp/tool.multiply", {"a": huge, "b": huge})


# --- concat ---------------------------------------------------------------------------------


async def test_concat_with_separator(table: MethodTable) -> None:
    params = {
        "strings": ["Hello from Simple MCP!", "Sum was 100", "Product is 200"],
        "separator": " | ",
    }
    out = await run(table, "mcp/tool.concat", params)
    assert out == {
        "response": "Hello from Simple MCP! | Sum was 100 | Product is 200",
        "joined": True,
        "count": 3,
    }


async def test_concat_default_separator_numbers_and_empty(table: MethodTable) -> None:
    out = await run(table, "mcp/tool.concat", {"strings": ["a", 1, 2.5]})
    assert out == {"response": "a 1 2.5", "joined": True, "count": 3}
    empty = await run(table, "mcp/tool.concat", {"arguments": {"strings": []}})
    assert empty == {"response": "", "joined": True, "count": 0}


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "missing required argument 'strings'"),
        ({"strings": "abc"}, "'strings' must be a list, got str"),
        ({"strings": {"a": 1}}, "'strings' must be a list, got dict"),
        ({"strings": ["a", None]}, r"strings\[1\] must be a string or a number, got NoneType"),
        ({"strings": [True]}, r"strings\[0\] must be a string or a number, got bool"),
        ({"strings": [["nested"]]}, r"strings\[0\] must be a string or a number, got list"),
        ({"strings": ["a"], "separator": 1}, "'separator' must be a string, got int"),
        ({"strings": ["a"], "separator": None}, "'separator' must be a string, got NoneType"),
    ],
)
async def test_concat_bad_arguments(table: MethodTable, params: Any, match: str) -> None:
    with pytest.raises(TaskError, match=match) as info:
        await run(table, "mcp/tool.concat", params)
    assert info.value.message.startswith("mcp/tool.concat: ")


async def test_simple_mcp_workflow_chain_gives_gleitzeits_final_text(table: MethodTable) -> None:
    # examples/simple_mcp_workflow.yaml, with the ${...} references substituted by hand.
    echo = await run(table, "mcp/tool.echo", {"message": "Hello from Simple MCP!"})
    total = await run(table, "mcp/tool.add", {"a": 42, "b": 58})
    product = await run(table, "mcp/tool.multiply", {"a": total["result"], "b": 2})
    final = await run(
        table,
        "mcp/tool.concat",
        {
            "strings": [
                echo["response"],
                f"Sum was {total['result']}",
                f"Product is {product['result']}",
            ],
            "separator": " | ",
        },
    )
    assert final["response"] == "Hello from Simple MCP! | Sum was 100 | Product is 200"
