"""The Kustomize base in deploy/k8s/base: rendered here without kustomize (the base holds only
a ``resources`` list, which this test insists on, so the rendering is exact), validated against
the Kubernetes OpenAPI schemas that ``kubernetes-validate`` ships, and held against the
settings and services it configures."""

from __future__ import annotations

import os
from typing import Any

import kubernetes_validate
import pytest
import yaml

from stellwerk.core.settings import Settings
from stellwerk_client.cli._serve import SERVICES
from tests.deploy.deployfiles import K8S_BASE, resources, split_address

KUBERNETES = "1.30"
"""The oldest Kubernetes the manifests must validate against (grpc probes are GA since 1.27)."""


def render() -> list[dict[str, Any]]:
    """What ``kustomize build deploy/k8s/base`` prints, for a base of plain resources."""
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    extra = set(kustomization) - {"apiVersion", "kind", "resources"}
    assert not extra, f"the test renders only plain resources; teach it {sorted(extra)}"
    out: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        out += resources(K8S_BASE / name)
    return out


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in render() if r["kind"] == kind}


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("STELLWERK_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.mark.parametrize("version", [KUBERNETES, kubernetes_validate.utils.latest_version()])
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    for resource in render():
        kubernetes_validate.validate(resource, version, strict=True)


def test_one_deployment_service_and_budget_per_service() -> None:
    deployments = _by_kind("Deployment")
    assert sorted(deployments) == sorted(f"stellwerk-{s}" for s in SERVICES)
    services = _by_kind("Service")
    budgets = _by_kind("PodDisruptionBudget")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
        assert services[name]["spec"]["selector"].items() <= labels.items()
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployments["stellwerk-resolver"]["spec"]["replicas"] >= 2
    assert deployments["stellwerk-executor"]["spec"]["replicas"] >= 2


def test_containers_run_the_service_they_are_named_for_and_probe_its_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = next(iter(_by_kind("ConfigMap").values()))["data"]
    fields = {f"STELLWERK_{f.upper()}" for f in Settings.model_fields} | {"STELLWERK_LOG_LEVEL"}
    for key in config:
        assert key.startswith("OTEL_") or key in fields, f"ConfigMap key {key} is read by nobody"
    services = _by_kind("Service")
    for name, deployment in _by_kind("Deployment").items():
        service = name.removeprefix("stellwerk-")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [service]  # the image's ENTRYPOINT is `stellwerk serve`
        assert container["envFrom"] == [{"configMapRef": {"name": "stellwerk-settings"}}]
        env = {**config, **{e["name"]: e["value"] for e in container.get("env", [])}}
        ours = {k: v for k, v in env.items() if k.startswith("STELLWERK_")}
        settings = _settings(ours, monkeypatch)
        host, port = split_address(getattr(settings, f"{service}_listen"))
        assert host == "0.0.0.0"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, (name, probe)
        live, ready = container["livenessProbe"], container["readinessProbe"]
        patience = live["periodSeconds"] * live["failureThreshold"]
        assert patience >= 60, "liveness must outlast a NATS failover, or pods restart for it"
        assert ready["periodSeconds"] * ready["failureThreshold"] < patience
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > settings.drain_timeout
        service_ports = {p["name"]: p for p in services[name]["spec"]["ports"]}
        assert service_ports["grpc"]["port"] == port
        assert service_ports["grpc"]["targetPort"] == "grpc"
        if settings.metrics_listen:
            assert ports["metrics"] == split_address(settings.metrics_listen)[1]
        assert settings.replicas == 3
        assert len(settings.nats_servers()) == 3
