"""Operator actions on runs: ``cancel``, ``retry``, ``checkpoint``, ``checkpoints``,
``restore``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .._client import Client
from .._operations import Checkpoint
from .._types import Run
from ..errors import NotFoundError, shorten
from ..wire import is_run_id
from ._common import EXIT_OK, emit_json, exit_for_error
from ._render import iso_time, run_json
from ._runs import unknown_id, with_client

__all__ = [
    "add_operator_commands",
    "cmd_cancel",
    "cmd_checkpoint",
    "cmd_checkpoints",
    "cmd_restore",
    "cmd_retry",
]

ArgumentAdder = Callable[[argparse.ArgumentParser], None]
JsonAdder = Callable[[argparse.ArgumentParser, str], None]


def add_operator_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    address: ArgumentAdder,
    as_json: JsonAdder,
) -> None:
    """The parsers of the operator commands."""
    cancel = commands.add_parser(
        "cancel",
        help="cancel a running run: nothing more starts, running handlers are cancelled",
    )
    cancel.add_argument("id", metavar="ID", help="run id")
    cancel.add_argument("--request-id", metavar="ID", help="idempotency key (cancel is idempotent)")
    address(cancel)
    as_json(cancel, "the cancelled run")

    retry = commands.add_parser(
        "retry",
        help="run again what did not complete in an ended run (keeping completed results)",
    )
    retry.add_argument("id", metavar="ID", help="run id")
    retry.add_argument(
        "--from",
        dest="from_tasks",
        metavar="TASK",
        action="append",
        default=[],
        help="also run TASK and everything downstream of it again (repeatable)",
    )
    retry.add_argument("--request-id", metavar="ID", help="idempotency key")
    address(retry)
    as_json(retry, "the run, running again")

    take = commands.add_parser("checkpoint", help="save a checkpoint of a run's state and results")
    take.add_argument("id", metavar="ID", help="run id")
    take.add_argument("--label", default="", help="a label for people (at most 256 characters)")
    take.add_argument("--request-id", metavar="ID", help="idempotency key")
    address(take)
    as_json(take, "the checkpoint")

    listing = commands.add_parser("checkpoints", help="list a run's checkpoints, oldest first")
    listing.add_argument("id", metavar="ID", help="run id")
    address(listing)
    as_json(listing, "the checkpoints")

    restore = commands.add_parser(
        "restore",
        help="rewind a run to a checkpoint and resume it (a running run is cancelled first)",
    )
    restore.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint id")
    restore.add_argument("--request-id", metavar="ID", help="idempotency key")
    address(restore)
    as_json(restore, "the run, rewound")


async def cmd_cancel(args: argparse.Namespace) -> int:
    """``stellwerk cancel ID``: cancel a run (idempotent); 0 once it is CANCELLED."""
    if not is_run_id(args.id):
        return unknown_id(args.id, "stellwerk cancel", as_json=args.json)

    async def body(client: Client) -> int:
        run = await client.cancel(args.id, request_id=args.request_id or None)
        if args.json:
            emit_json(run_json(run))
        else:
            print(f"run {run.run_id} ({run.workflow_name}): {run.state.value}", flush=True)
        return EXIT_OK

    return await with_client(args, "stellwerk cancel", body)


def _run_line(run: Run) -> str:
    return f"run {run.run_id} ({run.workflow_name}): {run.state.value} (restarts {run.restarts})"


async def cmd_retry(args: argparse.Namespace) -> int:
    """``stellwerk retry ID [--from TASK]...``: re-run an ended run's unfinished part."""
    if not is_run_id(args.id):
        return unknown_id(args.id, "stellwerk retry", as_json=args.json)

    async def body(client: Client) -> int:
        run = await client.retry(
            args.id, from_tasks=args.from_tasks, request_id=args.request_id or None
        )
        if args.json:
            emit_json(run_json(run))
        else:
            print(_run_line(run), flush=True)
        return EXIT_OK

    return await with_client(args, "stellwerk retry", body)


def checkpoint_json(checkpoint: Checkpoint) -> dict[str, Any]:
    """The JSON document of one checkpoint (``checkpoint``, ``checkpoints --json``)."""
    return {
        "checkpoint_id": checkpoint.checkpoint_id,
        "run_id": checkpoint.run_id,
        "created_at": iso_time(checkpoint.created_at),
        "run_state": checkpoint.run_state.value,
        "completed_tasks": checkpoint.completed_tasks,
        "label": checkpoint.label,
    }


def _checkpoint_line(checkpoint: Checkpoint) -> str:
    label = f" {checkpoint.label!r}" if checkpoint.label else ""
    return (
        f"checkpoint {checkpoint.checkpoint_id}{label}: run {checkpoint.run_id} "
        f"{checkpoint.run_state.value}, {checkpoint.completed_tasks} tasks completed, "
        f"{iso_time(checkpoint.created_at)}"
    )


async def cmd_checkpoint(args: argparse.Namespace) -> int:
    """``stellwerk checkpoint ID [--label L]``: save a checkpoint; prints it."""
    if not is_run_id(args.id):
        return unknown_id(args.id, "stellwerk checkpoint", as_json=args.json)

    async def body(client: Client) -> int:
        taken = await client.checkpoint(
            args.id, label=args.label, request_id=args.request_id or None
        )
        if args.json:
            emit_json(checkpoint_json(taken))
        else:
            print(_checkpoint_line(taken), flush=True)
        return EXIT_OK

    return await with_client(args, "stellwerk checkpoint", body)


async def cmd_checkpoints(args: argparse.Namespace) -> int:
    """``stellwerk checkpoints ID``: a run's checkpoints, oldest first, one line each."""
    if not is_run_id(args.id):
        return unknown_id(args.id, "stellwerk checkpoints", as_json=args.json)

    async def body(client: Client) -> int:
        found = await client.checkpoints(args.id)
        if args.json:
            emit_json([checkpoint_json(c) for c in found])
        else:
            for checkpoint in found:
                print(_checkpoint_line(checkpoint), flush=True)
        return EXIT_OK

    return await with_client(args, "stellwerk checkpoints", body)


async def cmd_restore(args: argparse.Namespace) -> int:
    """``stellwerk restore CHECKPOINT``: rewind the checkpoint's run and resume it."""
    if not is_run_id(args.checkpoint):  # checkpoint ids have the shape of run ids
        error = NotFoundError(
            f"no checkpoint {shorten(args.checkpoint)} (checkpoint ids are 22 lowercase hex digits)"
        )
        return exit_for_error(error, prog="stellwerk restore", address="", as_json=args.json)

    async def body(client: Client) -> int:
        run = await client.restore(args.checkpoint, request_id=args.request_id or None)
        if args.json:
            emit_json(run_json(run))
        else:
            print(_run_line(run), flush=True)
        return EXIT_OK

    return await with_client(args, "stellwerk restore", body)
