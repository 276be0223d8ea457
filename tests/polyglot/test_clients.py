"""The Go and TypeScript clients and workers against a live stack (processes, real NATS).

`go test ./...` (clients/go) and `npm test` (clients/typescript) run with STELLWERK_ADDRESS
and STELLWERK_EXECUTOR_ADDRESS set; then one workflow runs its tasks in a Python built-in, a Go
worker and a TypeScript worker, and a Go worker killed mid-task loses its attempt to another.
Toolchains come from the machine, their packages from .tools/ (`make tools`, which `make test`
runs first); without them these tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from stellwerk_api.workflow.v1 import workflow_pb2 as pb
from stellwerk_api.workflow.v1 import workflow_service_pb2_grpc
from tests.e2e.helpers import result, submit, tasks_by_id, wait_done
from tests.polyglot.conftest import LEASE, PolyglotStack
from tests.support.processes import ROOT

GO_DIR = ROOT / "clients" / "go"
TS_DIR = ROOT / "clients" / "typescript"
TOOLS = ROOT / ".tools"

needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed")
needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (TS_DIR / "node_modules").is_dir(),
    reason="Node or clients/typescript/node_modules missing (run `make tools`)",
)
pytestmark = pytest.mark.timeout(300)


def _toolchain_env() -> dict[str, str]:
    env = dict(os.environ)
    # As mk/polyglot.mk sets them, for runs outside make.
    env.setdefault("GOMODCACHE", str(TOOLS / "go" / "mod"))
    env.setdefault("GOCACHE", str(TOOLS / "go" / "cache"))
    env.setdefault("GOFLAGS", "-modcacherw")
    env.setdefault("GOTOOLCHAIN", "local")
    env.setdefault("npm_config_cache", str(TOOLS / "npm"))
    env.setdefault("npm_config_update_notifier", "false")
    return env


def _stack_env(stack: PolyglotStack, executor: int = 0) -> dict[str, str]:
    return {
        **_toolchain_env(),
        "STELLWERK_ADDRESS": stack.address,
        "STELLWERK_EXECUTOR_ADDRESS": stack.executors[executor].address,
    }


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{output}"
    return output


@pytest.fixture(scope="module")
def go_worker_binary() -> Path:
    if shutil.which("go") is None:
        pytest.skip("Go is not installed")
    binary = TOOLS / "bin" / "stellwerk-go-worker"
    _run(["go", "build", "-o", str(binary), "./examples/worker"], GO_DIR, _toolchain_env())
    return binary


@pytest.fixture(scope="module")
def ts_built() -> Path:
    if shutil.which("node") is None or not (TS_DIR / "node_modules").is_dir():
        pytest.skip("Node or clients/typescript/node_modules missing (run `make tools`)")
    _run(["npm", "run", "--silent", "build"], TS_DIR, _toolchain_env())
    return TS_DIR / "dist"


class Worker:
    """A worker process; its output lines are queued as they come."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
        raise AssertionError(f"{text!r} not printed within {timeout} s:\n{''.join(self.output)}")

    def started(self) -> list[str]:
        return [line for line in self.output if line.startswith("started ")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
async def workflows(ready: PolyglotStack) -> Any:
    async with grpc.aio.insecure_channel(ready.address) as channel:
        yield workflow_service_pb2_grpc.WorkflowServiceStub(channel)


@needs_go
def test_go_client_and_worker_suite(ready: PolyglotStack) -> None:
    output = _run(["go", "test", "-count=1", "-v", "./..."], GO_DIR, _stack_env(ready))
    assert "--- SKIP" not in output, output
    for test in (
        "TestAWorkerServesAMethodInAWorkflow",
        "TestASagaEndsCompensatedWithRolesAndAttemptHistory",
        "TestRetryCountsRestartsAndCancelEndsARun",
        "TestValidateReportsEveryProblemAndListFindsRuns",
    ):
        assert f"--- PASS: {test}" in output, output


@needs_node
def test_typescript_client_and_worker_suite(ready: PolyglotStack) -> None:
    output = _run(["npm", "test", "--silent"], TS_DIR, _stack_env(ready, executor=1))
    assert "# skipped 0" in output and "# fail 0" in output, output


MIXED = {
    "name": "three languages",
    "tasks": [
        {"id": "sum", "method": "mcp/tool.add", "params": {"a": 40, "b": 2}},
        {
            "id": "shout",
            "method": "demo/go.shout",
            "dependencies": ["sum"],
            "params": {"text": "the sum is ${sum}"},
        },
        {
            "id": "wrap",
            "method": "demo/ts.wrap",
            "dependencies": ["shout"],
            "params": {"text": "${shout.shouted}", "left": "<<", "right": ">>"},
        },
        {
            "id": "say",
            "method": "mcp/tool.echo",
            "dependencies": ["wrap"],
            "params": {"message": "${wrap.wrapped} (${wrap.length} characters)"},
        },
    ],
}


async def test_one_workflow_runs_in_python_go_and_typescript(
    ready: PolyglotStack,
    workflows: Any,
    workers: list[Worker],
    go_worker_binary: Path,
    ts_built: Path,
) -> None:
    go = Worker([str(go_worker_binary), "-id", "go-1"], GO_DIR, _stack_env(ready, 0))
    ts = Worker(["node", "dist/examples/worker.js", "ts-1"], TS_DIR, _stack_env(ready, 1))
    workers += [go, ts]
    go.wait_for("registered")
    ts.wait_for("registered")
    run = await submit(workflows, json.dumps(MIXED))
    done = await wait_done(workflows, run.run_id)
    assert done.state == pb.RUN_STATE_COMPLETED, done.error
    tasks = tasks_by_id(done)
    assert result(tasks["shout"]) == {"shouted": "THE SUM IS 42!", "worker": "go-1"}
    assert result(tasks["wrap"])["worker"] == "ts-1"
    assert result(tasks["say"])["response"] == "<<THE SUM IS 42!>> (18 characters)"
    assert (tasks["shout"].executor_id, tasks["wrap"].executor_id) == ("poly-0", "poly-1")


async def test_a_worker_killed_mid_task_loses_it_to_another_exactly_once(
    ready: PolyglotStack, workflows: Any, workers: list[Worker], go_worker_binary: Path
) -> None:
    doc = {
        "name": "handover",
        "tasks": [
            {"id": "slow", "method": "demo/go.slow", "params": {"ms": 1500, "value": 7}},
            {
                "id": "after",
                "method": "mcp/tool.echo",
                "dependencies": ["slow"],
                "params": {"message": "${slow.value} by ${slow.worker}"},
            },
        ],
    }
    doomed = Worker([str(go_worker_binary), "-id", "go-doomed"], GO_DIR, _stack_env(ready, 0))
    workers.append(doomed)
    doomed.wait_for("registered")
    run = await submit(workflows, json.dumps(doc))
    taken = doomed.wait_for(f"started {run.run_id}/slow attempt 1")
    heir = Worker([str(go_worker_binary), "-id", "go-heir"], GO_DIR, _stack_env(ready, 1))
    workers.append(heir)
    heir.wait_for("registered")
    doomed.kill()  # SIGKILL mid-task: no answer, the stream just breaks
    handed = heir.wait_for(f"started {run.run_id}/slow attempt 1", timeout=4 * LEASE)
    assert handed.split(" key ")[1] == taken.split(" key ")[1]  # same idempotency key
    done = await wait_done(workflows, run.run_id)
    assert done.state == pb.RUN_STATE_COMPLETED, done.error
    tasks = tasks_by_id(done)
    assert result(tasks["slow"]) == {"value": 7, "worker": "go-heir"}
    assert result(tasks["after"])["response"] == "7 by go-heir"
    assert tasks["slow"].attempts == 1
    # Exactly once: the heir ran it once, and nobody is handed it again afterwards.
    await _quiet(LEASE)
    assert [line for line in heir.started() if run.run_id in line] == [handed]


async def _quiet(seconds: float) -> None:
    """Let a lease pass (a redelivery, were there one, would show up in that time)."""
    import asyncio

    await asyncio.sleep(seconds)
