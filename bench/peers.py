"""The peers: their virtualenvs (made by the harness under ``bench/.peers/``), a Redis server
for them, and one benchmark pass of each as a subprocess inside its virtualenv."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stellwerk.core.natsd import free_port

__all__ = [
    "BENCH_DIR",
    "PEER_ENVS",
    "Redis",
    "ensure_redis_server",
    "ensure_venv",
    "run_peer",
]

BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / ".peers"
SCRIPTS = BENCH_DIR / "peer_scripts"

# Pinned so that every run of `make bench` measures the same peers. Gleitzeit 0.0.5 imports
# sqlalchemy (async: greenlet), fastapi, python-multipart and psutil without declaring them.
PEER_ENVS: dict[str, list[str]] = {
    "gleitzeit": [
        "gleitzeit==0.0.5",
        "SQLAlchemy==2.1.9",
        "greenlet==3.5.6",
        "fastapi==0.165.0",
        "python-multipart==0.0.34",
        "psutil==7.2.2",
    ],
    "celery": ["celery[redis]==5.7.0"],
    "plot": ["matplotlib==3.11.2"],
}


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def venv_python(name: str) -> Path:
    """The interpreter of peer virtualenv ``name``."""
    return PEERS_DIR / name / "bin" / "python"


def ensure_venv(name: str) -> Path:
    """Create (or update) the virtualenv ``bench/.peers/<name>``; returns its interpreter."""
    requirements = PEER_ENVS[name]
    home = PEERS_DIR / name
    marker = home / ".bench-requirements"
    wanted = "\n".join(requirements) + "\n"
    python = venv_python(name)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    _log(f"installing {name} into {home} ({', '.join(requirements)})")
    started = time.monotonic()
    if not python.exists():
        # The base interpreter, not this venv's: the peers must not see Stellwerk's packages.
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(home)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    marker.write_text(wanted)
    _log(f"{name} installed in {time.monotonic() - started:.0f} s")
    return python


def ensure_redis_server() -> tuple[str | None, str]:
    """Path of ``redis-server`` (installing Debian's package as root if it is missing), or
    ``None`` and why not."""
    found = shutil.which("redis-server")
    if found:
        return found, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "redis-server is missing and apt-get is unavailable (or we are not root)"
    _log("installing redis-server with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "redis-server"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            return None, f"apt-get install redis-server failed: {result.stderr[-300:]}"
    found = shutil.which("redis-server")
    return (found, "") if found else (None, "redis-server not on PATH after apt-get install")


@dataclass
class Redis:
    """A redis-server on a free loopback port, persistence off (no RDB, no AOF)."""

    binary: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _dir: str = ""

    @property
    def url(self) -> str:
        """Base URL without a database number."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Redis:
        """Start and wait until it answers PING."""
        self._dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--databases",
                "4",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("redis-server did not answer PING")

    @property
    def pid(self) -> int:
        """The server's process id (its CPU counts in the peers' W2 figures)."""
        return self.process.pid if self.process is not None else 0

    def version(self) -> str:
        """``redis-server --version`` (first words)."""
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return " ".join(out.split()[:3])

    def stop(self) -> None:
        """Terminate and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


def run_peer(
    name: str, args: list[str], *, env: dict[str, str], log: Path, timeout: float = 900.0
) -> dict[str, Any]:
    """Run ``peer_scripts/<name>_bench.py`` in its venv; the JSON object it prints last."""
    python = venv_python("gleitzeit" if name == "gleitzeit" else "celery")
    script = SCRIPTS / f"{name}_bench.py"
    started = time.monotonic()
    with log.open("wb") as err:
        try:
            proc = subprocess.run(
                [str(python), str(script), *args],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, **env},
                timeout=timeout,
                cwd=SCRIPTS,
            )
        except subprocess.TimeoutExpired:
            return {"errors": [f"{name} timed out after {timeout:.0f} s (log: {log})"]}
    elapsed = round(time.monotonic() - started, 2)
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {
            "errors": [f"{name} exited {proc.returncode} without figures (log: {log})"],
            "elapsed_s": {"total": elapsed},
        }
    result.setdefault("elapsed_s", {})["total"] = elapsed
    return result
