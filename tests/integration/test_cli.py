"""``stellwerk dev`` and the CLI against it, all as real processes: nats-server and the three
services started by ``stellwerk dev``, every command run as ``.venv/bin/stellwerk``."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stellwerk.core.natsd import NatsServer, free_port
from tests.support.polling import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
STELLWERK = Path(sys.executable).parent / "stellwerk"
SIMPLE = ROOT / "examples" / "simple_mcp_workflow.yaml"
PYTHON_ONLY = ROOT / "examples" / "python_only_workflow.yaml"
READY_DEADLINE = 60.0
UNREGISTERED = "name: orphan\ntasks:\n  - id: lonely\n    method: custom/nobody.registered\n"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Dev:
    """A running ``stellwerk dev`` and the environment that reaches it."""

    process: subprocess.Popen[str]
    env: dict[str, str]
    data_dir: Path
    ready_line: str = ""
    stderr: list[str] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``stellwerk ARGS`` as a subprocess against this stack."""
        return subprocess.run(
            [str(STELLWERK), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            timeout=timeout,
        )

    def service_pids(self) -> list[int]:
        """nats-server and the three services: the direct children of ``stellwerk dev``."""
        return eventually_sync(
            lambda: pids if len(pids := _children(self.process.pid)) >= 4 else None,
            timeout=10,
            message="four children of stellwerk dev",
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def _start_dev(data_dir: Path, *extra: str) -> Dev:
    ports = {name: free_port() for name in ("RESOLVER", "EXECUTOR", "MONITOR")}
    env = {
        **os.environ,
        **{f"STELLWERK_{name}_LISTEN": f"127.0.0.1:{port}" for name, port in ports.items()},
        "STELLWERK_ADDRESS": f"127.0.0.1:{ports['RESOLVER']}",
    }
    env.pop("STELLWERK_SCRIPT_DIRS", None)
    process = subprocess.Popen(
        [str(STELLWERK), "dev", "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    dev = Dev(process, env, data_dir)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    def pump_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            dev.stderr.append(line)

    threading.Thread(target=pump_stdout, daemon=True).start()
    threading.Thread(target=pump_stderr, daemon=True).start()
    deadline = time.monotonic() + READY_DEADLINE
    while not dev.ready_line:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(0.01, remaining))
        except queue.Empty:
            line = None
        if line is None:
            dev.stop()
            logs = "".join(dev.stderr)
            raise AssertionError(f"stellwerk dev not ready within {READY_DEADLINE} s:\n{logs}")
        if "ready" in line:
            dev.ready_line = line.strip()
    return dev


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    stack = _start_dev(tmp_path_factory.mktemp("dev"))
    try:
        yield stack
    finally:
        stack.stop()


def _run_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout.strip(), result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def _all_gone(pids: list[int], timeout: float) -> None:
    for pid in pids:
        eventually_sync(_gone(pid), timeout=timeout, message=f"pid {pid} ({_cmdline(pid)}) gone")


def _gone(pid: int) -> Callable[[], bool]:
    return lambda: not _alive(pid)


def test_ready_line_names_every_part(dev: Dev) -> None:
    for part in ("resolver", "executor", "monitor", "nats nats://"):
        assert part in dev.ready_line
    assert dev.env["STELLWERK_ADDRESS"] in dev.ready_line


def test_dev_gives_each_service_its_own_metrics_port(dev: Dev) -> None:
    metrics = dev.ready_line.rpartition("; metrics ")[2].split(", ")
    addresses = dict(part.split(" ", 1) for part in metrics)
    assert sorted(addresses) == ["executor", "monitor", "resolver"]
    assert len(set(addresses.values())) == 3
    for address in addresses.values():
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
            assert b"# TYPE" in reply.read()


def test_run_the_example_to_completion(dev: Dev) -> None:
    result = dev.cli("run", str(SIMPLE), "--json")
    assert result.returncode == 0, result.stderr
    document = _run_json(result)
    assert document["state"] == "COMPLETED"
    tasks = document["tasks"]
    assert isinstance(tasks, dict)
    combined = tasks["combine_results"]["result"]["response"]
    assert combined == "Hello from Simple MCP! | Sum was 100 | Product is 200"
    total = tasks["calculate_sum"]["result"]["result"]
    assert total == 100 and type(total) is int
    assert all(task["state"] == "COMPLETED" and task["attempts"] >= 1 for task in tasks.values())

    status = dev.cli("status", str(document["id"]), "--json")
    assert status.returncode == 0, status.stderr
    assert _run_json(status) == document


def test_run_human_mode_shows_progress_and_results(dev: Dev) -> None:
    result = dev.cli("run", str(SIMPLE))
    assert result.returncode == 0, result.stderr
    assert "COMPLETED" in result.stdout
    last = [line for line in result.stdout.splitlines() if "combine_results" in line][-1]
    assert "Hello from Simple MCP! | Sum was 100 | Product is 200" in last


def test_status_of_an_unknown_run_exits_2(dev: Dev) -> None:
    result = dev.cli("status", "nope")
    assert result.returncode == 2
    assert "nope" in result.stderr


def test_submit_then_watch(dev: Dev) -> None:
    submitted = dev.cli("submit", str(SIMPLE), "--request-id", "cli-test-1")
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    assert run_id
    again = dev.cli("submit", str(SIMPLE), "--request-id", "cli-test-1")
    assert again.stdout.strip() == run_id  # the same request id returns the same run
    watched = dev.cli("watch", run_id, "--json")
    assert watched.returncode == 0, watched.stderr
    document = _run_json(watched)
    assert (document["id"], document["state"]) == (run_id, "COMPLETED")


def test_unregistered_methods(dev: Dev, tmp_path: Path) -> None:
    path = tmp_path / "orphan.yaml"
    path.write_text(UNREGISTERED)
    refused = dev.cli("run", str(path), "--json")
    assert refused.returncode == 2
    (error,) = _run_json(refused)["errors"]
    assert error["task"] == "lonely" and error["field"] == "method"
    assert "task lonely: method:" in refused.stderr

    accepted = dev.cli("submit", str(path), "--allow-unregistered")
    assert accepted.returncode == 0, accepted.stderr
    run_id = accepted.stdout.strip()
    waited = dev.cli("watch", run_id, "--timeout", "1")
    assert waited.returncode == 4, waited.stderr
    assert run_id in waited.stdout
    ran = dev.cli("run", str(path), "--allow-unregistered", "--timeout", "1", "--json")
    assert ran.returncode == 4, ran.stderr
    assert _run_json(ran)["state"] == "RUNNING"


def test_list_shows_the_runs(dev: Dev) -> None:
    run = dev.cli("submit", str(SIMPLE))
    assert run.returncode == 0, run.stderr
    run_id = run.stdout.strip()
    listed = dev.cli("list", "--all")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert run_id in [row[0] for row in rows]
    states = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")
    assert all(len(row) == 4 and row[1] in states for row in rows)
    finished = dev.cli("list", "--state", "completed", "--all")
    assert all(line.split("\t")[1] == "COMPLETED" for line in finished.stdout.splitlines())


def test_python_only_example_completes(dev: Dev) -> None:
    if not PYTHON_ONLY.exists():
        pytest.skip("examples/python_only_workflow.yaml is not there")
    result = dev.cli("run", str(PYTHON_ONLY), "--json", "--timeout", "60", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _run_json(result)["state"] == "COMPLETED"


def test_sigterm_stops_everything_and_data_dir_keeps_runs(tmp_path: Path) -> None:
    dev = _start_dev(tmp_path / "data", "--sync-always")
    finished = dev.cli("run", str(SIMPLE), "--json")
    assert finished.returncode == 0, finished.stderr
    run_id = _run_json(finished)["id"]
    pids = dev.service_pids()
    dev.process.send_signal(signal.SIGTERM)
    assert dev.process.wait(timeout=60) == 0, "".join(dev.stderr)
    _all_gone(pids, timeout=10)
    store = tmp_path / "data" / "nats"
    assert "sync_interval: always" in (store / "nats.conf").read_text()

    again = _start_dev(tmp_path / "data")
    try:
        status = again.cli("status", run_id, "--json")
        assert status.returncode == 0, status.stderr
        assert _run_json(status)["state"] == "COMPLETED"
    finally:
        again.stop()


def test_dev_with_an_outside_nats_leaves_it_running(tmp_path: Path) -> None:
    nats = NatsServer.start_new(tmp_path / "outside")
    try:
        dev = _start_dev(tmp_path / "unused", "--nats-url", nats.url)
        assert f"nats {nats.url}; metrics " in dev.ready_line
        assert len(_children(dev.process.pid)) == 3  # no nats-server of its own
        finished = dev.cli("run", str(SIMPLE))
        assert finished.returncode == 0, finished.stderr
        dev.process.send_signal(signal.SIGTERM)
        assert dev.process.wait(timeout=60) == 0
        assert nats.process is not None and nats.process.poll() is None
    finally:
        nats.stop()


def test_a_dying_service_stops_dev(tmp_path: Path) -> None:
    dev = _start_dev(tmp_path / "data")
    pids = dev.service_pids()
    (executor,) = [pid for pid in pids if "stellwerk.executor" in _cmdline(pid)]
    os.kill(executor, signal.SIGKILL)
    assert dev.process.wait(timeout=60) == 1
    eventually_sync(
        lambda: any("executor exited with code -9" in line for line in dev.stderr),
        timeout=10,
        message="dev names the dead executor",
    )
    _all_gone(pids, timeout=10)


def test_children_die_with_a_sigkilled_dev(tmp_path: Path) -> None:
    dev = _start_dev(tmp_path / "data")
    pids = dev.service_pids()
    dev.process.kill()
    dev.process.wait(timeout=10)
    _all_gone(pids, timeout=30)


def test_cancel_then_watch_exits_1(dev: Dev, tmp_path: Path) -> None:
    path = tmp_path / "orphan.yaml"
    path.write_text(UNREGISTERED)  # nothing serves its method: it waits until cancelled
    submitted = dev.cli("submit", str(path), "--allow-unregistered")
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    cancelled = dev.cli("cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"run {run_id}" in cancelled.stdout and "CANCELLED" in cancelled.stdout
    again = dev.cli("cancel", run_id, "--json")  # idempotent
    assert again.returncode == 0 and _run_json(again)["state"] == "CANCELLED"
    watched = dev.cli("watch", run_id, "--json")
    assert watched.returncode == 1, watched.stderr
    document = _run_json(watched)
    assert document["state"] == "CANCELLED"
    assert {t["state"] for t in document["tasks"].values()} == {"CANCELLED"}
    assert dev.cli("cancel", "nope").returncode == 2
    listed = dev.cli("list", "--state", "cancelled", "--all")
    assert run_id in listed.stdout
