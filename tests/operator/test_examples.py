"""The example custom resources are valid, and what they render is valid Kubernetes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from routeiq_operator.cli import iter_documents
from routeiq_operator.crds import KINDS
from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.children import ClusterFacts, desired_children
from routeiq_operator.schema import custom_resource_definition
from routeiq_operator.validation import apply_defaults, openapi_schema, validate_custom_resource

ROOT = Path(__file__).resolve().parents[2]
ROUTEIQ = str(Path(sys.executable).parent / "routeiq")
DEFINITIONS = {
    custom_resource_definition(m)["spec"]["names"]["kind"]: custom_resource_definition(m) for m in KINDS
}
RESOURCES = [
    (f"{path.relative_to(ROOT)}#{index}", document)
    for path, index, document in iter_documents([ROOT / "examples"])
    if isinstance(document, dict) and str(document.get("apiVersion", "")).startswith("routeiq.io/")
]
GATEWAYS = [(name, document) for name, document in RESOURCES if document["kind"] == "RouteIQGateway"]


def test_there_are_examples_for_every_kind_and_the_tiers() -> None:
    assert {document["kind"] for _, document in RESOURCES} == set(DEFINITIONS)
    assert {document["spec"]["tier"] for _, document in GATEWAYS} >= {"production", "enterprise"}


@pytest.mark.parametrize(("name", "document"), RESOURCES, ids=[name for name, _ in RESOURCES])
def test_example_is_valid(name: str, document: dict[str, Any]) -> None:
    assert validate_custom_resource(document, DEFINITIONS[document["kind"]]) == []


@pytest.mark.parametrize(("name", "document"), GATEWAYS, ids=[name for name, _ in GATEWAYS])
@pytest.mark.parametrize("kube_version", ["1.29", "1.33"])
def test_example_gateway_renders_valid_manifests(
    name: str, document: dict[str, Any], kube_version: str
) -> None:
    schema = openapi_schema(DEFINITIONS["RouteIQGateway"])
    gateway = RouteIQGateway.model_validate(apply_defaults(document, schema))
    state = desired_children(gateway, ClusterFacts())
    assert state.problems == []
    kinds = {child["kind"] for child in state.children}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    for child in state.children:
        if child["apiVersion"].startswith(("external-secrets.io/", "monitoring.coreos.com/")):
            continue  # not built-in kinds; their CRDs' schemas are not bundled with kubernetes-validate
        kubernetes_validate.validate(child, kube_version, strict=True)


def test_render_command_prints_the_manifests() -> None:
    result = subprocess.run(
        [ROUTEIQ, "render", "-f", str(ROOT / "examples" / "tier3" / "gateway.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    kinds = [document["kind"] for document in yaml.safe_load_all(result.stdout)]
    assert kinds == [
        "ServiceAccount",
        "ConfigMap",
        "ExternalSecret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
    ]


def test_render_refuses_an_invalid_gateway(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    document = yaml.safe_load((ROOT / "examples" / "tier3" / "gateway.yaml").read_text())
    document["spec"]["autoscaling"]["minReplicas"] = 30
    bad.write_text(yaml.safe_dump(document))
    result = subprocess.run([ROUTEIQ, "render", "-f", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "spec.autoscaling: minReplicas must not exceed maxReplicas" in result.stderr


def test_render_reports_what_the_cluster_lacks() -> None:
    result = subprocess.run(
        [
            ROUTEIQ,
            "render",
            "-f",
            str(ROOT / "examples" / "tier3" / "gateway.yaml"),
            "--without-external-secrets",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "SecretsSynced=False (ExternalSecretsNotInstalled)" in result.stderr
    assert "ExternalSecret" not in [d["kind"] for d in yaml.safe_load_all(result.stdout)]
