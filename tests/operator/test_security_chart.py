"""The chart's least-privilege pieces, rendered by the real Helm engine: Secrets are `get` only in
every mode, the gateway image allowlist reaches the operator, the operator's image can be pinned by
digest, and the optional NetworkPolicy and PodDisruptionBudget are valid and say what they should."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from routeiq_operator.gateway.api import IMAGE_DIGEST, IMAGE_REPOSITORY
from tests.operator.test_chart import (
    CHART,
    KUBE_VERSIONS,
    MODES,
    NAMESPACE,
    RELEASE,
    all_rules,
    of_kind,
    render,
    the,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4
SELECTOR = {"app.kubernetes.io/name": "routeiq-operator", "app.kubernetes.io/instance": RELEASE}
# every combination of the switches that add or remove RBAC rules
RBAC_VARIANTS = [
    {**mode, "peering": {"enabled": peering, "name": "routeiq-operator"}, "replicas": 2 if peering else 1}
    for mode in MODES.values()
    for peering in (True, False)
]


def env(documents: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = the(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def validate(document: dict[str, Any]) -> None:
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate.validate(document, kube_version, strict=True)


# ---- RBAC: Secrets are read by name only ------------------------------------------------------------


@pytest.mark.parametrize("values", RBAC_VARIANTS, ids=lambda v: f"{sorted(v)}-{v['peering']['enabled']}")
def test_secrets_are_get_only_in_every_mode(values: dict[str, Any]) -> None:
    documents = render(values)
    rules = [(where, rule) for where, rule in all_rules(documents) if "secrets" in rule["resources"]]
    assert rules, "the operator reads the Secrets gateways reference"
    for where, rule in rules:
        assert rule["verbs"] == ["get"], f"{where}: {rule}"
        assert "resourceNames" not in rule  # names come from the gateways' specs, unknown here
    for where, rule in all_rules(documents):  # and no wildcard could grant list/watch on them
        assert "*" not in rule["resources"], f"{where}: {rule}"
        assert "*" not in rule["verbs"], f"{where}: {rule}"


# ---- gateway images ------------------------------------------------------------------------------------


def test_the_allowlist_is_empty_by_default() -> None:
    variables = env(render())
    assert variables["ROUTEIQ_ALLOWED_IMAGE_REPOSITORIES"] == ""
    assert variables["ROUTEIQ_DIGEST_REQUIRED_IMAGE_REPOSITORIES"] == ""


def test_the_allowlist_reaches_the_operator() -> None:
    variables = env(
        render(
            {
                "gatewayImages": {
                    "allowedRepositories": ["ghcr.io/routeiq", "registry.example.com:5000/platform"],
                    "digestRequiredRepositories": ["ghcr.io/routeiq"],
                }
            }
        )
    )
    assert (
        variables["ROUTEIQ_ALLOWED_IMAGE_REPOSITORIES"]
        == "ghcr.io/routeiq,registry.example.com:5000/platform"
    )
    assert variables["ROUTEIQ_DIGEST_REQUIRED_IMAGE_REPOSITORIES"] == "ghcr.io/routeiq"


def test_the_operator_image_can_be_pinned_by_digest() -> None:
    documents = render(
        {"image": {"repository": "ghcr.io/routeiq/routeiq-operator", "tag": "1.2.3", "digest": DIGEST}}
    )
    (container,) = the(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/routeiq/routeiq-operator:1.2.3@{DIGEST}"
    validate(the(documents, "Deployment"))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
        ({"image": {"digest": "md5:" + "0" * 32}}, "/image/digest"),
        ({"image": {"tag": "1.0@" + DIGEST}}, "/image/tag"),
        (
            {"gatewayImages": {"allowedRepositories": ["ghcr.io/routeiq:latest"]}},
            "/gatewayImages/allowedRepositories/0",
        ),
        (
            {"gatewayImages": {"allowedRepositories": ["ghcr.io/x@" + DIGEST]}},
            "/gatewayImages/allowedRepositories/0",
        ),
        ({"gatewayImages": {"allowedRepositories": [""]}}, "/gatewayImages/allowedRepositories/0"),
        ({"gatewayImages": {"allowedRepositories": "ghcr.io/routeiq"}}, "/gatewayImages/allowedRepositories"),
        (
            {"gatewayImages": {"digestRequiredRepositories": ["ghcr.io/X"]}},
            "/gatewayImages/digestRequiredRepositories/0",
        ),
        ({"gatewayImages": {"allowed": []}}, "'allowed' not allowed"),
        ({"networkPolicy": {"enabled": True, "apiServer": {"ports": []}}}, "/networkPolicy/apiServer/ports"),
        (
            {"networkPolicy": {"enabled": True, "artifactStores": {"ports": [0]}}},
            "/networkPolicy/artifactStores/ports/0",
        ),
        (
            {"networkPolicy": {"enabled": True, "apiServer": {"ports": [443], "cidrs": ["10.0.0.1"]}}},
            "/networkPolicy/apiServer/cidrs/0",
        ),
        ({"networkPolicy": {"enabled": True, "metricsFrom": [{}]}}, "/networkPolicy/metricsFrom/0"),
        (
            {"networkPolicy": {"enabled": True, "metricsFrom": [{"podSelector": {}, "namespace": "x"}]}},
            "'namespace' not allowed",
        ),
        ({"networkPolicy": {"egress": []}}, "'egress' not allowed"),
        (
            {"podDisruptionBudget": {"enabled": True, "maxUnavailable": 0}},
            "/podDisruptionBudget/maxUnavailable",
        ),
    ],
)
def test_schema_rejects_bad_security_values(values: dict[str, Any], message: str) -> None:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as rejected:
        chart.validate_schema(values)
    assert message in str(rejected.value)


# ---- the operator's PodDisruptionBudget ----------------------------------------------------------------


def test_a_pod_disruption_budget_keeps_a_standby_through_a_drain() -> None:
    documents = render()
    budget = the(documents, "PodDisruptionBudget")
    validate(budget)
    assert budget["metadata"]["namespace"] == NAMESPACE
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}}
    # it selects exactly the operator's pods
    template_labels = the(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert SELECTOR.items() <= template_labels.items()


def test_the_pod_disruption_budget_can_be_turned_off_and_is_absent_without_replicas() -> None:
    assert (
        of_kind(
            render({"podDisruptionBudget": {"enabled": False, "maxUnavailable": 1}}), "PodDisruptionBudget"
        )
        == []
    )
    assert of_kind(render({"replicas": 0}), "PodDisruptionBudget") == []


# ---- the operator's NetworkPolicy ----------------------------------------------------------------------


def test_no_network_policy_by_default() -> None:
    assert of_kind(render(), "NetworkPolicy") == []


def _ports(rule: dict[str, Any]) -> set[tuple[Any, str]]:
    return {(port["port"], port["protocol"]) for port in rule["ports"]}


def test_network_policy_defaults_admit_only_what_the_operator_uses() -> None:
    documents = render({"networkPolicy": {"enabled": True}})
    policy = the(documents, "NetworkPolicy")
    validate(policy)
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": SELECTOR}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    # ingress: the metrics port only (the liveness port is the kubelet's, which policies do not filter)
    (ingress,) = spec["ingress"]
    assert _ports(ingress) == {("metrics", "TCP")}
    assert "from" not in ingress  # metricsFrom empty: any scraper
    api, dns, stores, redis = spec["egress"]
    assert _ports(api) == {(443, "TCP"), (6443, "TCP")}
    assert "to" not in api
    assert _ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert dns["to"] == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert _ports(stores) == {(443, "TCP")}
    assert "to" not in stores
    assert _ports(redis) == {(6379, "TCP")}
    assert "to" not in redis
    # nothing but these ports is reachable: every egress rule names its ports
    assert all(rule.get("ports") for rule in spec["egress"])


def test_network_policy_values_narrow_it() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    redis_peer = {"podSelector": {"matchLabels": {"app": "redis"}}, "namespaceSelector": {}}
    minio = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 9000, "protocol": "TCP"}]}
    documents = render(
        {
            "networkPolicy": {
                "enabled": True,
                "apiServer": {"ports": [6443], "cidrs": ["172.18.0.2/32"]},
                "artifactStores": {"ports": [443], "cidrs": ["52.216.0.0/15"]},
                "redis": {"ports": [6379, 6380], "to": [redis_peer]},
                "extraEgress": [minio],
                "metricsFrom": [monitoring],
            },
            "metrics": {"port": 9090, "service": {"enabled": False}, "serviceMonitor": {"enabled": False}},
        }
    )
    policy = the(documents, "NetworkPolicy")
    validate(policy)
    spec = policy["spec"]
    (ingress,) = spec["ingress"]
    assert ingress["from"] == [monitoring]
    api, _dns, stores, redis, extra = spec["egress"]
    assert api == {
        "ports": [{"port": 6443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
    }
    assert stores["to"] == [{"ipBlock": {"cidr": "52.216.0.0/15"}}]
    assert redis["to"] == [redis_peer]
    assert _ports(redis) == {(6379, "TCP"), (6380, "TCP")}
    assert extra == minio
    # the named port the ingress rule admits is the container's
    (container,) = the(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]


def test_network_policy_without_metrics_admits_nothing() -> None:
    policy = the(render({"networkPolicy": {"enabled": True}, "metrics": {"port": 0}}), "NetworkPolicy")
    validate(policy)
    assert policy["spec"]["ingress"] == []


@pytest.mark.parametrize("mode", list(MODES))
def test_security_values_lint_clean(mode: str) -> None:
    values = {
        **MODES[mode],
        "networkPolicy": {"enabled": True, "apiServer": {"ports": [443], "cidrs": ["10.0.0.1/32"]}},
        "gatewayImages": {"allowedRepositories": ["ghcr.io/routeiq"], "digestRequiredRepositories": []},
        "image": {
            "repository": "ghcr.io/routeiq/routeiq-operator",
            "tag": "",
            "digest": DIGEST,
            "pullPolicy": "IfNotPresent",
        },
    }
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSIONS[-1]}.0")
    assert report["errors"] == []
    assert [message for message in report["messages"] if message["severity"] >= 2] == []
    for document in render(values):
        if document["kind"] in {"NetworkPolicy", "Deployment", "PodDisruptionBudget"}:
            validate(document)


def test_the_chart_and_the_operator_agree_on_repositories_and_digests() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["definitions"]["repositoryPrefix"]["pattern"] == IMAGE_REPOSITORY
    assert schema["definitions"]["imageDigest"]["pattern"] == f"^({IMAGE_DIGEST.strip('^$')})?$"
