"""Child service processes of ``stellwerk dev``: start, learn their address, stop."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO

from stellwerk.core.deathsig import pdeathsig_preexec

from ._serve import service_command

__all__ = ["Child", "exit_description", "stop_all"]

_LISTENING = re.compile(r"^stellwerk (\w+) listening on (\S+)\s*$")
_METRICS = re.compile(r"^stellwerk (\w+) metrics on (\S+)\s*$")


@dataclass
class Child:
    """One service process; its stdout is forwarded to our stderr (our stdout is for ``ready``)."""

    name: str
    address: str
    process: subprocess.Popen[bytes]
    _bound: str | None = field(default=None, init=False)
    metrics: str | None = field(default=None, init=False)
    """The ``/metrics`` address the service reported, if it serves one."""
    _pump: threading.Thread | None = field(default=None, init=False)

    @classmethod
    def spawn(cls, name: str, args: list[str], env: dict[str, str], address: str) -> Child:
        """Start ``python -m stellwerk.<name> ARGS``, dying with us (``PR_SET_PDEATHSIG``).

        Call from the main thread, before any other thread exists: the death signal follows
        the thread that forked, and ``preexec_fn`` is only safe without other threads.
        """
        process = subprocess.Popen(
            service_command(name, args),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            preexec_fn=pdeathsig_preexec(),
        )
        return cls(name, address, process)

    def start_pump(self) -> None:
        """Forward the child's stdout to our stderr and note the address it reports."""
        assert self.process.stdout is not None
        self._pump = threading.Thread(
            target=self._forward, args=(self.process.stdout,), name=f"{self.name}-out", daemon=True
        )
        self._pump.start()

    def _forward(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            match = _LISTENING.match(line)
            if match is not None and match.group(1) == self.name and self._bound is None:
                self._bound = match.group(2)
            metrics = _METRICS.match(line)
            if metrics is not None and metrics.group(1) == self.name:
                self.metrics = metrics.group(2)
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(line)
                sys.stderr.flush()

    @property
    def bound_address(self) -> str:
        """The address the service reported (``--listen`` with port 0 picks one), else ours."""
        return self._bound or self.address

    @property
    def reported(self) -> bool:
        """Whether the service has printed its ``listening on`` line."""
        return self._bound is not None


def exit_description(code: int) -> str:
    """``exited with code N`` (and the signal's name for a death by signal)."""
    text = f"exited with code {code}"
    if code < 0:
        with contextlib.suppress(ValueError):
            text += f" (killed by {signal.Signals(-code).name})"
    return text


def stop_all(processes: list[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every live process, wait up to ``grace`` seconds, SIGKILL the stragglers."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
