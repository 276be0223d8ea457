"""``stellwerk validate FILE``: offline validation, no server needed."""

from __future__ import annotations

import argparse

from stellwerk.core.errors import StellwerkError

from ._common import EXIT_OK, emit_json, exit_for_error, read_workflow_file

__all__ = ["cmd_validate"]


def cmd_validate(args: argparse.Namespace) -> int:
    """Print ``valid: N tasks`` (0) or every problem (2). Methods are not checked offline."""
    try:
        workflow = read_workflow_file(args.file)
    except StellwerkError as exc:
        return exit_for_error(exc, prog="stellwerk validate", address="", as_json=args.json)
    count = len(workflow.spec.tasks)
    if args.json:
        emit_json({"valid": True, "tasks": count})
    else:
        print(f"valid: {count} tasks")
    return EXIT_OK
