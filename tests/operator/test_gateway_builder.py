"""The pure builder: what a RouteIQGateway becomes, per tier and per explicit field."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.children import ClusterFacts, DesiredState, desired_children, needs_apply
from routeiq_operator.gateway.models import ResolvedModel, template_models

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


# ---- router models: ROUTEIQ_MODEL_*, ROUTEIQ_VARIANT_MODELS, the credentials they need -----------------

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64
DIGEST_C = "c" * 64
PEM = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----"
KNN = {"strategy": "knn", "modelArtifactRef": {"name": "knn-v1"}}


def models_facts(*models: ResolvedModel, variants: tuple[str, ...] = (), **facts: Any) -> ClusterFacts:
    return ClusterFacts(
        models={model.name: model for model in models}, variant_models=frozenset(variants), **facts
    )


def pod(state: DesiredState) -> dict[str, Any]:
    result: dict[str, Any] = by_kind(state)["Deployment"]["spec"]["template"]["spec"]
    return result


def test_s3_routing_model_with_its_credentials_and_endpoint() -> None:
    model = ResolvedModel(
        "knn-v1",
        DIGEST_A,
        uri="s3://models/knn/v1",
        public_key=PEM,
        credentials_secret="model-creds",
        s3_endpoint="https://minio.storage:9000",
    )
    state = build(models_facts(model), routing=KNN)
    variables = env(state)
    assert variables["ROUTEIQ_MODEL_S3_URI"] == "s3://models/knn/v1"
    assert variables["ROUTEIQ_MODEL_DIGEST"] == DIGEST_A
    assert variables["ROUTEIQ_MODEL_PUBLIC_KEY"] == PEM, "a public key is not secret: inline"
    assert "ROUTEIQ_MODELS_PATH" not in variables
    assert "ROUTEIQ_VARIANT_MODELS" not in variables
    assert variables["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "model-creds", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert variables["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "model-creds", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert variables["AWS_SESSION_TOKEN"] == {
        "secretKeyRef": {"name": "model-creds", "key": "AWS_SESSION_TOKEN", "optional": True}
    }
    assert variables["AWS_REGION"] == {
        "secretKeyRef": {"name": "model-creds", "key": "AWS_REGION", "optional": True}
    }
    assert variables["AWS_ENDPOINT_URL_S3"] == "https://minio.storage:9000"
    assert state.problems == []
    annotations = by_kind(state)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations["routeiq.io/models"]) == {
        "knn-v1": {"digest": DIGEST_A, "role": "routing", "uri": "s3://models/knn/v1"}
    }
    assert template_models(by_kind(state)["Deployment"]) == {
        "knn-v1": {"digest": DIGEST_A, "role": "routing", "uri": "s3://models/knn/v1"}
    }
    rotated = build(models_facts(model, secret_versions={"model-creds": "7"}), routing=KNN)
    assert (
        by_kind(rotated)["Deployment"]["spec"]["template"]["metadata"]["annotations"][
            "routeiq.io/secrets-checksum"
        ]
        != annotations["routeiq.io/secrets-checksum"]
    ), "a rotated model credential rolls the pods"
    for child in state.children:
        kubernetes_validate.validate(child, "1.33", strict=True)


def test_s3_region_from_the_artifact_wins_over_the_secret() -> None:
    model = ResolvedModel(
        "knn-v1", DIGEST_A, uri="s3://models/knn", credentials_secret="c", s3_region="eu-west-1"
    )
    assert env(build(models_facts(model), routing=KNN))["AWS_REGION"] == "eu-west-1"
    ambient = ResolvedModel("knn-v1", DIGEST_A, uri="s3://models/knn")
    variables = env(build(models_facts(ambient), routing=KNN))
    assert not {"AWS_ACCESS_KEY_ID", "AWS_REGION", "AWS_ENDPOINT_URL_S3"} & set(variables), (
        "IRSA / pod identity"
    )


def test_gs_routing_model_mounts_its_service_account_key() -> None:
    model = ResolvedModel("knn-v1", DIGEST_A, uri="gs://models/knn/v1", credentials_secret="gcs-key")
    state = build(models_facts(model), routing=KNN)
    variables = env(state)
    assert variables["ROUTEIQ_MODEL_S3_URI"] == "gs://models/knn/v1"
    assert variables["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/routeiq/gcs/credentials.json"
    assert "AWS_ACCESS_KEY_ID" not in variables
    assert "ROUTEIQ_MODEL_PUBLIC_KEY" not in variables
    volume = next(v for v in pod(state)["volumes"] if v["name"] == "model-gcs-credentials")
    assert volume["secret"] == {
        "secretName": "gcs-key",
        "items": [{"key": "credentials.json", "path": "credentials.json"}],
    }
    mount = next(m for m in container(state)["volumeMounts"] if m["name"] == "model-gcs-credentials")
    assert mount == {
        "name": "model-gcs-credentials",
        "mountPath": "/var/run/secrets/routeiq/gcs",
        "readOnly": True,
    }
    for child in state.children:
        kubernetes_validate.validate(child, "1.33", strict=True)


def test_file_routing_model_is_a_models_path() -> None:
    model = ResolvedModel("knn-v1", DIGEST_A, uri="file:///opt/models/knn.tar.gz")
    variables = env(build(models_facts(model), routing=KNN))
    assert variables["ROUTEIQ_MODELS_PATH"] == "file:///opt/models/knn.tar.gz"
    assert variables["ROUTEIQ_MODEL_DIGEST"] == DIGEST_A
    assert "ROUTEIQ_MODEL_S3_URI" not in variables


def test_pvc_routing_model_is_mounted_read_only() -> None:
    model = ResolvedModel("knn-v1", DIGEST_A, pvc=("router-models", "knn/v1"))
    state = build(models_facts(model), routing=KNN)
    assert env(state)["ROUTEIQ_MODELS_PATH"] == "/var/lib/routeiq/models/knn-v1/knn/v1"
    volume = next(v for v in pod(state)["volumes"] if v["name"] == "model-knn-v1")
    assert volume["persistentVolumeClaim"] == {"claimName": "router-models", "readOnly": True}
    mount = next(m for m in container(state)["volumeMounts"] if m["name"] == "model-knn-v1")
    assert mount == {"name": "model-knn-v1", "mountPath": "/var/lib/routeiq/models/knn-v1", "readOnly": True}
    assert template_models(by_kind(state)["Deployment"])["knn-v1"]["uri"] == "pvc://router-models/knn/v1"
    for child in state.children:
        kubernetes_validate.validate(child, "1.33", strict=True)


def test_variant_models_are_one_deterministic_json_object() -> None:
    routing = ResolvedModel("knn-v1", DIGEST_A, uri="s3://models/knn/v1", credentials_secret="creds")
    mlp = ResolvedModel(
        "mlp-v2", DIGEST_B, uri="s3://models/mlp/v2", public_key=PEM, credentials_secret="creds"
    )
    local = ResolvedModel("svm-v1", DIGEST_C, pvc=("claim", "svm"))
    state = build(models_facts(routing, mlp, local, variants=("svm-v1", "mlp-v2", "knn-v1")), routing=KNN)
    text = env(state)["ROUTEIQ_VARIANT_MODELS"]
    expected = {
        "knn-v1": {"digest": DIGEST_A, "uri": "s3://models/knn/v1"},
        "mlp-v2": {"digest": DIGEST_B, "publicKey": PEM, "uri": "s3://models/mlp/v2"},
        "svm-v1": {"digest": DIGEST_C, "uri": "/var/lib/routeiq/models/svm-v1/svm"},
    }
    assert text == json.dumps(expected, sort_keys=True, separators=(",", ":"))
    assert env(state)["ROUTEIQ_MODEL_S3_URI"] == "s3://models/knn/v1", "the routing model is also a variant's"
    reordered = build(models_facts(local, mlp, routing, variants=("knn-v1", "mlp-v2", "svm-v1")), routing=KNN)
    assert by_kind(reordered)["Deployment"] == by_kind(state)["Deployment"], "deterministic"
    roles = {name: entry["role"] for name, entry in template_models(by_kind(state)["Deployment"]).items()}
    assert roles == {"knn-v1": "routing", "mlp-v2": "variant", "svm-v1": "variant"}
    assert state.problems == []
    # a gateway with no routing model of its own: only the variants
    only = env(build(models_facts(mlp, variants=("mlp-v2",))))
    assert json.loads(only["ROUTEIQ_VARIANT_MODELS"]) == {"mlp-v2": expected["mlp-v2"]}
    assert not {"ROUTEIQ_MODEL_S3_URI", "ROUTEIQ_MODEL_DIGEST"} & set(only)


def test_models_needing_other_credentials_are_a_conflict_and_not_rendered() -> None:
    routing = ResolvedModel("knn-v1", DIGEST_A, uri="s3://models/knn", credentials_secret="team-a")
    other = ResolvedModel("mlp-v2", DIGEST_B, uri="s3://models/mlp", credentials_secret="team-b")
    endpoint = ResolvedModel(
        "svm-v1",
        DIGEST_C,
        uri="s3://models/svm",
        credentials_secret="team-a",
        s3_endpoint="https://minio:9000",
    )
    gcs = ResolvedModel("elo-v1", DIGEST_C, uri="gs://models/elo", credentials_secret="gcs")
    facts = models_facts(routing, other, endpoint, gcs, variants=("mlp-v2", "svm-v1", "elo-v1"))
    state = build(facts, routing=KNN)
    assert [(p.condition, p.reason) for p in state.problems] == [
        ("ModelsResolved", "ArtifactCredentialsConflict")
    ]
    message = state.problems[0].message
    for named in ("ModelArtifact mlp-v2", "ModelArtifact svm-v1", "than knn-v1"):
        assert named in message
    variants = json.loads(env(state)["ROUTEIQ_VARIANT_MODELS"])
    assert sorted(variants) == ["elo-v1"], "gs:// credentials are separate from the AWS identity"
    assert env(state)["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "team-a"
    assert "AWS_ENDPOINT_URL_S3" not in env(state)
    assert sorted(template_models(by_kind(state)["Deployment"])) == ["elo-v1", "knn-v1"]
    names = [item["name"] for item in container(state)["env"]]
    assert len(names) == len(set(names))


def test_a_provider_key_with_a_model_credential_name_is_reported_not_duplicated() -> None:
    secrets = {
        **BASE["spec"]["secrets"],
        "providerKeys": [{"env": "AWS_ACCESS_KEY_ID", "secretKeyRef": {"name": "bedrock", "key": "id"}}],
    }
    model = ResolvedModel("knn-v1", DIGEST_A, uri="s3://models/knn", credentials_secret="model-creds")
    state = build(models_facts(model), routing=KNN, secrets=secrets)
    names = [item["name"] for item in container(state)["env"]]
    assert len(names) == len(set(names))
    assert env(state)["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "bedrock", "key": "id"}}
    assert [p.reason for p in state.problems] == ["ArtifactCredentialsConflict"]
    assert "AWS_ACCESS_KEY_ID (ModelArtifact knn-v1)" in state.problems[0].message


def test_a_variant_model_named_like_a_strategy_is_refused() -> None:
    model = ResolvedModel("knn", DIGEST_A, uri="s3://models/knn")
    state = build(models_facts(model, variants=("knn",)))
    assert "ROUTEIQ_VARIANT_MODELS" not in env(state)
    assert [p.reason for p in state.problems] == ["ModelKeyReserved"]


def test_trained_strategy_without_a_ready_model_is_a_problem_and_the_rest_is_applied() -> None:
    state = build(ClusterFacts(unresolved_models={"knn-v1": "Failed (DigestMismatch)"}), routing=KNN)
    assert [(p.condition, p.reason) for p in state.problems] == [("ModelsResolved", "ModelArtifactNotReady")]
    assert "ModelArtifact knn-v1" in state.problems[0].message
    assert "Failed (DigestMismatch)" in state.problems[0].message
    assert {"Deployment", "Service"} <= set(by_kind(state))
    assert not {"ROUTEIQ_MODEL_S3_URI", "ROUTEIQ_MODELS_PATH", "ROUTEIQ_MODEL_DIGEST"} & set(env(state))
    assert (
        "routeiq.io/models" not in by_kind(state)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    )
    # a strategy that needs no model: no problem
    assert build(routing={"strategy": "least-busy"}).problems == []


def test_progress_deadline_comes_from_the_spec() -> None:
    assert by_kind(build())["Deployment"]["spec"]["progressDeadlineSeconds"] == 600
    tuned = by_kind(build(progressDeadlineSeconds=120))["Deployment"]
    assert tuned["spec"]["progressDeadlineSeconds"] == 120


def test_a_gateway_without_models_keeps_its_pod_template() -> None:
    state = build()
    template = by_kind(state)["Deployment"]["spec"]["template"]
    assert set(template["metadata"]["annotations"]) == {
        "routeiq.io/config-checksum",
        "routeiq.io/secrets-checksum",
    }
    assert {v["name"] for v in template["spec"]["volumes"]} == {"config", "tmp"}
    assert template_models(by_kind(state)["Deployment"]) == {}
