"""A real Jaeger (v2: ``cmd/jaeger``, an OpenTelemetry Collector build) on free loopback ports.

The binary is built once by ``make jaeger`` into ``.tools/bin/jaeger`` (``make test`` depends on
it); ``STELLWERK_JAEGER`` names another one. In-memory storage, OTLP over gRPC and HTTP, the
query API and UI; nothing listens beyond loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stellwerk.core.deathsig import pdeathsig_preexec
from stellwerk.core.natsd import free_port

ROOT = Path(__file__).resolve().parents[2]

_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
      http:
        endpoint: 127.0.0.1:{otlp_http}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def jaeger_binary() -> Path:
    """Where the Jaeger binary is (``STELLWERK_JAEGER``, else ``.tools/bin/jaeger``)."""
    return Path(os.environ.get("STELLWERK_JAEGER") or ROOT / ".tools" / "bin" / "jaeger")


@dataclass
class Jaeger:
    """One Jaeger process with in-memory storage."""

    otlp_grpc: int = field(default_factory=free_port)
    otlp_http: int = field(default_factory=free_port)
    query: int = field(default_factory=free_port)
    query_grpc: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _dir: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def start_new(cls, *, timeout: float = 30.0) -> Jaeger:
        """Start Jaeger and wait until its query API answers."""
        jaeger = cls()
        jaeger.start(timeout=timeout)
        return jaeger

    @property
    def query_url(self) -> str:
        """Base URL of the query API and UI (``/api/traces``, ``/trace/<id>``)."""
        return f"http://127.0.0.1:{self.query}"

    def otel_env(self, protocol: str = "grpc") -> dict[str, str]:
        """The ``OTEL_*`` settings that make a Stellwerk service export here."""
        endpoint = (
            f"http://127.0.0.1:{self.otlp_grpc}"
            if protocol == "grpc"
            else f"http://127.0.0.1:{self.otlp_http}"
        )
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }

    def start(self, *, timeout: float = 30.0) -> None:
        """Write the config with this instance's ports, start, wait for the query API."""
        binary = jaeger_binary()
        if not binary.exists():
            raise FileNotFoundError(f"{binary} is missing: run `make jaeger` (a one-time build)")
        self._dir = tempfile.TemporaryDirectory(prefix="stellwerk-jaeger-")
        config = Path(self._dir.name) / "jaeger.yaml"
        config.write_text(
            _CONFIG.format(
                health=self.health,
                query=self.query,
                query_grpc=self.query_grpc,
                otlp_grpc=self.otlp_grpc,
                otlp_http=self.otlp_http,
            )
        )
        log = (Path(self._dir.name) / "jaeger.log").open("wb")
        self.process = subprocess.Popen(
            [str(binary), "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pdeathsig_preexec(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jaeger exited {self.process.returncode}:\n{self.logs()}")
            with contextlib.suppress(urllib.error.URLError, OSError):
                self.get("/api/services")
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jaeger did not answer within {timeout} s:\n{self.logs()}")

    def get(self, path: str, **params: str) -> Any:
        """GET a query API path; the decoded JSON."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.query_url}{path}{query}", timeout=5) as reply:
            return json.loads(reply.read())

    def traces(self, service: str, **params: str) -> list[dict[str, Any]]:
        """Traces with spans of ``service`` (``/api/traces?service=...``), each with every span."""
        return list(self.get("/api/traces", service=service, limit="100", **params)["data"] or [])

    def logs(self) -> str:
        """What Jaeger logged."""
        if self._dir is None:
            return ""
        path = Path(self._dir.name) / "jaeger.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop Jaeger and remove its config."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
