"""Services as separate OS processes, started exactly as their containers start them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_LISTENING = re.compile(r"stellwerk (\w+) listening on (\S+):(\d+)")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    """One ``python -m stellwerk.<service>`` process."""

    service: str
    nats_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    listen: str = "127.0.0.1:0"
    process: subprocess.Popen[str] | None = None
    address: str = ""
    output: list[str] = field(default_factory=list)

    def start(self, *, timeout: float = 30.0) -> ServiceProcess:
        """Start and wait for the 'listening on' line (not for health: tests poll that)."""
        env = {**os.environ, "STELLWERK_LOG_LEVEL": "INFO", **self.env}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                f"stellwerk.{self.service}",
                "--nats-url",
                self.nats_url,
                "--listen",
                self.listen,
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        found = threading.Event()

        def reader() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                match = _LISTENING.search(line)
                if match and not found.is_set():
                    self.address = f"{match.group(2)}:{match.group(3)}"
                    found.set()

        threading.Thread(target=reader, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.service} did not start:\n{''.join(self.output)}")
        return self

    @property
    def pid(self) -> int:
        """Process id."""
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.returncode)

    def logs(self) -> str:
        """Everything the process printed so far."""
        return "".join(self.output)
