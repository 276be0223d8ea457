"""Client.retry / checkpoint / checkpoints / restore (and SyncClient's, and the CLI commands)
against the real stack: services as processes, a real nats-server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from stellwerk_client import (
    Checkpoint,
    Client,
    InvalidArgumentError,
    NotFoundError,
    RunState,
    SyncClient,
    TaskState,
    WrongStateError,
)
from stellwerk_client.cli import main
from tests.e2e.conftest import Stack


def _document(flag: Path) -> str:
    return (
        "tasks:\n"
        "  - {id: a, method: mcp/tool.add, params: {a: 1, b: 2}}\n"
        f"  - {{id: s, method: test/switch, dependencies: [a], params: {{flag: '{flag}'}}}}\n"
        "  - {id: c, method: mcp/tool.add, dependencies: [s], params: {a: '${a}', b: 1}}\n"
    )


async def _ended_again(client: Client, run_id: str, restarts: int) -> RunState:
    for _ in range(600):
        run = await client.get(run_id, tasks=False)
        if run.restarts == restarts and run.state.finished:
            return run.state
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end after restart {restarts}")


async def test_retry_checkpoint_restore_through_the_client(
    ready_stack: Stack, tmp_path: Path
) -> None:
    flag = tmp_path / "down"
    flag.write_text("")
    async with await Client.connect(ready_stack.resolver.address, timeout=10) as client:
        failed = await client.run(_document(flag), timeout=60)
        assert failed.state is RunState.FAILED and failed.restarts == 0
        taken = await client.checkpoint(failed.run_id, label="failed", request_id="cp")
        assert isinstance(taken, Checkpoint)
        assert (taken.run_id, taken.run_state, taken.completed_tasks, taken.label) == (
            failed.run_id,
            RunState.FAILED,
            1,
            "failed",
        )
        assert taken.created_at is not None
        assert await client.checkpoints(failed.run_id) == [taken]

        with pytest.raises(WrongStateError):  # a running run is refused
            running = await client.submit("tasks:\n  - {id: t, method: test/cancellable}\n")
            try:
                await client.retry(running.run_id)
            finally:
                await client.cancel(running.run_id)
        with pytest.raises(NotFoundError) as unknown:
            await client.retry(failed.run_id, from_tasks=["no-such-task"])
        assert "no-such-task" in str(unknown.value)
        with pytest.raises(InvalidArgumentError):
            await client.checkpoint(failed.run_id, label="x" * 300)
        with pytest.raises(NotFoundError):
            await client.restore("../etc")

        flag.unlink()
        again = await client.retry(failed.run_id, request_id="fix")
        assert again.restarts == 1
        assert await _ended_again(client, failed.run_id, 1) is RunState.COMPLETED
        done = await client.get(failed.run_id)
        assert done.task("s").state is TaskState.COMPLETED and done.task("s").attempts == 2
        assert done.results["c"]["result"] == 4

        rewound = await client.restore(taken.checkpoint_id)
        assert rewound.restarts == 2
        assert await _ended_again(client, failed.run_id, 2) is RunState.COMPLETED
        restored = await client.get(failed.run_id)
        assert restored.task("s").attempts == 3 and restored.results["c"]["result"] == 4

    def blocking() -> tuple[int, int, int]:
        with SyncClient.connect(ready_stack.resolver.address) as sync:
            listed = sync.checkpoints(failed.run_id)
            retried = sync.retry(failed.run_id, from_tasks=["c"], request_id="sync")
            again = sync.retry(failed.run_id, from_tasks=["c"], request_id="sync")  # idempotent
            sync.checkpoint(failed.run_id)
            return len(listed), retried.restarts, again.restarts

    assert await asyncio.to_thread(blocking) == (1, 3, 3)


async def test_cli_retry_checkpoint_checkpoints_restore(
    ready_stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flag = tmp_path / "down"
    flag.write_text("")
    address = ready_stack.resolver.address
    async with await Client.connect(address, timeout=10) as client:
        failed = await client.run(_document(flag), timeout=60)

    def cli(*argv: str) -> tuple[int, str]:
        code = main([*argv, "--address", address])
        return code, capsys.readouterr().out

    code, out = await asyncio.to_thread(cli, "checkpoint", failed.run_id, "--label", "v1")
    assert code == 0 and "checkpoint " in out and "'v1'" in out and "1 tasks completed" in out
    code, out = await asyncio.to_thread(cli, "checkpoints", failed.run_id, "--json")
    listed = json.loads(out)
    assert code == 0 and [c["label"] for c in listed] == ["v1"]
    assert listed[0]["run_state"] == "FAILED" and listed[0]["completed_tasks"] == 1
    flag.unlink()
    code, out = await asyncio.to_thread(cli, "retry", failed.run_id, "--json")
    assert code == 0 and json.loads(out)["restarts"] == 1
    async with await Client.connect(address, timeout=10) as client:
        assert await _ended_again(client, failed.run_id, 1) is RunState.COMPLETED
    code, out = await asyncio.to_thread(cli, "retry", failed.run_id, "--from", "c", "--from", "s")
    assert code == 0 and f"run {failed.run_id}" in out and "(restarts 2)" in out
    async with await Client.connect(address, timeout=10) as client:
        assert await _ended_again(client, failed.run_id, 2) is RunState.COMPLETED
    code, out = await asyncio.to_thread(cli, "restore", listed[0]["checkpoint_id"])
    assert code == 0 and "(restarts 3)" in out

    # Refusals: unknown or malformed ids exit 2 (no call for a malformed one); a task the run
    # lacks, 2; a completed run with nothing to re-run (no --from), 1 (FAILED_PRECONDITION).
    assert (await asyncio.to_thread(cli, "retry", "nope"))[0] == 2
    assert (await asyncio.to_thread(cli, "retry", failed.run_id, "--from", "zz"))[0] == 2
    assert (await asyncio.to_thread(cli, "restore", "../x"))[0] == 2
    assert (await asyncio.to_thread(cli, "restore", "0" * 22))[0] == 2
    assert (await asyncio.to_thread(cli, "checkpoints", "x" * 300))[0] == 2
    code, _ = await asyncio.to_thread(cli, "checkpoint", failed.run_id, "--label", "l" * 300)
    assert code == 2
    async with await Client.connect(address, timeout=10) as client:
        assert await _ended_again(client, failed.run_id, 3) is RunState.COMPLETED
    assert (await asyncio.to_thread(cli, "retry", failed.run_id))[0] == 1
