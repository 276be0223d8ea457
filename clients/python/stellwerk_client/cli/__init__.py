"""The ``stellwerk`` command line: ``serve``, ``dev``, ``run``, ``submit``, ``status``,
``watch``, ``list``, ``validate``, ``health``, ``explain``, ``cancel``, ``retry``,
``checkpoint``, ``checkpoints`` and ``restore``.

Exit codes: 0 success (a run COMPLETED), 1 the run FAILED, was CANCELLED or COMPENSATED, or an
unexpected error, 2 invalid input or unknown run id, 3 resolver unreachable or UNAVAILABLE, 4
``--timeout`` expired while the run goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ._common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
)
from ._inspect import cmd_explain, cmd_health
from ._operator import cmd_cancel, cmd_checkpoint, cmd_checkpoints, cmd_restore, cmd_retry
from ._parser import build_parser
from ._runs import cmd_list, cmd_run, cmd_status, cmd_submit, cmd_watch
from ._serve import cmd_serve, server_missing
from ._validate import cmd_validate

__all__ = [
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "build_parser",
    "main",
]

_EXIT_INTERRUPTED = 130


def _cmd_dev(args: argparse.Namespace) -> int:
    """``stellwerk dev``, imported only here: it needs the server (nats-server, settings)."""
    if (missing := server_missing("dev")) is not None:
        print(missing, file=sys.stderr)
        return EXIT_FAILED
    from ._dev import cmd_dev

    return cmd_dev(args)


_SYNC: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "dev": _cmd_dev,
}
_ASYNC: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "run": cmd_run,
    "submit": cmd_submit,
    "status": cmd_status,
    "watch": cmd_watch,
    "list": cmd_list,
    "validate": cmd_validate,
    "health": cmd_health,
    "explain": cmd_explain,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "checkpoint": cmd_checkpoint,
    "checkpoints": cmd_checkpoints,
    "restore": cmd_restore,
}


def main(argv: list[str] | None = None) -> int:
    """Run one ``stellwerk`` command and return its exit code (bad arguments exit 2)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in _SYNC:
            return _SYNC[args.command](args)
        return asyncio.run(_ASYNC[args.command](args))
    except KeyboardInterrupt:
        print("stellwerk: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED
