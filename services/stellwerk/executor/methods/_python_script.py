"""The ``python/execute`` method: run a script from an allowed directory in a child process.

Gleitzeit's contract is kept: the script sees a global ``context`` (the task's ``context``
parameter) and may set a global ``result``; the task's output is
``{"result": ..., "output": <stdout>, "success": True}``. What is not kept: Gleitzeit ran any
file the engine could read, reported failed scripts as successful tasks and left children
running when the engine died. Here only files inside ``STELLWERK_SCRIPT_DIRS`` run, a failing
script fails its task, and the script's whole process group dies with its executor
(``PR_SET_PDEATHSIG`` + the wrapper's SIGTERM handler), on timeout and on cancellation.

The child is ``sys.executable -c <wrapper>``. The executor reads the script itself (so the child
runs exactly the file that passed the directory check) and sends ``<context JSON>\\n<source>`` on
stdin. The wrapper reports ``result`` on a pipe of its own, passed as an extra file descriptor,
so nothing the script prints can pass for its result and stdout stays exactly what it printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stellwerk.core.deathsig import pdeathsig_preexec
from stellwerk.core.errors import InvalidArgumentError, TaskError
from stellwerk.core.handlers import TaskContext

__all__ = ["DEFAULT_SCRIPT_TIMEOUT", "PythonScriptRunner", "resolve_script_dirs"]

DEFAULT_SCRIPT_TIMEOUT = 10.0
"""Seconds a script may run when neither the task nor its params set a timeout (Gleitzeit's)."""

_METHOD = "python/execute"
_MAX_SCRIPT_BYTES = 8 * 1024 * 1024
_MAX_OUTPUT_BYTES = 8 * 1024 * 1024  # stdout, and separately the reported result
_STDERR_KEEP_BYTES = 64 * 1024
_STDERR_TAIL_LINES = 10
_CHUNK = 64 * 1024

_WRAPPER = """\
import json, os, signal, sys

def _stellwerk_orphaned(signum, frame):
    # The executor died (PR_SET_PDEATHSIG sends SIGTERM): take the whole process group down,
    # the script's own children included, so nothing of this attempt outlives its claim.
    os.killpg(0, signal.SIGKILL)

signal.signal(signal.SIGTERM, _stellwerk_orphaned)

def _stellwerk_run():
    channel = int(sys.argv[1])
    path = sys.argv[2]
    # The result channel must not leak into processes the script starts: they would keep it
    # open and the executor would wait for them.
    os.set_inheritable(channel, False)
    head, _, source = sys.stdin.buffer.read().partition(b"\\n")
    scope = {"__name__": "__main__", "__file__": path, "context": json.loads(head)}
    sys.argv = [path]
    sys.path[0] = os.path.dirname(path)
    code = compile(source, path, "exec")
    try:
        exec(code, scope)
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise
    if "result" in scope:
        try:
            report = json.dumps({"value": scope["result"]}, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            report = json.dumps({"error": type(exc).__name__ + ": " + str(exc)})
    else:
        report = "{}"
    with os.fdopen(channel, "w", encoding="utf-8") as out:
        out.write(report)

_stellwerk_run()
"""


def resolve_script_dirs(script_dirs: Sequence[Path]) -> tuple[Path, ...]:
    """Resolve the allowed script directories, in order and without duplicates.

    Raises:
        InvalidArgumentError: a directory does not exist or is not a directory.
    """
    resolved: list[Path] = []
    for raw in script_dirs:
        try:
            path = Path(raw).resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise InvalidArgumentError(
                f"script directory {str(raw)!r} (STELLWERK_SCRIPT_DIRS) does not exist: {exc}"
            ) from exc
        if not path.is_dir():
            raise InvalidArgumentError(
                f"script directory {str(raw)!r} (STELLWERK_SCRIPT_DIRS) is not a directory"
            )
        if path not in resolved:
            resolved.append(path)
    return tuple(resolved)


class PythonScriptRunner:
    """Implements ``python/execute {file, context={}, timeout?}`` for a set of allowed directories.

    A relative ``file`` is taken relative to the first directory; an absolute one must lie inside
    one of them once symlinks and ``..`` are resolved.
    """

    def __init__(self, script_dirs: Sequence[Path]) -> None:
        """Create a runner; ``script_dirs`` must come from :func:`resolve_script_dirs`."""
        if not script_dirs:
            raise InvalidArgumentError("python/execute needs at least one script directory")
        self._dirs = tuple(script_dirs)

    @property
    def script_dirs(self) -> tuple[Path, ...]:
        """The allowed directories, resolved."""
        return self._dirs

    async def __call__(
        self, params: Mapping[str, Any], ctx: TaskContext, time_limit: float | None
    ) -> dict[str, Any]:
        """Run the script named by ``params["file"]`` and return Gleitzeit's output shape."""
        file = params.get("file")
        if not isinstance(file, str) or not file or "\x00" in file:
            raise TaskError(f"{_METHOD}: argument 'file' must be a non-empty path string")
        context = params.get("context")
        if context is None:
            context = {}
        if not isinstance(context, dict):
            raise TaskError(
                f"{_METHOD}: argument 'context' must be an object, got {type(context).__name__}"
            )
        limit = _effective_timeout(params.get("timeout"), time_limit)
        path = self._locate(file)
        source = await asyncio.to_thread(_read_source, path, file, self._dirs)
        try:
            head = json.dumps(context, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TaskError(f"{_METHOD}: 'context' is not JSON-serialisable: {exc}") from exc

        returncode, stdout, stderr, report = await _run(file, path, head + b"\n" + source, limit)
        if returncode != 0:
            raise TaskError(f"script {file!r} {_describe_exit(returncode)}{_tail(stderr)}")
        output = stdout.decode("utf-8", "replace")
        return {"result": _result(file, report, output), "output": output, "success": True}

    def _locate(self, file: str) -> Path:
        candidate = Path(file)
        if not candidate.is_absolute():
            candidate = self._dirs[0] / candidate
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise TaskError(f"script {file!r} cannot be resolved: {exc}") from exc
        if not _inside(resolved, self._dirs):
            raise TaskError(_outside(file))
        return resolved


def _outside(file: str) -> str:
    return f"script {file!r} is outside the allowed script directories (STELLWERK_SCRIPT_DIRS)"


def _inside(path: Path, dirs: Sequence[Path]) -> bool:
    return any(path.is_relative_to(directory) for directory in dirs)


def _effective_timeout(param: Any, task_timeout: float | None) -> float:
    # Gleitzeit scripts may carry ``params.timeout``; the task's own timeout still bounds it.
    if param is None:
        return task_timeout if task_timeout is not None else DEFAULT_SCRIPT_TIMEOUT
    if (
        isinstance(param, bool)
        or not isinstance(param, int | float)
        or not math.isfinite(param)
        or param <= 0
    ):
        raise TaskError(f"{_METHOD}: argument 'timeout' must be a positive number of seconds")
    return float(param) if task_timeout is None else min(float(param), task_timeout)


def _read_source(path: Path, file: str, dirs: Sequence[Path]) -> bytes:
    """Read the script, checking that what was opened is still inside the allowed dirs."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise TaskError(f"script {file!r} not found (looked for {str(path)!r})") from None
    except OSError as exc:
        raise TaskError(f"script {file!r} cannot be opened: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TaskError(f"script {file!r} is not a regular file")
        # A directory swapped for a symlink between the check and the open would escape the
        # allowed dirs; the kernel knows which file was really opened.
        with contextlib.suppress(OSError):
            opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if not _inside(opened, dirs):
                raise TaskError(_outside(file))
        if info.st_size > _MAX_SCRIPT_BYTES:
            raise TaskError(f"script {file!r} is larger than {_MAX_SCRIPT_BYTES} bytes")
        with os.fdopen(os.dup(fd), "rb") as stream:
            return stream.read(_MAX_SCRIPT_BYTES + 1)[:_MAX_SCRIPT_BYTES]
    finally:
        os.close(fd)


class _Capture:
    """Bytes read from a child's pipe: the head up to a limit, or only the tail."""

    def __init__(self, limit: int, *, keep_tail: bool = False) -> None:
        self.data = bytearray()
        self.overflowed = False
        self._limit = limit
        self._keep_tail = keep_tail

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self._limit:
            self.overflowed = True
            if self._keep_tail:
                del self.data[: len(self.data) - self._limit]
            else:
                del self.data[self._limit :]


async def _drain(reader: asyncio.StreamReader, capture: _Capture) -> None:
    # Keep reading past the limit: a child blocked on a full pipe would never exit.
    while chunk := await reader.read(_CHUNK):
        capture.add(chunk)


async def _run(
    file: str, path: Path, stdin_data: bytes, limit: float
) -> tuple[int, bytes, bytes, _Capture]:
    """Run the wrapper on ``path``; return (exit code, stdout, stderr tail, result channel)."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WRAPPER,
            str(write_fd),
            str(path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(write_fd,),
            start_new_session=True,  # its own process group, so one killpg reaches its children
            # The kernel sends SIGTERM when the executor dies; the wrapper then kills its group.
            preexec_fn=pdeathsig_preexec(signal.SIGTERM),
            env=env,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        os.close(read_fd)
        raise TaskError(f"script {file!r} could not be started: {exc}") from exc
    finally:
        os.close(write_fd)

    stdout, stderr, channel = (
        _Capture(_MAX_OUTPUT_BYTES),
        _Capture(_STDERR_KEEP_BYTES, keep_tail=True),
        _Capture(_MAX_OUTPUT_BYTES),
    )
    channel_reader = asyncio.StreamReader()
    channel_pipe = os.fdopen(read_fd, "rb", 0)
    transport: asyncio.BaseTransport | None = None
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(channel_reader), channel_pipe
        )
        assert process.stdin and process.stdout and process.stderr
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                async with asyncio.TaskGroup() as group:
                    group.create_task(_feed(process.stdin, stdin_data))
                    group.create_task(_drain(process.stdout, stdout))
                    group.create_task(_drain(process.stderr, stderr))
                    group.create_task(_drain(channel_reader, channel))
                returncode = await process.wait()
        except TimeoutError:
            if deadline.expired():
                raise TaskError(
                    f"script {file!r} timed out after {limit:g} s{_tail(bytes(stderr.data))}"
                ) from None
            raise
    finally:
        # Also on success: whatever the script left running in its group goes with it.
        _kill_group(process.pid)
        if process.returncode is None:
            await process.wait()
        if transport is not None:
            transport.close()  # closes channel_pipe
        else:
            channel_pipe.close()
    if stdout.overflowed:
        raise TaskError(f"script {file!r} wrote more than {_MAX_OUTPUT_BYTES} bytes to stdout")
    return returncode, bytes(stdout.data), bytes(stderr.data), channel


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stdin.write(data)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child exited without reading; its exit code tells why
    finally:
        stdin.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _result(file: str, channel: _Capture, output: str) -> Any:
    """The script's ``result`` if it set one, else Gleitzeit's reading of stdout."""
    if channel.overflowed:
        raise TaskError(f"script {file!r} set a `result` larger than {_MAX_OUTPUT_BYTES} bytes")
    if channel.data:
        try:
            report = json.loads(bytes(channel.data))
        except ValueError as exc:
            raise TaskError(f"script {file!r} sent a malformed result report") from exc
        if not isinstance(report, dict):
            raise TaskError(f"script {file!r} sent a malformed result report")
        if "error" in report:
            raise TaskError(
                f"script {file!r} set `result` to a value that is not JSON-serialisable: "
                f"{report['error']}"
            )
        if "value" in report:
            return report["value"]
    return _result_from_stdout(output)


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _result_from_stdout(output: str) -> Any:
    """The first line that is a JSON object or array, else the last non-empty line, else None."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line[0] in "[{":
            try:
                value = json.loads(line, parse_constant=_reject_constant)
            except ValueError:
                continue
            if isinstance(value, dict | list):
                return value
    return lines[-1] if lines else None


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def _tail(stderr: bytes) -> str:
    lines = [
        line.rstrip()[:500]
        for line in stderr.decode("utf-8", "replace").splitlines()
        if line.strip()
    ]
    if not lines:
        return "; stderr was empty"
    return "; stderr (last lines):\n" + "\n".join(lines[-_STDERR_TAIL_LINES:])
