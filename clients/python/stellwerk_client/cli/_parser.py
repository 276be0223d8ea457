"""The ``stellwerk`` argument parser."""

from __future__ import annotations

import argparse
import math

from ._operator import add_operator_commands
from ._runs import STATE_NAMES

__all__ = ["build_parser"]

_ADDRESS_HELP = "resolver HOST:PORT (default: $STELLWERK_ADDRESS or 127.0.0.1:50051)"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", metavar="HOST:PORT", help=_ADDRESS_HELP)


def _json(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON document")


def _submission(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="workflow file (.yaml, .yml or .json)")
    _address(parser)
    parser.add_argument(
        "--request-id", metavar="ID", help="idempotency key: a repeat returns the same run"
    )
    parser.add_argument(
        "--allow-unregistered",
        action="store_true",
        help="accept methods no executor has registered (yet)",
    )


def _timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="stop waiting after S seconds (exit 4; the run goes on)",
    )


def _add_serve_and_dev(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run one service (resolver, executor or monitor) in this process",
        description="Run one service; the remaining flags go to it (--nats-url URL, --listen "
        "HOST:PORT, --log-level; the executor also takes --handlers MODS and --concurrency N).",
    )
    serve.add_argument("service", metavar="SERVICE", help="resolver, executor or monitor")
    serve.add_argument("service_args", nargs=argparse.REMAINDER, help="flags for the service")

    dev = commands.add_parser(
        "dev",
        help="run nats-server and all three services locally",
        description="Run an embedded nats-server (unless --nats-url) and the resolver, executor "
        "and monitor on their default addresses (STELLWERK_*_LISTEN); print one 'ready' line "
        "once all of them serve; stop everything on SIGINT/SIGTERM.",
    )
    dev.add_argument("--nats-url", metavar="URL", help="use this NATS instead of starting one")
    dev.add_argument(
        "--data-dir",
        metavar="DIR",
        help="keep the NATS store in DIR/nats (default: a temporary dir removed on exit)",
    )
    dev.add_argument(
        "--sync-always",
        action="store_true",
        help="fsync every JetStream write: survives a power loss, but is several times slower",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``stellwerk`` command."""
    parser = argparse.ArgumentParser(
        prog="stellwerk",
        description="Stellwerk: run workflows (DAGs of tasks) on resolver, executor and monitor.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve_and_dev(commands)

    run = commands.add_parser("run", help="submit a workflow file and follow its run to the end")
    _submission(run)
    _json(run, "the final run")
    _timeout(run)

    submit = commands.add_parser("submit", help="submit a workflow file and print the run id")
    _submission(submit)

    status = commands.add_parser("status", help="show a run and its tasks")
    status.add_argument("id", metavar="ID", help="run id")
    status.add_argument(
        "--attempts",
        action="store_true",
        help="also list every attempt of each task: number, executor, start, end, error",
    )
    _address(status)
    _json(status, "the run")

    watch = commands.add_parser("watch", help="follow a run to its end")
    watch.add_argument("id", metavar="ID", help="run id")
    _address(watch)
    _json(watch, "the final run")
    _timeout(watch)

    listing = commands.add_parser("list", help="list runs, newest first")
    _address(listing)
    listing.add_argument(
        "--state", type=str.upper, choices=STATE_NAMES, help="only runs in this state"
    )
    listing.add_argument(
        "--page-size", type=_page_size, default=0, metavar="N", help="runs per page"
    )
    listing.add_argument("--all", action="store_true", help="follow every page")

    health = commands.add_parser(
        "health", help="run the installation's health checks (exit 1 when one fails)"
    )
    _address(health)
    _json(health, "the report")

    explain = commands.add_parser(
        "explain", help="say what each unfinished task of a run waits for"
    )
    explain.add_argument("id", metavar="ID", help="run id")
    _address(explain)
    _json(explain, "the explanation")

    validate = commands.add_parser(
        "validate",
        help="check a workflow file offline; with --address, the resolver checks it too "
        "(methods against its executors)",
    )
    validate.add_argument("file", metavar="FILE", help="workflow file (.yaml, .yml or .json)")
    _address(validate)
    validate.add_argument(
        "--allow-unregistered",
        action="store_true",
        help="with --address: accept methods no executor has registered (yet)",
    )
    _json(validate, "the result")
    add_operator_commands(commands, _address, _json)
    return parser
