"""Router models on a gateway's pods: rollout, `status.models`, automatic rollback.

`reconcile_gateway` runs in-process with a real `KubeClient` against the
API emulator (which has no controllers): the tests write the ModelArtifact's status as its
controller would, and the Deployment's status as the Deployment controller would.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from routeiq_operator.gateway.controller import reconcile_gateway
from routeiq_operator.gateway.models import template_models
from routeiq_operator.kube import KubeClient
from tests.k8s.emulator import KubeEmulator
from tests.operator.scenarios import gateway

DIGEST_1 = "1" * 64
DIGEST_2 = "2" * 64
DIGEST_3 = "3" * 64
PEM = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"
LOGGER = logging.getLogger("tests.gateway_models")
REPLICAS = 2


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def make_artifact(emulator: KubeEmulator, namespace: str, name: str, uri: str, **source: Any) -> None:
    emulator.create_object(
        "modelartifacts",
        {
            "apiVersion": "routeiq.io/v1alpha1",
            "kind": "ModelArtifact",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "source": {"uri": uri, **source},
                "signature": {"publicKeySecretRef": {"name": "model-signing", "key": "public.pem"}},
            },
        },
    )


def set_artifact(emulator: KubeEmulator, namespace: str, name: str, phase: str, digest: str | None) -> None:
    """What the ModelArtifact controller reports (a Failed artifact carries no digest)."""
    artifact = emulator.get_object("modelartifacts", name, namespace)
    assert artifact is not None
    uri = artifact["spec"]["source"]["uri"]
    emulator.patch_status(
        "modelartifacts",
        name,
        {
            "observedGeneration": artifact["metadata"]["generation"],
            "phase": phase,
            "digest": digest,
            "uri": uri if digest else None,
            "strategy": "knn",
        },
        namespace,
    )


@pytest.fixture
def cluster(emulator: KubeEmulator, namespace: str) -> KubeEmulator:
    emulator.create_object(
        "secrets",
        _secret(
            "model-creds",
            namespace,
            {"AWS_ACCESS_KEY_ID": "AKIA-never-logged", "AWS_SECRET_ACCESS_KEY": "secret-never-logged"},
        ),
    )
    emulator.create_object("secrets", _secret("model-signing", namespace, {"public.pem": PEM}))
    make_artifact(
        emulator,
        namespace,
        "knn-v1",
        "s3://router-models/knn/v1",
        credentialsSecretRef={"name": "model-creds"},
        s3={"endpointUrl": "https://minio.storage:9000"},
    )
    return emulator


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((item for item in status.get("conditions") or [] if item["type"] == kind), None)


def cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found = condition(status, kind)
    assert found is not None, f"no {kind} condition in {status}"
    return found


def body(emulator: KubeEmulator, namespace: str) -> dict[str, Any]:
    found = emulator.get_object("routeiqgateways", "gw", namespace)
    assert found is not None
    return found


def deployment(emulator: KubeEmulator, namespace: str) -> dict[str, Any]:
    found = emulator.get_object("deployments", "gw-gateway", namespace)
    assert found is not None
    return found


def pod_env(emulator: KubeEmulator, namespace: str) -> dict[str, Any]:
    container = deployment(emulator, namespace)["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def pod_models(emulator: KubeEmulator, namespace: str) -> dict[str, dict[str, str]]:
    """The models the pod template carries (its routeiq.io/models annotation).

    Where a model leaves the pods, the tests read this rather than the env: the emulator's
    server-side apply keeps env entries the operator stops applying inside a container it still
    applies (a real API server removes them), while annotations are removed as they should be."""
    return template_models(deployment(emulator, namespace))


def rolled_out(emulator: KubeEmulator, namespace: str) -> None:
    """The Deployment controller: every pod of the current template is ready."""
    generation = deployment(emulator, namespace)["metadata"]["generation"]
    emulator.patch_status(
        "deployments",
        "gw-gateway",
        {
            "observedGeneration": generation,
            "replicas": REPLICAS,
            "updatedReplicas": REPLICAS,
            "readyReplicas": REPLICAS,
            "availableReplicas": REPLICAS,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        },
        namespace,
    )


def deadline_exceeded(emulator: KubeEmulator, namespace: str) -> None:
    """The Deployment controller: the current template's pods never became ready in time."""
    generation = deployment(emulator, namespace)["metadata"]["generation"]
    emulator.patch_status(
        "deployments",
        "gw-gateway",
        {
            "observedGeneration": generation,
            "replicas": REPLICAS + 1,
            "updatedReplicas": 1,
            "readyReplicas": REPLICAS,
            "availableReplicas": REPLICAS,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "gw-gateway-7d9" has timed out progressing.',
                },
            ],
        },
        namespace,
    )


async def deployment_event(kube: KubeClient, emulator: KubeEmulator, namespace: str) -> dict[str, Any]:
    """What main.deployment_changed does on a Deployment event: a pass over the owning gateway."""
    return await reconcile_gateway(kube, body(emulator, namespace), LOGGER)


def knn_gateway(namespace: str, **spec: Any) -> dict[str, Any]:
    return gateway(
        "gw",
        namespace,
        replicas=REPLICAS,
        routing={"strategy": "knn", "modelArtifactRef": {"name": "knn-v1"}},
        **spec,
    )


async def test_ready_artifact_rolls_out_and_a_failed_rollout_is_rolled_back(
    cluster: KubeEmulator, namespace: str, kube: KubeClient
) -> None:
    set_artifact(cluster, namespace, "knn-v1", "Ready", DIGEST_1)
    cluster.create_object("routeiqgateways", knn_gateway(namespace))
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    env = pod_env(cluster, namespace)
    assert env["ROUTEIQ_MODEL_S3_URI"] == "s3://router-models/knn/v1"
    assert env["ROUTEIQ_MODEL_DIGEST"] == DIGEST_1
    assert env["ROUTEIQ_MODEL_PUBLIC_KEY"] == PEM.strip()
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "model-creds", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_ENDPOINT_URL_S3"] == "https://minio.storage:9000"
    assert "models" not in body(cluster, namespace)["status"], "not loaded until the pods roll out"

    # the pods roll out: the rendered models are the stable set
    rolled_out(cluster, namespace)
    status = await deployment_event(kube, cluster, namespace)
    stable = {"knn-v1": {"digest": DIGEST_1, "uri": "s3://router-models/knn/v1", "role": "routing"}}
    assert status["models"] == stable
    stored = body(cluster, namespace)["status"]
    assert stored["models"] == stable
    assert cond(stored, "Ready")["status"] == "True"
    first_generation = deployment(cluster, namespace)["metadata"]["generation"]

    # a new digest: the pod template follows; status.models stays until it has rolled out
    set_artifact(cluster, namespace, "knn-v1", "Ready", DIGEST_2)
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    assert pod_env(cluster, namespace)["ROUTEIQ_MODEL_DIGEST"] == DIGEST_2
    assert deployment(cluster, namespace)["metadata"]["generation"] > first_generation
    assert body(cluster, namespace)["status"]["models"] == stable

    # its pods never become ready: on the Deployment's event the stable digest is applied at once
    deadline_exceeded(cluster, namespace)
    status = await deployment_event(kube, cluster, namespace)
    assert pod_env(cluster, namespace)["ROUTEIQ_MODEL_DIGEST"] == DIGEST_1
    stored = body(cluster, namespace)["status"]
    assert stored["rejectedModels"] == {"knn-v1": DIGEST_2}
    assert stored["models"] == stable
    degraded = cond(stored, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ModelRolloutFailed")
    for named in ("knn-v1", DIGEST_2[:12], f"rolled back to {DIGEST_1[:12]}"):
        assert named in degraded["message"]
    assert status["rejectedModels"] == {"knn-v1": DIGEST_2}

    # the rejected digest is not tried again, by any later pass
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    assert pod_env(cluster, namespace)["ROUTEIQ_MODEL_DIGEST"] == DIGEST_1
    rolled_out(cluster, namespace)
    await deployment_event(kube, cluster, namespace)
    stored = body(cluster, namespace)["status"]
    assert stored["models"] == stable
    assert cond(stored, "Degraded")["reason"] == "ModelRolloutFailed"
    assert cond(stored, "Ready")["status"] == "True"

    # a third digest is tried, and rolls out
    set_artifact(cluster, namespace, "knn-v1", "Ready", DIGEST_3)
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    assert pod_env(cluster, namespace)["ROUTEIQ_MODEL_DIGEST"] == DIGEST_3
    rolled_out(cluster, namespace)
    await deployment_event(kube, cluster, namespace)
    stored = body(cluster, namespace)["status"]
    assert stored["models"] == {"knn-v1": {**stable["knn-v1"], "digest": DIGEST_3}}
    assert cond(stored, "Degraded")["status"] == "False"
    assert stored["rejectedModels"] == {"knn-v1": DIGEST_2}

    # a failed (tampered) artifact never changes the pods
    before = deployment(cluster, namespace)
    set_artifact(cluster, namespace, "knn-v1", "Failed", None)
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    after = deployment(cluster, namespace)
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert body(cluster, namespace)["status"]["models"]["knn-v1"]["digest"] == DIGEST_3
    # nothing secret reached the status
    assert "never-logged" not in json.dumps(body(cluster, namespace)["status"])


async def test_the_rollback_happens_in_the_reconcile_pass_too(
    cluster: KubeEmulator, namespace: str, kube: KubeClient
) -> None:
    set_artifact(cluster, namespace, "knn-v1", "Ready", DIGEST_1)
    cluster.create_object("routeiqgateways", knn_gateway(namespace))
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    rolled_out(cluster, namespace)
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    set_artifact(cluster, namespace, "knn-v1", "Ready", DIGEST_2)
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    deadline_exceeded(cluster, namespace)
    status = await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    assert pod_env(cluster, namespace)["ROUTEIQ_MODEL_DIGEST"] == DIGEST_1
    assert status["rejectedModels"] == {"knn-v1": DIGEST_2}
    assert cond(status, "Degraded")["reason"] == "ModelRolloutFailed"


async def test_a_failed_artifact_leaves_the_pods_as_they_are(
    cluster: KubeEmulator, namespace: str, kube: KubeClient
) -> None:
    set_artifact(cluster, namespace, "knn-v1", "Ready", DIGEST_1)
    cluster.create_object("routeiqgateways", knn_gateway(namespace))
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    rolled_out(cluster, namespace)
    await deployment_event(kube, cluster, namespace)
    before = deployment(cluster, namespace)
    set_artifact(cluster, namespace, "knn-v1", "Failed", None)
    status = await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    after = deployment(cluster, namespace)
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert status["models"]["knn-v1"]["digest"] == DIGEST_1
    assert cond(status, "Ready")["status"] == "True"


async def test_a_trained_gateway_without_a_ready_model_says_so_and_applies_the_rest(
    cluster: KubeEmulator, namespace: str, kube: KubeClient
) -> None:
    set_artifact(cluster, namespace, "knn-v1", "Pending", None)
    cluster.create_object("routeiqgateways", knn_gateway(namespace))
    status = await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    resolved = cond(status, "ModelsResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", "ModelArtifactNotReady")
    assert "ModelArtifact knn-v1" in resolved["message"]
    assert "Pending" in resolved["message"]
    assert cond(status, "Degraded")["reason"] == "ModelArtifactNotReady"
    assert not {"ROUTEIQ_MODEL_S3_URI", "ROUTEIQ_MODEL_DIGEST"} & set(pod_env(cluster, namespace))
    assert cluster.get_object("services", "gw-gateway", namespace) is not None, "the rest is applied"
    # once Ready, the model is rendered and the condition goes away
    set_artifact(cluster, namespace, "knn-v1", "Ready", DIGEST_1)
    status = await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    assert condition(status, "ModelsResolved") is None
    assert pod_env(cluster, namespace)["ROUTEIQ_MODEL_DIGEST"] == DIGEST_1


def experiment(namespace: str, artifact: str) -> dict[str, Any]:
    return {
        "apiVersion": "routeiq.io/v1alpha1",
        "kind": "RoutingExperiment",
        "metadata": {"name": "exp", "namespace": namespace},
        "spec": {
            "gatewayRef": {"name": "gw"},
            "control": "control",
            "variants": [
                {"name": "control", "strategy": "least-busy", "weight": 50},
                {
                    "name": "candidate",
                    "strategy": "mlp",
                    "modelArtifactRef": {"name": artifact},
                    "weight": 50,
                },
            ],
        },
    }


async def test_an_experiments_variant_model_is_loaded_and_rolled_back_alone(
    cluster: KubeEmulator, namespace: str, kube: KubeClient
) -> None:
    make_artifact(
        cluster,
        namespace,
        "mlp-v2",
        "s3://router-models/mlp/v2",
        credentialsSecretRef={"name": "model-creds"},
    )
    set_artifact(cluster, namespace, "mlp-v2", "Ready", DIGEST_2)
    cluster.create_object("routeiqgateways", gateway("gw", namespace, replicas=REPLICAS))
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    assert "ROUTEIQ_VARIANT_MODELS" not in pod_env(cluster, namespace)
    rolled_out(cluster, namespace)
    await deployment_event(kube, cluster, namespace)
    assert "models" not in body(cluster, namespace)["status"]

    # an experiment wants the variant's model: it reaches the pods, then status.models
    cluster.create_object("routingexperiments", experiment(namespace, "mlp-v2"))
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    variants = json.loads(pod_env(cluster, namespace)["ROUTEIQ_VARIANT_MODELS"])
    assert variants == {
        "mlp-v2": {"digest": DIGEST_2, "publicKey": PEM.strip(), "uri": "s3://router-models/mlp/v2"}
    }
    rolled_out(cluster, namespace)
    status = await deployment_event(kube, cluster, namespace)
    assert status["models"] == {
        "mlp-v2": {"digest": DIGEST_2, "uri": "s3://router-models/mlp/v2", "role": "variant"}
    }

    # a new digest whose rollout fails: back to the stable one
    set_artifact(cluster, namespace, "mlp-v2", "Ready", DIGEST_3)
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    assert json.loads(pod_env(cluster, namespace)["ROUTEIQ_VARIANT_MODELS"])["mlp-v2"]["digest"] == DIGEST_3
    deadline_exceeded(cluster, namespace)
    await deployment_event(kube, cluster, namespace)
    assert json.loads(pod_env(cluster, namespace)["ROUTEIQ_VARIANT_MODELS"])["mlp-v2"]["digest"] == DIGEST_2
    assert body(cluster, namespace)["status"]["rejectedModels"] == {"mlp-v2": DIGEST_3}

    # the experiment is gone: the variant's model leaves the pods, and status.models once rolled out
    cluster.delete_object("routingexperiments", "exp", namespace)
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    assert pod_models(cluster, namespace) == {}
    rolled_out(cluster, namespace)
    status = await deployment_event(kube, cluster, namespace)
    assert "models" not in status
    assert "models" not in body(cluster, namespace)["status"]


async def test_a_first_variant_model_that_fails_is_removed_from_the_pods(
    cluster: KubeEmulator, namespace: str, kube: KubeClient
) -> None:
    make_artifact(
        cluster,
        namespace,
        "mlp-v2",
        "s3://router-models/mlp/v2",
        credentialsSecretRef={"name": "model-creds"},
    )
    set_artifact(cluster, namespace, "mlp-v2", "Ready", DIGEST_2)
    cluster.create_object("routeiqgateways", gateway("gw", namespace, replicas=REPLICAS))
    cluster.create_object("routingexperiments", experiment(namespace, "mlp-v2"))
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    assert "ROUTEIQ_VARIANT_MODELS" in pod_env(cluster, namespace)
    assert pod_models(cluster, namespace) == {
        "mlp-v2": {"digest": DIGEST_2, "role": "variant", "uri": "s3://router-models/mlp/v2"}
    }
    deadline_exceeded(cluster, namespace)
    status = await deployment_event(kube, cluster, namespace)
    assert pod_models(cluster, namespace) == {}
    assert status["rejectedModels"] == {"mlp-v2": DIGEST_2}
    degraded = cond(status, "Degraded")
    assert degraded["reason"] == "ModelRolloutFailed"
    assert "it is not loaded" in degraded["message"]


async def test_an_unsigned_artifact_accepted_as_optional_gets_no_key_in_the_pods(
    cluster: KubeEmulator, namespace: str, kube: KubeClient
) -> None:
    """signature.required: false accepts an unsigned artifact; with the key, the pods would refuse it."""
    cluster.patch_object(
        "modelartifacts",
        "knn-v1",
        {
            "spec": {
                "signature": {
                    "publicKeySecretRef": {"name": "model-signing", "key": "public.pem"},
                    "required": False,
                }
            }
        },
        namespace,
    )
    set_artifact(cluster, namespace, "knn-v1", "Ready", DIGEST_1)
    cluster.create_object("routeiqgateways", knn_gateway(namespace))
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    env = pod_env(cluster, namespace)
    assert env["ROUTEIQ_MODEL_DIGEST"] == DIGEST_1
    assert "ROUTEIQ_MODEL_PUBLIC_KEY" not in env
    # the same artifact reported signed and verified: the pods check the signature too
    cluster.patch_status("modelartifacts", "knn-v1", {"signature": "verified"}, namespace)
    await reconcile_gateway(kube, body(cluster, namespace), LOGGER)
    assert "BEGIN PUBLIC KEY" in str(pod_env(cluster, namespace)["ROUTEIQ_MODEL_PUBLIC_KEY"])
