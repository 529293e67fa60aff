"""The pure builder: what a RouteIQGateway becomes, per tier and per explicit field."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from routeiq_operator.api import RouteIQGateway
from routeiq_operator.builders.gateway import ClusterFacts, DesiredState, desired_children, needs_apply

BASE: dict[str, Any] = {
    "apiVersion": "routeiq.io/v1alpha1",
    "kind": "RouteIQGateway",
    "metadata": {"name": "gw", "namespace": "routeiq", "uid": "0f5e-uid"},
    "spec": {
        "litellm": {
            "modelList": [
                {
                    "model_name": "chat",
                    "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "os.environ/OPENAI_API_KEY"},
                }
            ]
        },
        "secrets": {
            "masterKey": {"name": "routeiq-secrets", "key": "master-key"},
            "providerKeys": [
                {"env": "OPENAI_API_KEY", "secretKeyRef": {"name": "routeiq-secrets", "key": "openai"}}
            ],
        },
    },
}


def build(facts: ClusterFacts | None = None, **spec: Any) -> DesiredState:
    document = copy.deepcopy(BASE)
    document["spec"].update(spec)
    return desired_children(RouteIQGateway.model_validate(document), facts or ClusterFacts())


def by_kind(state: DesiredState) -> dict[str, dict[str, Any]]:
    return {child["kind"]: child for child in state.children}


def container(state: DesiredState) -> dict[str, Any]:
    deployment = by_kind(state)["Deployment"]
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


def env(state: DesiredState) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container(state)["env"]}


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


def test_pods_are_secure_by_default() -> None:
    state = build(tier="standard")
    pod = by_kind(state)["Deployment"]["spec"]["template"]["spec"]
    security = container(state)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert by_kind(state)["ServiceAccount"]["automountServiceAccountToken"] is False
    assert container(state)["resources"]["requests"]
    assert container(state)["resources"]["limits"]
    assert {v["name"] for v in pod["volumes"]} == {"config", "tmp"}
    assert pod["terminationGracePeriodSeconds"] == 30 + 15


def test_probes_use_the_health_endpoints_with_a_startup_budget_for_model_loading() -> None:
    probes = container(build(probes={"startup": {"failureThreshold": 60}}))
    assert probes["startupProbe"]["httpGet"]["path"] == "/_health/live"
    assert probes["startupProbe"]["periodSeconds"] * probes["startupProbe"]["failureThreshold"] == 300
    assert probes["readinessProbe"]["httpGet"]["path"] == "/_health/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/_health/live"


def test_secrets_are_only_ever_references() -> None:
    state = build(secrets={**BASE["spec"]["secrets"], "redisUrl": {"name": "redis", "key": "url"}})
    variables = env(state)
    assert variables["LITELLM_MASTER_KEY"] == {
        "secretKeyRef": {"name": "routeiq-secrets", "key": "master-key"}
    }
    assert variables["OPENAI_API_KEY"] == {"secretKeyRef": {"name": "routeiq-secrets", "key": "openai"}}
    assert variables["REDIS_URL"] == {"secretKeyRef": {"name": "redis", "key": "url"}}
    config = by_kind(state)["ConfigMap"]["data"]["config.yaml"]
    assert "api_key: os.environ/OPENAI_API_KEY" in config


def test_gateway_identity_and_strategy_reach_the_pods() -> None:
    variables = env(build(routing={"strategy": "least-busy"}))
    assert variables["ROUTEIQ_GATEWAY"] == "routeiq/gw"
    assert variables["ROUTEIQ_STRATEGY"] == "least-busy"
    assert variables["LITELLM_CONFIG_PATH"] == "/app/config/config.yaml"


def test_checksums_roll_the_pods_on_config_and_secret_changes() -> None:
    def annotations(state: DesiredState) -> dict[str, str]:
        result: dict[str, str] = by_kind(state)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
        return result

    base = annotations(build())
    assert annotations(build()) == base, "the builder is deterministic"
    other_models = build(
        litellm={"modelList": [{"model_name": "x", "litellm_params": {"model": "openai/x"}}]}
    )
    assert annotations(other_models)["routeiq.io/config-checksum"] != base["routeiq.io/config-checksum"]
    rotated = build(ClusterFacts(secret_versions={"routeiq-secrets": "42"}))
    assert annotations(rotated)["routeiq.io/secrets-checksum"] != base["routeiq.io/secrets-checksum"]
    assert annotations(rotated)["routeiq.io/config-checksum"] == base["routeiq.io/config-checksum"]


def test_config_map_reference_is_mounted_instead_of_rendered() -> None:
    state = build(litellm={"configMapRef": {"name": "team-litellm", "key": "litellm.yaml"}})
    assert "ConfigMap" not in by_kind(state)
    volume = next(
        v
        for v in by_kind(state)["Deployment"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "config"
    )
    assert volume["configMap"] == {
        "name": "team-litellm",
        "items": [{"key": "litellm.yaml", "path": "config.yaml"}],
    }


EXTERNAL = {
    **BASE["spec"]["secrets"],
    "externalSecret": {
        "secretStoreRef": {"name": "aws-secrets-manager", "kind": "ClusterSecretStore"},
        "data": [{"secretKey": "DATABASE_URL", "remoteRef": {"key": "routeiq/prod/database-url"}}],
    },
}


def test_external_secret_when_its_crd_exists() -> None:
    state = build(secrets=EXTERNAL)
    external = by_kind(state)["ExternalSecret"]
    assert external["apiVersion"] == "external-secrets.io/v1"
    assert external["spec"]["target"]["name"] == "gw-gateway-secrets"
    assert external["spec"]["secretStoreRef"] == {"name": "aws-secrets-manager", "kind": "ClusterSecretStore"}
    assert container(state)["envFrom"] == [{"secretRef": {"name": "gw-gateway-secrets"}}]
    assert state.problems == []


def test_external_secret_without_its_crd_is_a_problem_not_a_child() -> None:
    state = build(ClusterFacts(external_secrets=False), secrets=EXTERNAL)
    assert "ExternalSecret" not in by_kind(state)
    assert [(p.condition, p.reason) for p in state.problems] == [
        ("SecretsSynced", "ExternalSecretsNotInstalled")
    ]
    assert "External Secrets Operator" in state.problems[0].message


def test_service_monitor_only_with_its_crd() -> None:
    wanted = {"serviceMonitor": {"enabled": True}}
    assert "ServiceMonitor" in by_kind(build(observability=wanted))
    without = build(ClusterFacts(service_monitors=False), observability=wanted)
    assert "ServiceMonitor" not in by_kind(without)
    assert without.problems[0].reason == "ServiceMonitorsNotInstalled"


def test_children_are_owned_and_named_within_limits() -> None:
    document = copy.deepcopy(BASE)
    document["metadata"]["name"] = "g" * 40
    state = desired_children(RouteIQGateway.model_validate(document), ClusterFacts())
    for child in state.children:
        assert len(child["metadata"]["name"]) <= 63
        assert child["metadata"]["ownerReferences"][0]["uid"] == "0f5e-uid"
        assert child["metadata"]["ownerReferences"][0]["controller"] is True


def test_network_policy_allows_dns_https_and_backing_services() -> None:
    policy = by_kind(
        build(
            tier="standard",
            networkPolicy={"egress": {"postgres": {"port": 5432, "cidr": "10.0.0.0/16"}}},
        )
    )["NetworkPolicy"]["spec"]
    ports = [(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]]
    assert ports == [("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5432)]
    assert policy["egress"][-1]["to"] == [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 4000}]
    assert json.dumps(policy).count("podSelector") >= 2


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
