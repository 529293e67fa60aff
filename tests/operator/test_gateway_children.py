"""The pure builder: what a RouteIQGateway becomes, per tier and per explicit field: which children,
valid, owned and named within limits, and when one must be applied."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.children import ClusterFacts, desired_children, needs_apply
from tests.operator.gateway_render import BASE, build, by_kind, container, env


@pytest.mark.parametrize("tier", ["minimal", "standard", "production", "enterprise"])
@pytest.mark.parametrize("kube_version", ["1.29", "1.33"])
def test_every_built_in_child_is_valid_strictly(tier: str, kube_version: str) -> None:
    state = build(
        tier=tier,
        networkPolicy={
            "enabled": True,
            "ingressFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
            ],
            "egress": {"redis": {"port": 6379, "podSelector": {"matchLabels": {"app": "redis"}}}},
        },
        scheduling={"antiAffinity": {"type": "hard"}, "nodeSelector": {"pool": "gateways"}},
    )
    for child in state.children:
        kubernetes_validate.validate(child, kube_version, strict=True)


def test_minimal_tier_is_one_fixed_pod() -> None:
    kinds = by_kind(build(tier="minimal"))
    assert set(kinds) == {"ServiceAccount", "ConfigMap", "Deployment", "Service"}
    assert kinds["Deployment"]["spec"]["replicas"] == 1


def test_production_tier_autoscales_with_the_design_behavior() -> None:
    state = build(tier="production")
    kinds = by_kind(state)
    assert "replicas" not in kinds["Deployment"]["spec"], "the HPA owns the replica count"
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
    metrics = {
        m["resource"]["name"] if m["type"] == "Resource" else m["pods"]["metric"]["name"]
        for m in hpa["metrics"]
    }
    assert metrics == {"cpu", "memory", "gateway_requests_per_second", "gateway_p95_latency_ms"}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert hpa["behavior"]["scaleUp"]["selectPolicy"] == "Max"
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 2
    spread = kinds["Deployment"]["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert "NetworkPolicy" in kinds


def test_explicit_fields_override_the_tier() -> None:
    fixed = by_kind(build(tier="production", replicas=4))
    assert "HorizontalPodAutoscaler" not in fixed
    assert fixed["Deployment"]["spec"]["replicas"] == 4
    tuned = build(
        tier="production",
        workers=3,
        autoscaling={"maxReplicas": 8, "p95LatencyMs": 250},
        resources={"limits": {"memory": "6Gi"}},
        podDisruptionBudget={"maxUnavailable": 1},
        networkPolicy={"enabled": False},
    )
    kinds = by_kind(tuned)
    assert kinds["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 8
    p95 = next(
        m
        for m in kinds["HorizontalPodAutoscaler"]["spec"]["metrics"]
        if m.get("pods", {}).get("metric", {}).get("name") == "gateway_p95_latency_ms"
    )
    assert p95["pods"]["target"]["averageValue"] == "250"
    assert container(tuned)["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "4", "memory": "6Gi"},
    }
    assert env(tuned)["ROUTEIQ_WORKERS"] == "3"
    assert kinds["PodDisruptionBudget"]["spec"] == {
        "selector": {
            "matchLabels": {"app.kubernetes.io/name": "routeiq-gateway", "app.kubernetes.io/instance": "gw"}
        },
        "maxUnavailable": 1,
    }
    assert "NetworkPolicy" not in kinds
    assert "HorizontalPodAutoscaler" not in by_kind(build(tier="production", autoscaling={"enabled": False}))


def test_children_are_owned_and_named_within_limits() -> None:
    document = copy.deepcopy(BASE)
    document["metadata"]["name"] = "g" * 40
    state = desired_children(RouteIQGateway.model_validate(document), ClusterFacts())
    for child in state.children:
        assert len(child["metadata"]["name"]) <= 63
        assert child["metadata"]["ownerReferences"][0]["uid"] == "0f5e-uid"
        assert child["metadata"]["ownerReferences"][0]["controller"] is True


def test_needs_apply_only_when_missing_changed_or_edited() -> None:
    deployment = by_kind(build())["Deployment"]
    assert needs_apply(deployment, None)
    live = copy.deepcopy(deployment)
    live["metadata"]["uid"] = "server-set"
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"  # server defaults are not drift
    live["status"] = {"replicas": 2}
    assert not needs_apply(deployment, live)
    edited = copy.deepcopy(live)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:latest"
    assert needs_apply(deployment, edited)
    rerendered = by_kind(build(workers=7))["Deployment"]
    assert needs_apply(rerendered, live), "a new rendering is applied even where it only removes fields"
