"""Exit codes, problem reports and workflow files: what every command of the CLI shares."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .._channel import default_address
from ..errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    Problem,
    StellwerkError,
    UnavailableError,
    WorkflowInvalidError,
)
from ..model import WorkflowSpec, load_workflow_file

__all__ = [
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "WorkflowFile",
    "default_address",
    "emit_json",
    "exit_for_error",
    "problem_line",
    "read_workflow_file",
    "report_problems",
]

EXIT_OK = 0
"""Success; for ``run``/``watch``: the run COMPLETED."""
EXIT_FAILED = 1
"""The run FAILED, or something went wrong that is not the caller's input."""
EXIT_INVALID = 2
"""Invalid input: a bad workflow, a bad flag, a missing file or an unknown run id."""
EXIT_UNAVAILABLE = 3
"""The resolver cannot be reached, reports UNAVAILABLE, or did not answer a call in time
(the call's own deadline, not ``--timeout``: the service is as good as unreachable, and trying
again may help either way)."""
EXIT_TIMEOUT = 4
"""``--timeout`` expired while the run goes on."""


def emit_json(document: Any, out: TextIO | None = None) -> None:
    """Print one JSON document on one line (stdout unless ``out``)."""
    print(json.dumps(document, ensure_ascii=False), file=out or sys.stdout, flush=True)


def problem_line(problem: Problem) -> str:
    """``task <id>: <field>: <message>``, or ``<field>: <message>`` for the workflow itself."""
    where = f"task {problem.task}: " if problem.task is not None else ""
    return f"{where}{problem.field}: {problem.message}"


def report_problems(problems: tuple[Problem, ...] | list[Problem], *, as_json: bool) -> int:
    """Print every problem (stderr, one per line; and as JSON on stdout with ``--json``)."""
    for problem in problems:
        print(problem_line(problem), file=sys.stderr)
    if as_json:
        emit_json({"errors": [p.to_dict() for p in problems]})
    return EXIT_INVALID


def exit_for_error(exc: StellwerkError, *, prog: str, address: str, as_json: bool) -> int:
    """Report a domain error the way the CLI promises and return its exit code."""
    if isinstance(exc, InvalidArgumentError):
        problems = exc.problems or (Problem(None, "request", exc.message),)
        return report_problems(problems, as_json=as_json)
    if isinstance(exc, NotFoundError):
        return report_problems([Problem(None, "id", exc.message)], as_json=as_json)
    if isinstance(exc, DeadlineExceededError):
        # Not "unavailable": it may be up but slow, and the call may still have taken effect.
        print(
            f"{prog}: the resolver at {address} did not answer in time: {exc.message}",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    if isinstance(exc, UnavailableError):
        print(f"{prog}: the resolver at {address} is unavailable: {exc.message}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"{prog}: {exc.message}", file=sys.stderr)
    return EXIT_FAILED


@dataclass(frozen=True, slots=True)
class WorkflowFile:
    """A workflow file that passed offline validation, with the text to send to the resolver."""

    path: Path
    spec: WorkflowSpec
    text: str
    format: str


def read_workflow_file(path: str) -> WorkflowFile:
    """Load and validate ``path`` offline; ``WorkflowInvalidError`` for any problem.

    A missing file, a directory or an unreadable file is a problem of field ``path``.
    """
    file = Path(path)
    try:
        spec = load_workflow_file(file)
    except NotFoundError:
        raise WorkflowInvalidError(
            problems=[Problem(None, "path", f"no such file: {path}")]
        ) from None
    try:
        # Read again for the text itself: the resolver validates what it receives anyway.
        text = file.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        message = f"cannot read {path}: {getattr(error, 'strerror', None) or error}"
        raise WorkflowInvalidError(problems=[Problem(None, "path", message)]) from None
    return WorkflowFile(file, spec, text, "json" if file.suffix.lower() == ".json" else "yaml")
