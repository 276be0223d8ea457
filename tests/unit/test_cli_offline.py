"""The ``stellwerk`` CLI and the Python client without a real Stellwerk: offline validation,
exit codes, output shapes, and the client's error mapping and reconnects against a scripted
in-process fake of the resolver's gRPC API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from stellwerk.core.errors import (
    InvalidArgumentError,
    NotFoundError,
    Problem,
    StellwerkError,
    UnavailableError,
    WorkflowInvalidError,
)
from stellwerk.core.grpc_errors import status_for
from stellwerk.core.natsd import free_port
from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2 as api
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc as api_grpc
from stellwerk_client import Client, RunState, Validation, wait_for_health
from stellwerk_client._types import Run
from stellwerk_client.cli import main
from stellwerk_client.cli._children import exit_description, stop_all
from stellwerk_client.cli._dev import dev_environment
from stellwerk_client.cli._render import run_json, run_summary

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "0195f0a1b2c3d4e5f6a7b8"  # the shape of a run id (names.RUN_ID_PATTERN)
EXAMPLE = ROOT / "examples" / "simple_mcp_workflow.yaml"
STELLWERK = Path(sys.executable).parent / "stellwerk"

VALID = """\
name: two steps
tasks:
  - id: first
    method: mcp/tool.add
    params: {a: 1, b: 2}
  - id: second
    method: mcp/tool.multiply
    dependencies: [first]
    params: {a: "${first.result}", b: 3}
"""


def _write(tmp_path: Path, text: str, name: str = "wf.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _dead_address() -> str:
    return f"127.0.0.1:{free_port()}"


# -- validate (offline) ----------------------------------------------------------------------


def test_validate_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.strip() == "valid: 4 tasks"


def test_validate_json_reports_the_task_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", _write(tmp_path, VALID), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"valid": True, "tasks": 2}


def test_validate_json_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"tasks": [{"id": "a", "method": "mcp/tool.echo", "params": {"message": "hi"}}]}
    assert main(["validate", _write(tmp_path, json.dumps(doc), "wf.json")]) == 0
    assert "valid: 1 tasks" in capsys.readouterr().out


INVALID = {
    "invalid_yaml": ("tasks: [\n  - id: a\n", None, "document", "invalid YAML"),
    "not_a_mapping": ("- a\n- b\n", None, "document", "must be a mapping"),
    "empty": ("", None, "document", "empty"),
    "cycle": (
        "tasks:\n  - {id: a, method: m/x, dependencies: [b]}\n"
        "  - {id: b, method: m/x, dependencies: [a]}\n",
        "a",
        "dependencies",
        "circular dependency: a -> b -> a",
    ),
    "unknown_dependency": (
        "tasks:\n  - {id: a, method: m/x, dependencies: [ghost]}\n",
        "a",
        "dependencies",
        "ghost",
    ),
    "unknown_key": (
        "tasks:\n  - {id: a, method: m/x, colour: red}\n",
        "a",
        "colour",
        "unknown key",
    ),
    "priority_list": ("tasks:\n  - {id: a, method: m/x, priority: [1]}\n", "a", "priority", "[1]"),
    "negative_timeout": (
        "tasks:\n  - {id: a, method: m/x, timeout: -5}\n",
        "a",
        "timeout",
        "timeout",
    ),
    "batch": ("type: batch\ntasks: []\n", None, "type", "not supported"),
    "reference_outside_dependencies": (
        "tasks:\n  - {id: a, method: m/x}\n  - {id: b, method: m/x, params: {v: '${a.result}'}}\n",
        "b",
        "params",
        "add 'a' to dependencies",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_validate_reports_each_kind_of_problem(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, task, field_name, fragment = INVALID[case]
    path = _write(tmp_path, text)
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    matching = [line for line in err.splitlines() if fragment in line]
    assert matching, err
    prefix = f"task {task}: {field_name}: " if task else ""
    assert any(line.startswith(prefix) and field_name in line for line in matching), err

    assert main(["validate", path, "--json"]) == 2
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert any(e["task"] == task and fragment in e["message"] for e in errors), errors


def test_validate_lists_every_problem_once_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "tasks:\n"
        "  - {id: a, method: m/x, priority: [1], timeout: -5, colour: red}\n"
        "  - {id: b, method: m/x, dependencies: [ghost]}\n"
    )
    path = _write(tmp_path, text)
    assert main(["validate", path, "--json"]) == 2
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert list(document) == ["errors"]
    errors = document["errors"]
    assert all(list(e) == ["task", "field", "message"] for e in errors)
    assert {(e["task"], e["field"]) for e in errors} >= {
        ("a", "priority"),
        ("a", "timeout"),
        ("a", "colour"),
        ("b", "dependencies"),
    }
    # The same problems, one per line, on stderr.
    lines = captured.err.splitlines()
    assert len(lines) == len(errors)
    for error, line in zip(errors, lines, strict=True):
        assert line == f"task {error['task']}: {error['field']}: {error['message']}"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda tmp: str(tmp / "missing.yaml"), "no such file"),
        (lambda tmp: str(tmp), "not a workflow file"),
        (lambda tmp: str(_mkdir(tmp / "dir.yaml")), "cannot read"),
        (lambda tmp: _write(tmp, VALID, "wf.txt"), "not a workflow file"),
        (lambda tmp: _write_bytes(tmp / "latin1.yaml", b"name: caf\xe9\n"), "UTF-8"),
    ],
    ids=["missing", "directory", "directory_with_suffix", "wrong_suffix", "not_utf8"],
)
def test_unusable_files_exit_2_with_a_clear_message(
    make: Any, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(tmp_path)
    assert main(["validate", path]) == 2
    assert fragment in capsys.readouterr().err
    assert main(["validate", path, "--json"]) == 2
    (error,) = json.loads(capsys.readouterr().out)["errors"]
    assert fragment in error["message"]


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_unreadable_file_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(_write(tmp_path, VALID))
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    # chmod 000 would not stop root, which these tests may run as.
    monkeypatch.setattr(Path, "open", refuse)
    assert main(["validate", str(path)]) == 2
    assert "Permission denied" in capsys.readouterr().err


# -- commands that need the resolver, with nobody listening ----------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run", str(EXAMPLE)],
        ["run", str(EXAMPLE), "--json"],
        ["submit", str(EXAMPLE)],
        ["status", "0195f0a1b2c3d4e5f6a7b8"],
        ["status", "0195f0a1b2c3d4e5f6a7b8", "--json"],
        ["watch", "0195f0a1b2c3d4e5f6a7b8"],
        ["list"],
    ],
    ids=lambda argv: "-".join(a for a in argv if not a.startswith("/")),
)
def test_unreachable_resolver_exits_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    address = _dead_address()
    started = time.monotonic()
    assert main([*argv, "--address", address]) == 3
    assert time.monotonic() - started < 10, "an unreachable resolver must fail fast"
    captured = capsys.readouterr()
    assert address in captured.err
    assert "unavailable" in captured.err


def test_default_address_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    address = _dead_address()
    monkeypatch.setenv("STELLWERK_ADDRESS", address)
    assert main(["status", RUN_ID]) == 3
    assert address in capsys.readouterr().err


def test_malformed_server_settings_stop_dev_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STELLWERK_EXECUTOR_CONCURRENCY", "lots")
    assert main(["dev"]) == 2
    assert "STELLWERK_EXECUTOR_CONCURRENCY" in capsys.readouterr().err


def test_client_commands_read_only_the_address_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The client installs without the server's settings: a malformed server variable is none
    of its business (it would be the services' exit 2, not the CLI's)."""
    monkeypatch.setenv("STELLWERK_EXECUTOR_CONCURRENCY", "lots")
    monkeypatch.setenv("STELLWERK_ADDRESS", _dead_address())
    assert main(["status", RUN_ID]) == 3
    assert "STELLWERK_EXECUTOR_CONCURRENCY" not in capsys.readouterr().err


def test_run_validates_offline_before_contacting_the_resolver(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "tasks:\n  - {id: a, method: m/x, dependencies: [ghost]}\n")
    assert main(["run", path, "--address", _dead_address(), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["errors"][0]["field"] == "dependencies"
    assert "unavailable" not in captured.err
    assert main(["submit", path, "--address", _dead_address()]) == 2


# -- argument errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["run"],
        ["run", str(EXAMPLE), "--timeout", "-1"],
        ["run", str(EXAMPLE), "--timeout", "nan"],
        ["watch", "x", "--timeout", "soon"],
        ["list", "--page-size", "0"],
        ["list", "--state", "sleeping"],
        ["status"],
        ["validate"],
        ["dev", "--bogus"],
    ],
    ids=lambda argv: " ".join(argv) or "nothing",
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_serve_refuses_an_unknown_service(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "scheduler"]) == 2
    assert "unknown service 'scheduler'" in capsys.readouterr().err


def test_serve_execs_the_service_module_with_the_remaining_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[str]]] = []

    class ReplacedError(Exception):
        pass

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv))
        raise ReplacedError

    monkeypatch.setattr(os, "execv", fake_execv)
    with pytest.raises(ReplacedError):
        main(["serve", "executor", "--nats-url", "nats://h:1", "--concurrency", "3"])
    assert calls == [
        (
            sys.executable,
            [
                sys.executable,
                "-m",
                "stellwerk.executor",
                "--nats-url",
                "nats://h:1",
                "--concurrency",
                "3",
            ],
        )
    ]


def test_the_installed_console_script(tmp_path: Path) -> None:
    env = {**os.environ, "STELLWERK_ADDRESS": _dead_address()}
    ok = subprocess.run(
        [str(STELLWERK), "validate", str(EXAMPLE)], capture_output=True, text=True, timeout=60
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, "valid: 4 tasks")
    bad = subprocess.run(
        [str(STELLWERK), "validate", _write(tmp_path, "- 1\n"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["errors"][0]["field"] == "document"
    down = subprocess.run(
        [str(STELLWERK), "run", str(EXAMPLE)], capture_output=True, text=True, timeout=60, env=env
    )
    assert down.returncode == 3, down.stderr
    usage = subprocess.run([str(STELLWERK)], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2


# -- dev environment -------------------------------------------------------------------------


def test_dev_points_python_execute_at_the_examples(tmp_path: Path) -> None:
    (tmp_path / "examples" / "scripts").mkdir(parents=True)
    env = dev_environment("nats://127.0.0.1:1", tmp_path, {"PATH": "/bin"})
    assert env["STELLWERK_NATS_URL"] == "nats://127.0.0.1:1"
    assert env["PATH"] == "/bin"
    assert env["STELLWERK_SCRIPT_DIRS"].split(os.pathsep) == [
        str(tmp_path / "examples" / "scripts"),
        str(tmp_path / "examples"),
    ]


def test_dev_keeps_the_callers_script_dirs_and_skips_missing_ones(tmp_path: Path) -> None:
    env = dev_environment("nats://x:1", tmp_path, {"STELLWERK_SCRIPT_DIRS": "/mine"})
    assert env["STELLWERK_SCRIPT_DIRS"] == "/mine"
    assert "STELLWERK_SCRIPT_DIRS" not in dev_environment("nats://x:1", tmp_path, {})


def test_exit_descriptions_name_the_signal() -> None:
    assert exit_description(3) == "exited with code 3"
    assert exit_description(-9) == "exited with code -9 (killed by SIGKILL)"


def test_stop_all_kills_a_process_that_ignores_sigterm() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    started = time.monotonic()
    stop_all([stubborn, polite], grace=0.5)
    assert time.monotonic() - started < 10
    assert polite.returncode == -15
    assert stubborn.returncode == -9
    stubborn.stdout.close()


# -- rendering -------------------------------------------------------------------------------


def _finished_run(run_id: str = "r1") -> pb.Run:
    run = pb.Run(
        run_id=run_id,
        workflow_name="demo",
        workflow_id="demo-file",
        state=pb.RUN_STATE_COMPLETED,
        task_count=2,
    )
    run.create_time.FromSeconds(1_700_000_000)
    run.end_time.FromSeconds(1_700_000_002)
    done = run.tasks.add(
        task_id="sum",
        name="Add",
        method="mcp/tool.add",
        state=pb.TASK_STATE_COMPLETED,
        attempts=1,
        executor_id="ex-1",
        result_json='{"result": 100, "big": 123456789012345678901234567890, "ratio": 0.5}',
    )
    done.dispatch_time.FromSeconds(1_700_000_001)
    done.end_time.FromSeconds(1_700_000_002)
    run.tasks.add(task_id="never", name="never", method="m/x", state=pb.TASK_STATE_PENDING)
    return run


def test_run_json_keeps_json_types_and_shapes_every_field() -> None:
    document = run_json(Run.from_proto(_finished_run()))
    assert (document["run_id"], document["workflow_id"]) == ("r1", "demo-file")
    assert document["workflow_name"] == "demo"
    # The first release's keys stay, as documented aliases.
    assert document["id"] == "r1"
    assert document["workflow"] == "demo-file"
    assert document["state"] == "COMPLETED"
    assert document["created_at"] == "2023-11-14T22:13:20+00:00"
    assert document["error"] is None
    assert document["restarts"] == 0
    done = document["tasks"]["sum"]
    assert done["result"]["result"] == 100 and type(done["result"]["result"]) is int
    assert done["result"]["big"] == 123456789012345678901234567890
    assert done["result"]["ratio"] == 0.5
    assert (done["state"], done["attempts"], done["executor"]) == ("COMPLETED", 1, "ex-1")
    assert done["dispatched_at"] == "2023-11-14T22:13:21+00:00"
    never = document["tasks"]["never"]
    assert never == {
        "state": "PENDING",
        "result": None,
        "attempts": 0,
        "error": None,
        "name": "never",
        "method": "m/x",
        "executor": None,
        "dispatched_at": None,
        "ended_at": None,
        "retry_at": None,
        "role": "",
        "attempt_history": [],
    }
    # Exact big integers survive a round trip through the printed JSON.
    printed = json.loads(json.dumps(document))["tasks"]["sum"]["result"]["big"]
    assert printed == 123456789012345678901234567890


def test_human_summary_prints_results_as_compact_json() -> None:
    lines = run_summary(Run.from_proto(_finished_run()))
    assert lines[0] == "run r1 (demo): COMPLETED"
    assert any(
        line.split()
        == ["sum", "COMPLETED", '{"result":100,"big":123456789012345678901234567890,"ratio":0.5}']
        for line in lines
    ), lines


# -- against a scripted fake resolver ---------------------------------------------------------


def _abort(context: grpc.ServicerContext, exc: StellwerkError) -> None:
    code, status = status_for(exc)
    context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
    context.abort(code, exc.message)


@dataclass
class FakeResolver(api_grpc.WorkflowServiceServicer):
    """Answers like the resolver; ``watch_script`` decides what each WatchRun call does."""

    runs: dict[str, pb.Run] = field(default_factory=dict)
    watch_calls: int = 0
    watch_script: list[str] = field(default_factory=list)
    final_state: pb.RunState.ValueType = pb.RUN_STATE_COMPLETED
    submitted: list[api.StartRunRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def StartRun(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.submitted.append(request)
        if "unknown/method" in request.document and not request.allow_unregistered_methods:
            problem = Problem("a", "method", "unknown method 'unknown/method'")
            _abort(context, WorkflowInvalidError(problems=[problem]))
        run = _finished_run(f"run-{len(self.submitted)}")
        run.state = pb.RUN_STATE_RUNNING
        self.runs[run.run_id] = run
        return api.StartRunResponse(run=run)

    def ValidateWorkflow(self, request: Any, context: Any) -> Any:  # noqa: N802
        if "unknown/method" in request.document and not request.allow_unregistered_methods:
            return api.ValidateWorkflowResponse(
                problems=[
                    pb.ValidationProblem(task="a", field="method", message="unknown method"),
                    pb.ValidationProblem(field="name", message="too long"),
                ],
                task_count=1,
            )
        return api.ValidateWorkflowResponse(task_count=1)

    def GetRun(self, request: Any, context: Any) -> Any:  # noqa: N802
        if request.run_id not in self.runs:
            _abort(context, NotFoundError(f"no workflow run {request.run_id!r}"))
        return api.GetRunResponse(run=self.runs[request.run_id])

    def ListRuns(self, request: Any, context: Any) -> Any:  # noqa: N802
        ids = sorted(self.runs)
        start = int(request.page_token or 0)
        size = request.page_size or 50
        page = ids[start : start + size]
        token = str(start + size) if start + size < len(ids) else ""
        return api.ListRunsResponse(runs=[self.runs[i] for i in page], next_page_token=token)

    def WatchRun(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802
        with self.lock:
            self.watch_calls += 1
            step = self.watch_script.pop(0) if self.watch_script else "finish"
        run = self.runs.get(request.run_id)
        if run is None:
            _abort(context, NotFoundError(f"no workflow run {request.run_id!r}"))
            return
        if step == "unavailable":
            _abort(context, UnavailableError("NATS is down"))
        header = pb.Run(
            run_id=run.run_id, workflow_name=run.workflow_name, state=pb.RUN_STATE_RUNNING
        )
        yield api.WatchRunResponse(run=header)
        if step == "hang":
            time.sleep(30)  # the client's deadline ends this stream
            return
        if step == "end_early":
            return
        task = pb.TaskRun(task_id="sum", state=pb.TASK_STATE_RUNNING)
        yield api.WatchRunResponse(run=header, task=task)
        run.state = self.final_state
        header.state = run.state
        task.state = (
            pb.TASK_STATE_COMPLETED if run.state == pb.RUN_STATE_COMPLETED else pb.TASK_STATE_FAILED
        )
        yield api.WatchRunResponse(run=header, task=task)


@pytest.fixture
def fake() -> Iterator[tuple[FakeResolver, str]]:
    servicer = FakeResolver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    api_grpc.add_WorkflowServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_run_follows_to_completion_and_prints_json(
    fake: tuple[FakeResolver, str], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    argv = ["run", str(EXAMPLE), "--address", address, "--json", "--request-id", "req-7"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["state"] == "COMPLETED"
    assert document["tasks"]["sum"]["result"]["result"] == 100
    (request,) = servicer.submitted
    assert request.document == EXAMPLE.read_text(encoding="utf-8")
    assert (request.document_format, request.request_id) == ("yaml", "req-7")
    assert not request.allow_unregistered_methods


def test_run_human_mode_prints_state_changes_then_results(
    fake: tuple[FakeResolver, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = fake
    assert main(["run", str(EXAMPLE), "--address", address]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out.index("  sum: RUNNING") < out.index("  sum: COMPLETED")
    assert out[-3] == "run run-1 (demo): COMPLETED"
    assert '"result":100' in out[-2]


def test_run_exits_1_when_the_run_fails(fake: tuple[FakeResolver, str]) -> None:
    servicer, address = fake
    servicer.watch_script = ["end_early"] * 3
    servicer.final_state = pb.RUN_STATE_FAILED
    servicer.runs[RUN_ID] = _finished_run(RUN_ID)
    servicer.runs[RUN_ID].state = pb.RUN_STATE_RUNNING
    assert main(["watch", RUN_ID, "--address", address, "--json"]) == 1
    assert servicer.watch_calls == 4  # three streams that ended early, then the end


def test_server_side_validation_problems_are_listed(
    fake: tuple[FakeResolver, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = fake
    path = _write(tmp_path, "tasks:\n  - {id: a, method: unknown/method}\n")
    assert main(["run", path, "--address", address, "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "errors": [{"task": "a", "field": "method", "message": "unknown method 'unknown/method'"}]
    }
    assert captured.err.strip() == "task a: method: unknown method 'unknown/method'"
    assert main(["submit", path, "--address", address, "--allow-unregistered"]) == 0
    assert capsys.readouterr().out.strip() == "run-2"


def test_validate_with_an_address_asks_the_resolver_too(
    fake: tuple[FakeResolver, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = fake
    path = _write(tmp_path, "tasks:\n  - {id: a, method: unknown/method}\n")
    assert main(["validate", path]) == 0, "offline, methods are not checked"
    capsys.readouterr()
    assert main(["validate", path, "--address", address]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "task a: method: unknown method",
        "name: too long",
    ]
    assert main(["validate", path, "--address", address, "--allow-unregistered"]) == 0
    assert main(["validate", path, "--address", _dead_address()]) == 3


@pytest.mark.parametrize("run_id", ["x" * 5000, "ü", "a\tb", "run.>", "\udcff"])
def test_ids_that_cannot_be_run_ids_exit_2_without_a_call(
    run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A dead address: exit 2, not 3, shows no call was made.
    for command in ("status", "watch"):
        assert main([command, run_id, "--address", _dead_address()]) == 2
        err = capsys.readouterr().err
        assert "no workflow run" in err and len(err) < 300


def test_unknown_run_id_exits_2(
    fake: tuple[FakeResolver, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = fake
    missing = "0" * 22
    assert main(["status", missing, "--address", address, "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["errors"][0]["field"] == "id"
    assert main(["watch", missing, "--address", address]) == 2


def test_status_prints_the_run_whatever_its_state(
    fake: tuple[FakeResolver, str], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    servicer.runs[RUN_ID] = _finished_run(RUN_ID)
    servicer.runs[RUN_ID].state = pb.RUN_STATE_FAILED
    servicer.runs[RUN_ID].error = "task 'sum' failed"
    assert main(["status", RUN_ID, "--address", address, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["state"], document["error"]) == ("FAILED", "task 'sum' failed")


def test_watch_timeout_exits_4_and_names_the_run(
    fake: tuple[FakeResolver, str], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    servicer.runs[RUN_ID] = _finished_run(RUN_ID)
    servicer.runs[RUN_ID].state = pb.RUN_STATE_RUNNING
    servicer.watch_script = ["hang"] * 5
    started = time.monotonic()
    assert main(["watch", RUN_ID, "--address", address, "--timeout", "0.5"]) == 4
    assert time.monotonic() - started < 10
    assert RUN_ID in capsys.readouterr().out


def test_list_prints_one_line_per_run_and_follows_pages(
    fake: tuple[FakeResolver, str], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    for name in ("a", "b", "c"):
        servicer.runs[name] = _finished_run(name)
    assert main(["list", "--address", address, "--page-size", "2"]) == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == ["a", "b"]
    assert "--all" in captured.err
    assert main(["list", "--address", address, "--page-size", "2", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        [name, "COMPLETED", "demo"] for name in ("a", "b", "c")
    ]
    assert lines[0].split("\t")[3] == "2023-11-14T22:13:20+00:00"


async def test_wait_reconnects_after_a_broken_stream(fake: tuple[FakeResolver, str]) -> None:
    servicer, address = fake
    servicer.runs["r"] = _finished_run("r")
    servicer.runs["r"].state = pb.RUN_STATE_RUNNING
    servicer.watch_script = ["unavailable", "end_early", "finish"]
    async with await Client.connect(address, timeout=5) as client:
        run = await client.wait("r", timeout=20)
    assert run.state is RunState.COMPLETED
    assert servicer.watch_calls == 3


async def test_wait_gives_up_when_the_resolver_stays_away(fake: tuple[FakeResolver, str]) -> None:
    servicer, address = fake
    servicer.runs["r"] = _finished_run("r")
    servicer.watch_script = ["unavailable"] * 100
    async with await Client.connect(address, timeout=5) as client:
        with pytest.raises(UnavailableError):
            async for _ in client.watch("r", reconnect_window=0.5):
                pass
        with pytest.raises(TimeoutError):
            await client.wait("r", timeout=0.3)


async def test_client_errors_are_domain_errors(fake: tuple[FakeResolver, str]) -> None:
    _, address = fake
    async with await Client.connect(address) as client:
        with pytest.raises(NotFoundError):
            await client.get("missing")
        with pytest.raises(InvalidArgumentError):
            await client.submit(42)  # type: ignore[arg-type]
        with pytest.raises(WorkflowInvalidError) as invalid:
            await client.submit("tasks: [{id: a, method: unknown/method}]")
        assert invalid.value.problems == (
            Problem("a", "method", "unknown method 'unknown/method'"),
        )
    async with await Client.connect(_dead_address()) as client:
        with pytest.raises(UnavailableError):
            await client.get("x")


async def test_validate_returns_every_problem(fake: tuple[FakeResolver, str]) -> None:
    _, address = fake
    document = "tasks: [{id: a, method: unknown/method}]"
    async with await Client.connect(address) as client:
        assert await client.validate(document) == Validation(
            (Problem("a", "method", "unknown method"), Problem(None, "name", "too long")), 1
        )
        assert (await client.validate(document, allow_unregistered=True)).valid


async def test_connect_refuses_a_nonsense_timeout() -> None:
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InvalidArgumentError, match="timeout"):
            await Client.connect(_dead_address(), timeout=bad)


async def test_wait_for_health_is_false_when_nothing_listens() -> None:
    started = time.monotonic()
    assert await wait_for_health(_dead_address(), timeout=0.3) is False
    assert time.monotonic() - started < 5
