"""Router models in a gateway's pods: ROUTEIQ_MODEL_*, ROUTEIQ_VARIANT_MODELS, the credentials they need."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate

from routeiq_operator.gateway.children import ClusterFacts
from routeiq_operator.gateway.models import ResolvedModel, template_models
from tests.operator.gateway_render import BASE, build, by_kind, container, env, pod

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64
DIGEST_C = "c" * 64
PEM = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----"
KNN = {"strategy": "knn", "modelArtifactRef": {"name": "knn-v1"}}


def models_facts(*models: ResolvedModel, variants: tuple[str, ...] = (), **facts: Any) -> ClusterFacts:
    return ClusterFacts(
        models={model.name: model for model in models}, variant_models=frozenset(variants), **facts
    )


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
