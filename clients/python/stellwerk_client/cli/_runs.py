"""The commands that talk to the resolver: run, submit, status, watch, list.

``run`` and ``watch`` follow the run: in a terminal with a live display (``_live``), otherwise
one plain line per change; ``--json`` prints only the final document.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from rich.console import Console

from .._client import Client
from .._types import Run, RunChange, RunState, TaskState
from ..errors import NotFoundError, StellwerkError, shorten
from ..wire import is_run_id
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    default_address,
    emit_json,
    exit_for_error,
    read_workflow_file,
)
from ._live import LiveRun
from ._render import attempt_lines, iso_time, run_json, run_summary, task_change_line

__all__ = [
    "STATE_NAMES",
    "cmd_list",
    "cmd_run",
    "cmd_status",
    "cmd_submit",
    "cmd_watch",
    "unknown_id",
    "with_client",
]

STATE_NAMES = tuple(state.value for state in RunState if state is not RunState.UNSPECIFIED)

_Body = Callable[[Client], Awaitable[int]]


async def _plain(client: Client, run_id: str, timeout: float | None) -> None:  # noqa: ASYNC109
    """One line per task state seen (a renewed watch repeats states: each is printed once)."""
    seen: dict[str, TaskState] = {}
    async for change in client.watch(run_id, timeout=timeout):
        task = change.task
        if task is not None and seen.get(task.task_id) is not task.state:
            seen[task.task_id] = task.state
            print(task_change_line(task), flush=True)


async def _live(client: Client, run_id: str, timeout: float | None) -> None:  # noqa: ASYNC109
    """The live display: every task of the run (read first), updated with each change."""
    console = Console(highlight=False)
    changes = client.watch(run_id, timeout=timeout)
    with LiveRun(console, await client.get(run_id, tasks=True)) as live:
        change: RunChange
        async for change in changes:
            live.update(change.run, change.task)


async def _follow(
    client: Client,
    run_id: str,
    *,
    as_json: bool,
    timeout: float | None,  # noqa: ASYNC109 -- the --timeout flag, passed to watch()
) -> int:
    """Follow a run to its end, print it, and return 0 (COMPLETED), 1 (FAILED) or 4 (timeout)."""
    timed_out = False
    try:
        if as_json:
            async for _ in client.watch(run_id, timeout=timeout):
                pass
        elif sys.stdout.isatty():
            await _live(client, run_id, timeout)
        else:
            await _plain(client, run_id, timeout)
    except TimeoutError:
        timed_out = True
    run = await client.get(run_id, tasks=True)
    if timed_out and not run.finished:
        if as_json:
            emit_json(run_json(run))
        else:
            print(
                f"run {run_id} is still {run.state.value} after {timeout:g} s; "
                f"follow it with: stellwerk watch {run_id}",
                flush=True,
            )
        return EXIT_TIMEOUT
    _print_run(run, as_json=as_json)
    return EXIT_OK if run.state is RunState.COMPLETED else EXIT_FAILED


def _print_run(run: Run, *, as_json: bool) -> None:
    if as_json:
        breakers = [
            {
                "scope": b.scope,
                "state": b.state.value,
                "failures": b.failures,
                "retry_time": b.retry_at.isoformat() if b.retry_at else None,
            }
            for b in run.breakers
        ]
        emit_json({**run_json(run), "breakers": breakers})
    else:
        print("\n".join(run_summary(run)), flush=True)
        for b in run.breakers:  # circuit breakers that hold (part of) the run
            trial = f", trial at {b.retry_at:%H:%M:%S}Z" if b.retry_at else ""
            print(f"  breaker {b.scope}: {b.state.value} ({b.failures} failures{trial})")


async def with_client(args: argparse.Namespace, prog: str, body: _Body) -> int:
    """Run ``body`` with a client of the resolver at ``--address`` (or the default); domain
    errors become the CLI's exit codes."""
    address = args.address or ""
    try:
        address = address or default_address()
        async with await Client.connect(address) as client:
            return await body(client)
    except StellwerkError as exc:
        return exit_for_error(exc, prog=prog, address=address, as_json=getattr(args, "json", False))


def unknown_id(run_id: str, prog: str, *, as_json: bool) -> int:
    """An id without the shape of a run id names no run: exit 2 without asking the server."""
    error = NotFoundError(
        f"no workflow run {shorten(run_id)} (run ids are 22 lowercase hex digits)"
    )
    return exit_for_error(error, prog=prog, address="", as_json=as_json)


async def cmd_run(args: argparse.Namespace) -> int:
    """``stellwerk run FILE``: validate offline, submit, follow, report."""
    try:
        workflow = read_workflow_file(args.file)
    except StellwerkError as exc:
        return exit_for_error(exc, prog="stellwerk run", address="", as_json=args.json)

    async def body(client: Client) -> int:
        run = await client.submit(
            workflow.text,
            document_format=workflow.format,
            request_id=args.request_id or "",
            allow_unregistered=args.allow_unregistered,
        )
        if not args.json:
            print(
                f"run {run.run_id} submitted ({run.workflow_name}, {run.task_count} tasks)",
                flush=True,
            )
        return await _follow(client, run.run_id, as_json=args.json, timeout=args.timeout)

    return await with_client(args, "stellwerk run", body)


async def cmd_submit(args: argparse.Namespace) -> int:
    """``stellwerk submit FILE``: validate offline, submit, print the run id."""
    try:
        workflow = read_workflow_file(args.file)
    except StellwerkError as exc:
        return exit_for_error(exc, prog="stellwerk submit", address="", as_json=False)

    async def body(client: Client) -> int:
        run = await client.submit(
            workflow.text,
            document_format=workflow.format,
            request_id=args.request_id or "",
            allow_unregistered=args.allow_unregistered,
        )
        print(run.run_id, flush=True)
        return EXIT_OK

    return await with_client(args, "stellwerk submit", body)


async def cmd_status(args: argparse.Namespace) -> int:
    """``stellwerk status ID``: print a run (0 whatever its state)."""

    if not is_run_id(args.id):
        return unknown_id(args.id, "stellwerk status", as_json=args.json)

    async def body(client: Client) -> int:
        run = await client.get(args.id, tasks=True)
        _print_run(run, as_json=args.json)
        if args.attempts and not args.json:  # --json always carries attempt_history
            print("attempts:\n" + "\n".join(attempt_lines(run)), flush=True)
        return EXIT_OK

    return await with_client(args, "stellwerk status", body)


async def cmd_watch(args: argparse.Namespace) -> int:
    """``stellwerk watch ID``: follow a run to its end, as ``run`` does after submitting."""
    if not is_run_id(args.id):
        return unknown_id(args.id, "stellwerk watch", as_json=args.json)

    async def body(client: Client) -> int:
        if not args.json:
            run = await client.get(args.id, tasks=False)
            print(f"run {run.run_id} ({run.workflow_name}): {run.state.value}", flush=True)
        return await _follow(client, args.id, as_json=args.json, timeout=args.timeout)

    return await with_client(args, "stellwerk watch", body)


async def cmd_list(args: argparse.Namespace) -> int:
    """``stellwerk list``: one tab-separated line per run: id, state, name, created."""
    state = RunState(args.state) if args.state else None

    async def body(client: Client) -> int:
        token = ""
        while True:
            page = await client.list_page(state=state, page_size=args.page_size, page_token=token)
            for run in page.runs:
                created = iso_time(run.created_at) or "-"
                print(
                    f"{run.run_id}\t{run.state.value}\t{run.workflow_name}\t{created}", flush=True
                )
            token = page.next_page_token
            if not token:
                return EXIT_OK
            if not args.all:
                print("(more runs: use --all to list them all)", file=sys.stderr)
                return EXIT_OK

    return await with_client(args, "stellwerk list", body)
