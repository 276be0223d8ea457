"""Operator actions on runs: ``cancel``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .._client import Client
from ..wire import is_run_id
from ._common import EXIT_OK, emit_json
from ._render import run_json
from ._runs import unknown_id, with_client

__all__ = ["add_operator_commands", "cmd_cancel"]

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
