"""``@handler`` marking, handing handlers to an executor, and running them through the table."""

from __future__ import annotations

import asyncio
import functools
import re
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from stellwerk.core.errors import AlreadyExistsError, InvalidArgumentError, TaskError
from stellwerk.core.handlers import (
    HandlerDefinition,
    TaskContext,
    collect_handlers,
    handler,
    handler_definition,
    handlers_in,
)
from stellwerk.core.settings import Settings
from stellwerk.executor import Executor
from stellwerk.executor.methods import MethodKind, MethodTable, build_method_table

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CTX = TaskContext(
    run_id="wf-1",
    task_id="t-1",
    attempt=2,
    idempotency_key="wf-1/t-1/2",
    method="demo/x",
)


@pytest.fixture
def fixture_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``tests/fixtures/*.py`` importable, freshly imported by each test."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    for name in ("handlers_demo", "handlers_failing", "handlers_clash", "handlers_other_greet"):
        monkeypatch.delitem(sys.modules, name, raising=False)


async def _invoke(table: MethodTable, name: str, params: dict[str, Any], **kw: Any) -> Any:
    return await table.invoke(name, params, CTX, timeout=kw.get("timeout"))


# --- marking -------------------------------------------------------------------------------


def _defined(fn: Any) -> HandlerDefinition:
    definition = handler_definition(fn)
    assert definition is not None
    return definition


def test_decorator_marks_sync_function_and_returns_it_unchanged() -> None:
    def greet(params: dict[str, Any]) -> str:
        return "hi"

    decorated = handler("demo/greet", description="says hi")(greet)

    assert decorated is greet
    entry = _defined(greet)
    assert (entry.name, entry.fn) == ("demo/greet", greet)
    assert (entry.is_async, entry.wants_ctx, entry.description) == (False, False, "says hi")


def test_decorator_detects_async_and_context_parameter() -> None:
    @handler("demo/async_ctx")
    async def with_ctx(params: dict[str, Any], ctx: TaskContext) -> None:
        return None

    @handler("demo/sync_ctx")
    def sync_ctx(params: dict[str, Any], ctx: TaskContext | None = None) -> None:
        return None

    assert (_defined(with_ctx).is_async, _defined(with_ctx).wants_ctx) == (True, True)
    assert (_defined(sync_ctx).is_async, _defined(sync_ctx).wants_ctx) == (False, True)


def test_callable_object_with_async_call_counts_as_async() -> None:
    class Tool:
        async def __call__(self, params: dict[str, Any]) -> int:
            return 1

    tool = handler("demo/tool")(Tool())

    assert _defined(tool).is_async is True
    assert handler_definition(Tool()) is None  # only the decorated instance is a handler


def test_decorating_registers_nothing_anywhere() -> None:
    """Without a registry, a marked function is offered only where it is handed over."""

    @handler("demo/unlisted")
    def unlisted(params: Any) -> int:
        return 1

    assert "demo/unlisted" not in build_method_table()
    assert "demo/unlisted" in build_method_table(handlers=[unlisted])


@pytest.mark.parametrize(
    "name",
    [
        "",
        "noslash",
        "1demo/x",
        "/demo",
        "demo/../x",
        "demo/x.",
        "demo/with space",
        "demo/${x}",
        "demo/ü",
        "demo/" + "x" * 300,
    ],
)
def test_bad_names_are_refused_when_the_decorator_is_created(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="handler name"):
        handler(name)


def test_non_string_name_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="must be a string"):
        handler(42)  # type: ignore[arg-type]


def _no_params() -> None:
    return None


def _three(a: Any, b: Any, c: Any) -> None:
    return None


def _star_args(*args: Any) -> None:
    return None


def _required_kwonly(params: Any, *, flag: bool) -> None:
    return None


def _generator(params: Any) -> Iterator[int]:
    yield 1


async def _async_generator(params: Any) -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (_no_params, "takes 0 positional parameters"),
        (_three, "takes 3 positional parameters"),
        (_star_args, r"\*args is not supported"),
        (_required_kwonly, "keyword-only parameter 'flag'"),
        (_generator, "is a generator"),
        (_async_generator, "is a generator"),
        ("not callable", "is not callable"),
    ],
)
def test_bad_signatures_are_refused_at_decoration_time(fn: Any, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        handler("demo/bad")(fn)
    assert handler_definition(fn) is None


def test_optional_keyword_only_and_var_keyword_parameters_are_fine() -> None:
    def fn(params: Any, *, verbose: bool = False, **extra: Any) -> None:
        return None

    handler("demo/ok")(fn)

    assert _defined(fn).wants_ctx is False


def test_marking_the_same_function_again_is_harmless_but_not_under_another_name() -> None:
    def fn(params: Any) -> int:
        return 1

    handler("demo/again")(fn)
    handler("demo/again")(fn)
    with pytest.raises(InvalidArgumentError, match="already marked as 'demo/again'"):
        handler("demo/other")(fn)

    assert _defined(fn).name == "demo/again"


def test_an_object_that_takes_no_attributes_is_refused() -> None:
    class Slotted:
        __slots__ = ()

        def __call__(self, params: Any) -> int:
            return 1

    with pytest.raises(InvalidArgumentError, match="cannot mark"):
        handler("demo/slotted")(Slotted())


# --- handing handlers over ------------------------------------------------------------------


def test_same_name_from_two_functions_is_already_exists() -> None:
    @handler("demo/dup")
    def first(params: Any) -> int:
        return 1

    @handler("demo/dup")
    def second(params: Any) -> int:
        return 2

    with pytest.raises(AlreadyExistsError, match="defined by both") as info:
        build_method_table(handlers=[first, second])
    assert "first" in info.value.message and "second" in info.value.message


def test_the_same_function_given_twice_is_one_method() -> None:
    @handler("demo/twice")
    def fn(params: Any) -> int:
        return 1

    assert collect_handlers([fn, fn]) == {"demo/twice": _defined(fn)}


def test_an_unmarked_function_is_refused() -> None:
    def plain(params: Any) -> int:
        return 1

    with pytest.raises(InvalidArgumentError, match=r"plain is not a handler; decorate it"):
        build_method_table(handlers=[plain])


def test_a_wrapper_around_a_handler_says_to_put_handler_outermost() -> None:
    @handler("demo/inner")
    def inner(params: Any) -> int:
        return 1

    @functools.wraps(inner)
    def wrapper(params: Any) -> int:
        return inner(params)

    with pytest.raises(InvalidArgumentError, match="put @handler outermost"):
        build_method_table(handlers=[wrapper])


def test_executor_takes_its_handlers_as_a_list() -> None:
    @handler("demo/listed", description="given to the executor")
    def listed(params: Any) -> int:
        return 1

    executor = Executor(Settings(), handlers=[listed])

    assert "demo/listed" in executor.table.names()
    assert {i.name: i.kind for i in executor.table.infos()}["demo/listed"] is MethodKind.HANDLER


@pytest.mark.usefixtures("fixture_modules")
def test_executor_scans_the_modules_of_its_settings_besides_its_list() -> None:
    @handler("demo/listed")
    def listed(params: Any) -> int:
        return 1

    executor = Executor(Settings(handler_modules="handlers_demo"), handlers=[listed])

    assert {"demo/greet", "demo/attempt_info", "demo/listed"} <= set(executor.table.names())


@pytest.mark.usefixtures("fixture_modules")
def test_executor_refuses_a_listed_handler_that_clashes_with_a_scanned_one() -> None:
    @handler("demo/greet")
    def my_greet(params: Any) -> int:
        return 1

    with pytest.raises(AlreadyExistsError, match="'demo/greet' is defined by both"):
        Executor(Settings(handler_modules="handlers_demo"), handlers=[my_greet])


# --- running handlers -----------------------------------------------------------------------


async def test_sync_handler_runs_and_gets_params() -> None:
    @handler("demo/greet", description="Greet")
    def greet(params: dict[str, Any]) -> dict[str, Any]:
        return {"greeting": f"Hello, {params['name']}!"}

    table = build_method_table(handlers=[greet])

    assert await _invoke(table, "demo/greet", {"name": "Ada"}) == {"greeting": "Hello, Ada!"}
    info = {i.name: i for i in table.infos()}["demo/greet"]
    assert (info.kind, info.description) == (MethodKind.HANDLER, "Greet")


async def test_context_reaches_sync_and_async_handlers_with_the_idempotency_key() -> None:
    @handler("demo/sync_key")
    def sync_key(params: dict[str, Any], ctx: TaskContext) -> list[Any]:
        return [ctx.idempotency_key, ctx.attempt, ctx.workflow_id, ctx.task_id, ctx.method]

    @handler("demo/async_key")
    async def async_key(params: dict[str, Any], ctx: TaskContext) -> str:
        return ctx.idempotency_key

    table = build_method_table(handlers=[sync_key, async_key])

    assert await _invoke(table, "demo/sync_key", {}) == ["wf-1/t-1/2", 2, "wf-1", "t-1", "demo/x"]
    assert await _invoke(table, "demo/async_key", {}) == "wf-1/t-1/2"


async def test_sync_handler_runs_in_a_thread_so_the_loop_keeps_running() -> None:
    released = threading.Event()
    threads: list[int] = []

    @handler("demo/blocking")
    def blocking(params: dict[str, Any]) -> str:
        threads.append(threading.get_ident())
        # Only a coroutine on the event loop can set this; if the handler blocked the loop,
        # the wait would time out.
        return "released" if released.wait(timeout=10) else "loop was blocked"

    table = build_method_table(handlers=[blocking])
    call = asyncio.create_task(_invoke(table, "demo/blocking", {}))
    deadline = time.monotonic() + 10
    while not threads and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    released.set()

    assert await call == "released"
    assert threads and threads[0] != threading.get_ident()


async def test_async_handler_runs_on_the_event_loop_thread() -> None:
    @handler("demo/where")
    async def where(params: dict[str, Any]) -> int:
        return threading.get_ident()

    assert (
        await _invoke(build_method_table(handlers=[where]), "demo/where", {})
        == threading.get_ident()
    )


async def test_sync_wrapper_returning_a_coroutine_is_awaited() -> None:
    async def inner(params: dict[str, Any]) -> str:
        return "from inner"

    def wrapper(params: dict[str, Any]) -> Any:
        return inner(params)

    fn = handler("demo/wrapped")(wrapper)

    assert await _invoke(build_method_table(handlers=[fn]), "demo/wrapped", {}) == "from inner"


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ({1, 2}, "is of type set"),
        ({"when": object()}, r"\$\.when is of type object"),
        ({"x": [1.0, float("nan")]}, r"\$\.x\[1\] is nan"),
        (float("inf"), "is inf"),
        ({1: "a"}, "key 1 of type int"),
        ({"ok": {"deep": {(1, 2): "tuple key"}}}, "key \\(1, 2\\) of type tuple"),
        (b"bytes", "is of type bytes"),
    ],
)
async def test_non_json_return_values_fail_the_task(value: Any, detail: str) -> None:
    fn = handler("demo/bad_return")(lambda params: value)

    with pytest.raises(TaskError, match="not JSON-serialisable") as info:
        await _invoke(build_method_table(handlers=[fn]), "demo/bad_return", {})
    assert info.value.message.startswith("handler returned a value that is not JSON-serialisable")
    assert re.search(detail, info.value.message)


async def test_circular_return_value_fails_the_task() -> None:
    loop: list[Any] = []
    loop.append(loop)
    fn = handler("demo/circular")(lambda params: loop)

    with pytest.raises(TaskError, match="not JSON-serialisable"):
        await _invoke(build_method_table(handlers=[fn]), "demo/circular", {})


async def test_tuples_become_lists_and_big_integers_stay_exact() -> None:
    fn = handler("demo/shapes")(lambda params: {"pair": (1, 2), "big": 2**80, "f": 0.5, "n": None})

    out = await _invoke(build_method_table(handlers=[fn]), "demo/shapes", {})

    assert out == {"pair": [1, 2], "big": 2**80, "f": 0.5, "n": None}
    assert isinstance(out["pair"], list)


async def test_exception_in_handler_becomes_task_error_with_type_and_message() -> None:
    @handler("demo/raises")
    def raises(params: dict[str, Any]) -> None:
        raise ValueError(f"bad value {params['v']}")

    with pytest.raises(TaskError) as info:
        await _invoke(build_method_table(handlers=[raises]), "demo/raises", {"v": 7})
    assert info.value.message == "ValueError: bad value 7"
    assert isinstance(info.value.__cause__, ValueError)


async def test_async_handler_exception_and_missing_param_key() -> None:
    @handler("demo/async_raises")
    async def async_raises(params: dict[str, Any]) -> None:
        params["absent"]

    with pytest.raises(TaskError, match=r"^KeyError: 'absent'$"):
        await _invoke(build_method_table(handlers=[async_raises]), "demo/async_raises", {})


async def test_task_error_raised_by_handler_keeps_its_message() -> None:
    @handler("demo/refuses")
    def refuses(params: dict[str, Any]) -> None:
        raise TaskError("card declined")

    with pytest.raises(TaskError) as info:
        await _invoke(build_method_table(handlers=[refuses]), "demo/refuses", {})
    assert info.value.message == "card declined"


async def test_sys_exit_in_handler_fails_the_task_not_the_executor() -> None:
    @handler("demo/exits")
    def exits(params: dict[str, Any]) -> None:
        sys.exit(4)

    with pytest.raises(TaskError, match=r"^SystemExit: 4$"):
        await _invoke(build_method_table(handlers=[exits]), "demo/exits", {})


async def test_async_handler_timeout() -> None:
    @handler("demo/slow")
    async def slow(params: dict[str, Any]) -> None:
        await asyncio.sleep(60)

    started = time.monotonic()
    with pytest.raises(
        TaskError, match=r"^demo/slow timed out after 0\.2 s \(the task's timeout\)$"
    ):
        await _invoke(build_method_table(handlers=[slow]), "demo/slow", {}, timeout=0.2)
    assert time.monotonic() - started < 5


async def test_timeout_error_raised_by_the_handler_is_not_the_deadline() -> None:
    @handler("demo/own_timeout")
    async def own_timeout(params: dict[str, Any]) -> None:
        raise TimeoutError("upstream took too long")

    with pytest.raises(TaskError, match=r"^TimeoutError: upstream took too long$"):
        await _invoke(
            build_method_table(handlers=[own_timeout]), "demo/own_timeout", {}, timeout=30
        )


async def test_sync_handler_timeout_does_not_wait_for_the_thread() -> None:
    release = threading.Event()

    @handler("demo/stuck")
    def stuck(params: dict[str, Any]) -> str:
        release.wait(timeout=30)
        return "late"

    try:
        with pytest.raises(TaskError, match=r"timed out after 0\.2 s"):
            await _invoke(build_method_table(handlers=[stuck]), "demo/stuck", {}, timeout=0.2)
    finally:
        release.set()


async def test_cancellation_propagates_out_of_an_async_handler() -> None:
    entered = asyncio.Event()

    @handler("demo/waits")
    async def waits(params: dict[str, Any]) -> None:
        entered.set()
        await asyncio.sleep(60)

    call = asyncio.create_task(_invoke(build_method_table(handlers=[waits]), "demo/waits", {}))
    await asyncio.wait_for(entered.wait(), timeout=10)
    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), True])
async def test_invalid_timeout_is_a_task_error(timeout: Any) -> None:
    fn = handler("demo/quick")(lambda params: 1)

    with pytest.raises(TaskError, match="timeout must be a positive number"):
        await _invoke(build_method_table(handlers=[fn]), "demo/quick", {}, timeout=timeout)


# --- handler modules ------------------------------------------------------------------------


@pytest.mark.usefixtures("fixture_modules")
async def test_handler_modules_are_imported_and_their_handlers_offered() -> None:
    table = build_method_table(handler_modules=["handlers_demo"])

    assert {"demo/greet", "demo/attempt_info"} <= set(table.names())
    assert await _invoke(table, "demo/greet", {"name": "Grace"}) == {"greeting": "Hello, Grace!"}
    assert await _invoke(table, "demo/attempt_info", {}) == {
        "key": "wf-1/t-1/2",
        "attempt": 2,
        "task": "t-1",
    }


@pytest.mark.usefixtures("fixture_modules")
def test_missing_handler_module_is_invalid_argument_naming_it() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        build_method_table(handler_modules=["stellwerk_tests_no_such_module"])
    assert "'stellwerk_tests_no_such_module'" in info.value.message
    assert "ModuleNotFoundError" in info.value.message


@pytest.mark.usefixtures("fixture_modules")
def test_handler_module_failing_at_import_is_invalid_argument_with_cause() -> None:
    with pytest.raises(InvalidArgumentError, match="RuntimeError: handlers_failing refuses"):
        build_method_table(handler_modules=["handlers_failing"])


@pytest.mark.parametrize("module", ["", None])
def test_empty_handler_module_name_is_refused(module: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="non-empty string"):
        build_method_table(handler_modules=[module])


@pytest.mark.usefixtures("fixture_modules")
def test_handler_may_not_take_a_builtin_name() -> None:
    with pytest.raises(AlreadyExistsError, match=r"'mcp/tool\.add' uses the name of a built-in"):
        build_method_table(handler_modules=["handlers_clash"])


def test_handler_may_not_take_python_execute_even_when_scripts_are_off() -> None:
    fn = handler("python/execute")(lambda params: 1)

    with pytest.raises(AlreadyExistsError, match="built-in"):
        build_method_table(handlers=[fn])


@pytest.mark.usefixtures("fixture_modules")
def test_a_module_offers_what_it_imported_too_once() -> None:
    import handlers_demo  # type: ignore[import-not-found]

    module = types.ModuleType("worker_handlers")
    module.greet = handlers_demo.greet  # type: ignore[attr-defined]
    module.alias = handlers_demo.greet  # type: ignore[attr-defined]
    module.plain = len  # type: ignore[attr-defined]

    assert [d.name for d in handlers_in(module)] == ["demo/greet"]


@pytest.mark.usefixtures("fixture_modules")
def test_two_modules_with_the_same_method_name_fail_the_start() -> None:
    with pytest.raises(AlreadyExistsError, match="'demo/greet' is defined by both") as info:
        build_method_table(handler_modules=["handlers_demo", "handlers_other_greet"])
    assert "handlers_demo.greet" in info.value.message
    assert "handlers_other_greet.greet" in info.value.message
