"""``stellwerk serve SERVICE ...``: become one service process, exactly as a container runs it."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from ._common import EXIT_FAILED, EXIT_INVALID

__all__ = ["SERVICES", "cmd_serve", "server_missing", "service_command"]

SERVICES = ("resolver", "executor", "monitor")
"""The services ``serve`` and ``dev`` start, in start order."""


def server_missing(command: str) -> str | None:
    """Why ``stellwerk COMMAND`` cannot run here (the server is not installed), else ``None``.

    The client distribution installs without the server; ``serve`` and ``dev`` start services,
    so they need it.
    """
    try:
        found = importlib.util.find_spec("stellwerk.resolver") is not None
    except ImportError:  # no top-level ``stellwerk`` package at all
        found = False
    if found:
        return None
    return (
        f"stellwerk {command}: the Stellwerk server is not installed here (only the client is); "
        "install the server distribution `stellwerk` (e.g. `pip install .` in a clone) to run "
        "services"
    )


def service_command(name: str, args: list[str]) -> list[str]:
    """The argv of a service process: ``python -m stellwerk.<name> ARGS``."""
    return [sys.executable, "-m", f"stellwerk.{name}", *args]


def cmd_serve(args: argparse.Namespace) -> int:
    """Replace this process by the service (the service parses the remaining flags)."""
    if args.service not in SERVICES:
        choices = ", ".join(SERVICES)
        message = f"unknown service {args.service!r}; choose one of {choices}"
        print(f"stellwerk serve: {message}", file=sys.stderr)
        return EXIT_INVALID
    if (missing := server_missing("serve")) is not None:
        print(missing, file=sys.stderr)
        return EXIT_FAILED
    argv = service_command(args.service, list(args.service_args))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(argv[0], argv)
    except OSError as exc:
        print(f"stellwerk serve: cannot start {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_FAILED
