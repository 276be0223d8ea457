"""``python/execute``: scripts in a child process, confined to the allowed directories."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stellwerk.core.errors import InvalidArgumentError, TaskError
from stellwerk.core.handlers import TaskContext
from stellwerk.executor.methods import MethodKind, MethodTable, _python_script, build_method_table

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "tests" / "fixtures" / "scripts"
EXAMPLES = ROOT / "examples"
CTX = TaskContext(
    run_id="wf", task_id="t", attempt=1, idempotency_key="wf/t/1", method="python/execute"
)
OUTSIDE = "is outside the allowed script directories (STELLWERK_SCRIPT_DIRS)"


@pytest.fixture
def table() -> MethodTable:
    return build_method_table(script_dirs=[SCRIPTS])


async def execute(table: MethodTable, params: Any, timeout: float | None = None) -> Any:
    return await table.invoke("python/execute", params, CTX, timeout=timeout)


async def poll(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def read_pids(pid_file: Path) -> list[int]:
    return [int(p) for p in pid_file.read_text().split()]


# --- happy paths ----------------------------------------------------------------------------


def test_python_execute_is_listed_as_a_script_method(table: MethodTable) -> None:
    info = {i.name: i for i in table.infos()}["python/execute"]
    assert info.kind is MethodKind.SCRIPT


async def test_result_global_wins_over_printed_json(table: MethodTable) -> None:
    out = await execute(
        table, {"file": "context_sum.py", "context": {"numbers": [1, 2, 3], "label": "x"}}
    )
    assert out == {
        "result": {"total": 6, "label": "x", "big": 2**70},
        "output": '{"total": -1, "note": "printed, not the result"}\n',
        "success": True,
    }


async def test_first_json_line_is_the_result_when_none_is_set(table: MethodTable) -> None:
    out = await execute(table, {"file": "print_json.py"})
    assert out["result"] == {"numbers": [1, 2, 3], "count": 3}
    assert out["output"].startswith("starting up\n[NaN]\n")
    assert out["success"] is True


async def test_last_line_is_the_result_when_nothing_parses(table: MethodTable) -> None:
    out = await execute(table, {"file": "print_plain.py", "context": None})
    assert out["result"] == "last line"


async def test_silent_script_has_null_result(table: MethodTable) -> None:
    assert await execute(table, {"file": "silent.py"}) == {
        "result": None,
        "output": "",
        "success": True,
    }


async def test_sys_exit_zero_still_reports_result(table: MethodTable) -> None:
    assert (await execute(table, {"file": "exit_zero_result.py"}))["result"] == 5


async def test_script_imports_its_siblings_and_runs_as_main(table: MethodTable) -> None:
    out = await execute(table, {"file": "uses_sibling.py", "context": {"n": 21}})
    assert out["result"] == {
        "doubled": 42,
        "name": "__main__",
        "file": str(SCRIPTS / "uses_sibling.py"),
    }


async def test_non_utf8_output_is_replaced_not_fatal(table: MethodTable) -> None:
    out = await execute(table, {"file": "unicode_out.py"})
    assert out["result"] == "ünïcode"
    assert out["output"].startswith("grüße ✓\n")
    assert "\ufffd" in out["output"]


async def test_absolute_path_inside_allowed_dir_runs(table: MethodTable) -> None:
    out = await execute(table, {"file": str(SCRIPTS / "silent.py")})
    assert out["success"] is True


# --- failures -------------------------------------------------------------------------------


async def test_non_zero_exit_is_a_task_error_with_code_and_stderr(table: MethodTable) -> None:
    with pytest.raises(TaskError) as info:
        await execute(table, {"file": "exit_code.py"})
    message = info.value.message
    assert message.startswith("script 'exit_code.py' exited with code 3")
    assert "something went wrong in exit_code.py" in message


async def test_exception_in_script_is_a_task_error_with_the_traceback_tail(
    table: MethodTable,
) -> None:
    with pytest.raises(TaskError) as info:
        await execute(table, {"file": "raises.py"})
    message = info.value.message
    assert "exited with code 1" in message
    assert message.endswith("ValueError: boom from raises.py")


async def test_unserialisable_result_is_a_task_error(table: MethodTable) -> None:
    with pytest.raises(TaskError, match="set `result` to a value that is not JSON-serialisable"):
        await execute(table, {"file": "bad_result.py"})


async def test_timeout_kills_the_script(table: MethodTable, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(TaskError, match=r"^script 'sleeper.py' timed out after 1 s"):
        await execute(table, {"file": "sleeper.py", "context": {"pid_file": str(pid_file)}}, 1.0)
    assert time.monotonic() - started < 8
    assert pid_file.exists(), "the script should have started well within 1 s"
    pids = read_pids(pid_file)
    await poll(lambda: all(gone(pid) for pid in pids), "script and its child to die")


# The pid file lives in tmp_path: the script writes it by os.replace, which, run as root with
# "/dev/null" here, once replaced the machine's /dev/null with a regular file.
async def test_params_timeout_applies_when_the_task_has_none(
    table: MethodTable, tmp_path: Path
) -> None:
    context = {"pid_file": str(tmp_path / "pids")}
    with pytest.raises(TaskError, match=r"timed out after 0\.5 s"):
        await execute(table, {"file": "sleeper.py", "context": context, "timeout": 0.5})


async def test_task_timeout_bounds_params_timeout(table: MethodTable, tmp_path: Path) -> None:
    context = {"pid_file": str(tmp_path / "pids")}
    with pytest.raises(TaskError, match=r"timed out after 0\.5 s"):
        await execute(table, {"file": "sleeper.py", "context": context, "timeout": 60}, 0.5)


@pytest.mark.parametrize("bad", [0, -1, "10", True, float("inf")])
async def test_bad_params_timeout(table: MethodTable, bad: Any) -> None:
    with pytest.raises(TaskError, match="'timeout' must be a positive number"):
        await execute(table, {"file": "silent.py", "timeout": bad})


async def test_cancellation_kills_the_script_and_its_children(
    table: MethodTable, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    call = asyncio.create_task(
        execute(table, {"file": "sleeper.py", "context": {"pid_file": str(pid_file)}}, 60)
    )
    await poll(pid_file.exists, "the script to write its pid")
    pids = read_pids(pid_file)
    assert not any(gone(pid) for pid in pids)

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await poll(lambda: all(gone(pid) for pid in pids), "script and its child to die")


async def test_script_and_its_children_die_when_its_executor_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            from pathlib import Path
            from stellwerk.core.handlers import TaskContext
            from stellwerk.executor.methods import build_method_table

            async def main():
                table = build_method_table(script_dirs=[Path(sys.argv[1])])
                ctx = TaskContext("wf", "t", 1, "k", "python/execute")
                params = {"file": "sleeper.py", "context": {"pid_file": sys.argv[2]}}
                await table.invoke("python/execute", params, ctx, timeout=60)

            asyncio.run(main())
            """
        )
    )
    executor = subprocess.Popen([sys.executable, str(driver), str(SCRIPTS), str(pid_file)])
    pids: list[int] = []
    try:
        await poll(pid_file.exists, "the script to write its pid")
        pids = read_pids(pid_file)
        executor.kill()
        executor.wait(timeout=10)
        # PR_SET_PDEATHSIG reaches the script; it takes its process group, children too, along.
        await poll(lambda: all(gone(pid) for pid in pids), "the script and its child to die")
    finally:
        executor.kill()
        executor.wait(timeout=10)
        if pids:  # the script's process group still holds the grandchild
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pids[0], signal.SIGKILL)


async def test_stdout_beyond_the_limit_is_a_task_error(
    table: MethodTable, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_python_script, "_MAX_OUTPUT_BYTES", 1000)
    (tmp_path / "chatty.py").write_text("print('x' * 5000)\nresult = 1\n")
    table = build_method_table(script_dirs=[tmp_path])
    with pytest.raises(TaskError, match="wrote more than 1000 bytes to stdout"):
        await execute(table, {"file": "chatty.py"})


# --- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "'file' must be a non-empty path string"),
        ({"file": ""}, "'file' must be a non-empty path string"),
        ({"file": 3}, "'file' must be a non-empty path string"),
        ({"file": "sil\x00ent.py"}, "'file' must be a non-empty path string"),
        ({"file": "silent.py", "context": [1]}, "'context' must be an object, got list"),
        ({"file": "silent.py", "context": "{}"}, "'context' must be an object, got str"),
        ({"file": "silent.py", "context": {"x": float("nan")}}, "not JSON-serialisable"),
    ],
)
async def test_bad_arguments(table: MethodTable, params: Any, match: str) -> None:
    with pytest.raises(TaskError, match=match):
        await execute(table, params)


async def test_missing_file_is_a_task_error(table: MethodTable) -> None:
    with pytest.raises(TaskError, match=r"script 'no_such_script\.py' not found"):
        await execute(table, {"file": "no_such_script.py"})


# --- confinement ----------------------------------------------------------------------------


@pytest.fixture
def jail(tmp_path: Path) -> dict[str, Path]:
    """An allowed dir, a second allowed dir and a script outside that leaves a trace if run."""
    allowed, second = tmp_path / "allowed", tmp_path / "second"
    allowed.mkdir()
    second.mkdir()
    trace = tmp_path / "escaped.txt"
    outside = tmp_path / "outside.py"
    outside.write_text(f"open({str(trace)!r}, 'w').write('ran')\nresult = 'escaped'\n")
    (allowed / "inside.py").write_text("result = 'inside'\n")
    (second / "second.py").write_text("result = 'second'\n")
    return {"allowed": allowed, "second": second, "outside": outside, "trace": trace}


@pytest.fixture
def jail_table(jail: dict[str, Path]) -> MethodTable:
    return build_method_table(script_dirs=[jail["allowed"], jail["second"]])


async def expect_outside(table: MethodTable, file: str, trace: Path) -> None:
    with pytest.raises(TaskError) as info:
        await execute(table, {"file": file})
    assert info.value.message == f"script {file!r} {OUTSIDE}"
    assert not trace.exists(), "the outside script must not have run"


async def test_dotdot_escape_is_refused(jail_table: MethodTable, jail: dict[str, Path]) -> None:
    await expect_outside(jail_table, "../outside.py", jail["trace"])
    await expect_outside(jail_table, "sub/../../outside.py", jail["trace"])


async def test_absolute_path_outside_is_refused(
    jail_table: MethodTable, jail: dict[str, Path]
) -> None:
    await expect_outside(jail_table, str(jail["outside"]), jail["trace"])
    await expect_outside(jail_table, "/etc/passwd", jail["trace"])


async def test_symlink_escape_is_refused(jail_table: MethodTable, jail: dict[str, Path]) -> None:
    (jail["allowed"] / "link.py").symlink_to(jail["outside"])
    (jail["allowed"] / "subdir").symlink_to(jail["outside"].parent, target_is_directory=True)
    await expect_outside(jail_table, "link.py", jail["trace"])
    await expect_outside(jail_table, "subdir/outside.py", jail["trace"])


async def test_symlink_within_the_allowed_dir_is_fine(
    jail_table: MethodTable, jail: dict[str, Path]
) -> None:
    (jail["allowed"] / "alias.py").symlink_to(jail["allowed"] / "inside.py")
    assert (await execute(jail_table, {"file": "alias.py"}))["result"] == "inside"


async def test_relative_paths_use_the_first_dir_absolute_may_use_any(
    jail_table: MethodTable, jail: dict[str, Path]
) -> None:
    assert (await execute(jail_table, {"file": "inside.py"}))["result"] == "inside"
    with pytest.raises(TaskError, match=r"'second\.py' not found"):
        await execute(jail_table, {"file": "second.py"})
    absolute = str(jail["second"] / "second.py")
    assert (await execute(jail_table, {"file": absolute}))["result"] == "second"


async def test_symlink_loop_is_a_task_error(jail_table: MethodTable, jail: dict[str, Path]) -> None:
    (jail["allowed"] / "a.py").symlink_to(jail["allowed"] / "b.py")
    (jail["allowed"] / "b.py").symlink_to(jail["allowed"] / "a.py")
    with pytest.raises(TaskError, match=r"a\.py"):
        await execute(jail_table, {"file": "a.py"})


async def test_directory_and_fifo_are_not_scripts(
    jail_table: MethodTable, jail: dict[str, Path]
) -> None:
    (jail["allowed"] / "pkg").mkdir()
    os.mkfifo(jail["allowed"] / "pipe.py")
    for file in (".", "pkg", "pipe.py"):
        with pytest.raises(TaskError, match="is not a regular file"):
            await execute(jail_table, {"file": file}, timeout=5)


async def test_script_dir_given_through_a_symlink_works(
    jail: dict[str, Path], tmp_path: Path
) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(jail["allowed"], target_is_directory=True)
    table = build_method_table(script_dirs=[alias])
    assert (await execute(table, {"file": "inside.py"}))["result"] == "inside"
    assert (await execute(table, {"file": str(alias / "inside.py")}))["result"] == "inside"
    await expect_outside(table, "../outside.py", jail["trace"])


@pytest.mark.parametrize("make", ["missing", "file"])
def test_script_dirs_must_be_existing_directories(tmp_path: Path, make: str) -> None:
    target = tmp_path / "scripts"
    if make == "file":
        target.write_text("")
    with pytest.raises(InvalidArgumentError, match="STELLWERK_SCRIPT_DIRS"):
        build_method_table(script_dirs=[target])


# --- the examples ---------------------------------------------------------------------------


async def test_python_only_workflow_examples_chain() -> None:
    table = build_method_table(script_dirs=[EXAMPLES / "scripts"])

    generated = await execute(table, {"file": "generate_numbers.py", "context": {"seed": 7}})
    again = await execute(table, {"file": "generate_numbers.py", "context": {"seed": 7}})
    numbers = generated["result"]["numbers"]
    assert generated["result"] == again["result"], "generation must be deterministic"
    assert generated["result"]["count"] == 5
    assert len(numbers) == 5 and all(type(n) is int and 1 <= n <= 100 for n in numbers)

    summed = await execute(table, {"file": "calculate_sum.py", "context": {"numbers": numbers}})
    assert summed["result"] == {
        "sum": sum(numbers),
        "average": sum(numbers) / 5,
        "input_count": 5,
    }

    report = await execute(
        table,
        {
            "file": "format_report.py",
            "context": {"number_data": generated["result"], "sum_data": summed["result"]},
        },
    )
    assert report["result"]["success"] is True
    text = report["result"]["report"]
    assert f"sum:     {sum(numbers)}" in text
    assert ", ".join(map(str, numbers)) in text


async def test_calculate_sum_example_refuses_bad_input() -> None:
    table = build_method_table(script_dirs=[EXAMPLES / "scripts"])
    with pytest.raises(TaskError, match="must be a list of numbers"):
        await execute(table, {"file": "calculate_sum.py", "context": {"numbers": "1,2"}})


def test_python_only_workflow_yaml_uses_the_example_scripts() -> None:
    document = yaml.safe_load((EXAMPLES / "python_only_workflow.yaml").read_text())
    tasks = {task["id"]: task for task in document["tasks"]}
    assert list(tasks) == ["generate_data", "calculate_sum", "format_report"]
    for task in tasks.values():
        assert task["method"] == "python/execute"
        assert (EXAMPLES / "scripts" / task["parameters"]["file"]).is_file()
    assert tasks["calculate_sum"]["parameters"]["context"] == {
        "numbers": "${generate_data.result.numbers}"
    }
