"""Entry point of the executor process."""

import argparse
import sys

from stellwerk.core.entrypoint import main
from stellwerk.executor import Executor


def _flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--handlers",
        dest="handler_modules",
        help="comma-separated modules with @handler functions (env STELLWERK_HANDLER_MODULES)",
    )
    parser.add_argument(
        "--concurrency",
        dest="executor_concurrency",
        type=int,
        help="tasks run at once (env STELLWERK_EXECUTOR_CONCURRENCY)",
    )


sys.exit(main("executor", lambda settings, listen: Executor(settings, listen=listen), extra=_flags))
