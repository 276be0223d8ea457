"""Reading the deployment files the way their runtimes do (the Dockerfile's instructions, the
compose file with its YAML merges, the probe script) so that tests can hold them against what
``stellwerk serve`` really accepts."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.support.processes import ROOT

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
NATS_CONF = DEPLOY / "nats" / "nats.conf"
PROBE = DEPLOY / "healthcheck.py"
K8S_BASE = DEPLOY / "k8s" / "base"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction (continuation lines joined) and the stage it belongs to."""

    stage: int
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD arguments."""
        text = self.args.split("CMD", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value = json.loads(text.strip())
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.args}"
        return [str(v) for v in value]


def dockerfile() -> list[Instruction]:
    """The instructions of ``deploy/Dockerfile``; stage 0 is before the first FROM."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out: list[Instruction] = []
    stage = 0
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword, args.strip()))
    return out


def dockerfile_env(instructions: list[Instruction], stage: int) -> dict[str, str]:
    """The ``ENV`` of one stage (``KEY=VALUE`` forms)."""
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.stage == stage and ins.keyword == "ENV":
            for item in shlex.split(ins.args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def compose() -> dict[str, Any]:
    """The compose file as Compose reads it (YAML merge keys resolved)."""
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def stellwerk_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the Stellwerk image (built from deploy/Dockerfile)."""
    return {
        name: svc
        for name, svc in data["services"].items()
        if (svc.get("build") or {}).get("dockerfile") == "deploy/Dockerfile"
    }


def nats_conf_value(key: str) -> str:
    """A top-level scalar of nats.conf (``key: value``)."""
    match = re.search(rf"^{re.escape(key)}:\s*(\S+)", NATS_CONF.read_text(), re.MULTILINE)
    assert match, f"{key} not in {NATS_CONF}"
    return match.group(1)


def nats_conf_routes() -> list[str]:
    """The cluster routes of nats.conf."""
    block = re.search(r"routes:\s*\[(.*?)\]", NATS_CONF.read_text(), re.DOTALL)
    assert block, "no routes in nats.conf"
    return re.findall(r"nats-route://\S+", block.group(1))


def probe_module() -> ModuleType:
    """deploy/healthcheck.py imported as a module (it is a script in the image)."""
    spec = importlib.util.spec_from_file_location("stellwerk_healthcheck", PROBE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split_address(value: str) -> tuple[str, int]:
    """HOST:PORT → (host, port)."""
    host, _, port = value.rpartition(":")
    return host, int(port)


def published(ports: list[Any]) -> list[tuple[str, int, int]]:
    """Compose short-syntax ports ``[IP:]HOST:CONTAINER`` as (ip, host port, container port)."""
    out = []
    for item in ports:
        parts = str(item).split(":")
        ip = parts[0] if len(parts) == 3 else ""
        out.append((ip, int(parts[-2]), int(parts[-1])))
    return out


def resources(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in a file (empty ones skipped)."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


__all__ = [
    "COMPOSE",
    "DEPLOY",
    "DOCKERFILE",
    "K8S_BASE",
    "NATS_CONF",
    "PROBE",
    "Instruction",
    "compose",
    "dockerfile",
    "dockerfile_env",
    "nats_conf_routes",
    "nats_conf_value",
    "probe_module",
    "published",
    "resources",
    "split_address",
    "stellwerk_services",
]
