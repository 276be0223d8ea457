"""``stellwerk validate FILE``: offline validation; with ``--address``, the resolver's too."""

from __future__ import annotations

import argparse

from .._client import Client
from ..errors import StellwerkError, WorkflowInvalidError
from ._common import EXIT_OK, emit_json, exit_for_error, read_workflow_file
from ._runs import with_client

__all__ = ["cmd_validate"]

_PROG = "stellwerk validate"


async def cmd_validate(args: argparse.Namespace) -> int:
    """Print ``valid: N tasks`` (0) or every problem (2).

    Offline, methods are not checked (no server knows them); with ``--address`` the resolver
    validates the file as well, methods against its executors' registrations included.
    """
    try:
        workflow = read_workflow_file(args.file)
    except StellwerkError as exc:
        return exit_for_error(exc, prog=_PROG, address="", as_json=args.json)
    count = len(workflow.spec.tasks)

    async def remote(client: Client) -> int:
        verdict = await client.validate(
            workflow.text,
            document_format=workflow.format,
            allow_unregistered=args.allow_unregistered,
        )
        if not verdict.valid:
            raise WorkflowInvalidError(problems=verdict.problems)
        return _valid(count, as_json=args.json)

    if args.address is None:
        return _valid(count, as_json=args.json)
    return await with_client(args, _PROG, remote)


def _valid(count: int, *, as_json: bool) -> int:
    if as_json:
        emit_json({"valid": True, "tasks": count})
    else:
        print(f"valid: {count} tasks")
    return EXIT_OK
