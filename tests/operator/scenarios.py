"""The operator's lifecycle scenarios, run against the API emulator (tests/) and a real cluster (e2e/).

Each scenario takes a `Harness`: a cluster with the small API both `KubeEmulator` and
`e2e.real_cluster.RealCluster` offer, the test's namespace, the operator's log, and what only
one of them can do (mark a Deployment ready where no controller runs; inject API faults).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml

Obj = dict[str, Any]


class Cluster(Protocol):
    def get_object(self, resource: str, name: str, namespace: str | None = None) -> Obj | None: ...
    def list_objects(
        self, resource: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[Obj]: ...
    def create_object(self, resource: str, body: Mapping[str, Any], namespace: str | None = None) -> Obj: ...
    def patch_object(
        self, resource: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> Obj: ...
    def replace_object(
        self, resource: str, name: str, body: Mapping[str, Any], namespace: str | None = None
    ) -> Obj: ...
    def delete_object(self, resource: str, name: str, namespace: str | None = None) -> Any: ...
    def wait_for(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        condition: Callable[[Obj | None], bool],
        timeout: float = 10.0,
    ) -> Obj | None: ...


@dataclass
class Harness:
    cluster: Cluster
    namespace: str
    operator_log: Callable[[], str]
    # (namespace, deployment, replicas): stands in for the Deployment controller; None on a real cluster
    mark_ready: Callable[[str, str, int], None] | None = None
    # KubeEmulator.inject_faults; None on a real cluster
    inject_faults: Callable[..., Any] | None = None
    # the gateway image (a real cluster needs one it can pull); None: the CRD's default
    image: dict[str, str] | None = None
    # (namespace, deployment): the Deployment controller reporting ProgressDeadlineExceeded for the
    # current template; None on a real cluster
    mark_stalled: Callable[[str, str], None] | None = None

    def gateway(self, name: str, **spec: Any) -> dict[str, Any]:
        return gateway(name, self.namespace, **({"image": self.image} if self.image else {}), **spec)


def gateway(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "routeiq.io/v1alpha1",
        "kind": "RouteIQGateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "litellm": {
                "modelList": [
                    {
                        "model_name": "chat",
                        "litellm_params": {
                            "model": "openai/gpt-4o-mini",
                            "api_key": "os.environ/OPENAI_API_KEY",
                        },
                    }
                ]
            },
            "secrets": {
                "masterKey": {"name": "routeiq-secrets", "key": "master-key"},
                "providerKeys": [
                    {"env": "OPENAI_API_KEY", "secretKeyRef": {"name": "routeiq-secrets", "key": "openai"}}
                ],
            },
            **spec,
        },
    }


CHILD_KINDS = {
    "serviceaccounts": "gw-gateway",
    "configmaps": "gw-gateway-config",
    "deployments": "gw-gateway",
    "services": "gw-gateway",
}
ROOT = Path(__file__).resolve().parents[2]


def wait(
    cluster: Cluster,
    resource: str,
    name: str,
    namespace: str,
    condition: Callable[[dict[str, Any] | None], bool],
    timeout: float = 30,
) -> dict[str, Any] | None:
    return cluster.wait_for(resource, name, namespace, condition=condition, timeout=timeout)


def exists(obj: dict[str, Any] | None) -> bool:
    return obj is not None


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            result: dict[str, Any] = item
            return result
    return None


def has_condition(
    kind: str, status: str, reason: str | None = None
) -> Callable[[dict[str, Any] | None], bool]:
    def check(obj: dict[str, Any] | None) -> bool:
        found = condition(obj, kind)
        return (
            found is not None and found["status"] == status and (reason is None or found["reason"] == reason)
        )

    return check


def create_makes_every_child_and_reports_ready(h: Harness) -> None:
    cluster, namespace = h.cluster, h.namespace
    cluster.create_object("routeiqgateways", h.gateway("gw", tier="production"))
    for resource, name in {
        **CHILD_KINDS,
        "horizontalpodautoscalers": "gw-gateway",
        "poddisruptionbudgets": "gw-gateway",
        "networkpolicies": "gw-gateway",
    }.items():
        child = wait(cluster, resource, name, namespace, exists)
        assert child is not None
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("RouteIQGateway", "gw", True)
    waiting = wait(
        cluster, "routeiqgateways", "gw", namespace, has_condition("Ready", "False", "WaitingForReplicas")
    )
    assert waiting is not None
    assert waiting["status"]["endpoint"] == f"http://gw-gateway.{namespace}.svc:4000"
    assert waiting["status"]["observedGeneration"] == waiting["metadata"]["generation"]
    assert has_condition("ResolvedRefs", "True")(waiting)
    if h.mark_ready is not None:  # else the cluster's own controllers make the pods ready
        h.mark_ready(namespace, "gw-gateway", 3)
    ready = wait(cluster, "routeiqgateways", "gw", namespace, has_condition("Ready", "True", "GatewayReady"))
    assert ready is not None
    assert (ready["status"]["replicas"], ready["status"]["readyReplicas"]) == (3, 3)
    assert has_condition("Degraded", "False")(ready)
    assert has_condition("Progressing", "False", "RolloutComplete")(ready)
    # nothing secret reached the status, the children or the operator's log
    for secret in ("sk-operator-test-never-logged", "sk-openai-never-logged"):
        assert secret not in str(ready)
        assert secret not in str(cluster.list_objects("configmaps", namespace))
        assert secret not in h.operator_log()


def updates_converge(h: Harness) -> None:
    cluster, namespace = h.cluster, h.namespace
    cluster.create_object("routeiqgateways", h.gateway("gw", tier="standard", replicas=2))
    wait(cluster, "deployments", "gw-gateway", namespace, exists)
    cluster.patch_object(
        "routeiqgateways", "gw", {"spec": {"replicas": 5, "routing": {"strategy": "least-busy"}}}, namespace
    )

    def scaled(obj: dict[str, Any] | None) -> bool:
        env = {
            e["name"]: e.get("value")
            for e in (obj or {})
            .get("spec", {})
            .get("template", {})
            .get("spec", {})
            .get("containers", [{}])[0]
            .get("env", [])
        }
        return (
            obj is not None
            and obj["spec"].get("replicas") == 5
            and env.get("ROUTEIQ_STRATEGY") == "least-busy"
        )

    wait(cluster, "deployments", "gw-gateway", namespace, scaled)
    # autoscaling on: an HPA appears and the Deployment gives up its replica count
    cluster.patch_object(
        "routeiqgateways", "gw", {"spec": {"replicas": None, "autoscaling": {"enabled": True}}}, namespace
    )
    wait(cluster, "horizontalpodautoscalers", "gw-gateway", namespace, exists)
    wait(
        cluster,
        "deployments",
        "gw-gateway",
        namespace,
        lambda d: d is not None and "replicas" not in d["spec"],
    )
    # autoscaling off: the HPA is deleted
    cluster.patch_object("routeiqgateways", "gw", {"spec": {"autoscaling": {"enabled": False}}}, namespace)
    wait(cluster, "horizontalpodautoscalers", "gw-gateway", namespace, lambda o: o is None)


def external_secret_needs_its_crd(h: Harness) -> None:
    cluster, namespace = h.cluster, h.namespace
    external = {
        "masterKey": {"name": "routeiq-secrets", "key": "master-key"},
        "externalSecret": {
            "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
            "data": [{"secretKey": "DATABASE_URL", "remoteRef": {"key": "routeiq/database-url"}}],
        },
    }
    if cluster.get_object("customresourcedefinitions", EXTERNAL_SECRET_CRD["metadata"]["name"]) is not None:
        pytest.skip("the cluster already has the External Secrets Operator's CRD")
    cluster.create_object("routeiqgateways", h.gateway("gw", secrets=external))
    missing = wait(
        cluster,
        "routeiqgateways",
        "gw",
        namespace,
        has_condition("SecretsSynced", "False", "ExternalSecretsNotInstalled"),
    )
    assert has_condition("Degraded", "True", "ExternalSecretsNotInstalled")(missing)
    assert cluster.list_objects("deployments", namespace), "the rest is applied all the same"
    cluster.create_object("customresourcedefinitions", EXTERNAL_SECRET_CRD)
    created = wait(cluster, "externalsecrets", "gw-gateway-secrets", namespace, exists)
    assert created is not None
    assert created["spec"]["target"]["name"] == "gw-gateway-secrets"
    wait(cluster, "routeiqgateways", "gw", namespace, lambda o: condition(o, "SecretsSynced") is None)


PROMETHEUS_RULE_CRD = ROOT / "tests" / "operator" / "schemas" / "monitoring.coreos.com_prometheusrules.yaml"


def prometheus_rule_needs_its_crd(h: Harness) -> None:
    """Asked for without the Prometheus Operator's CRD: a False condition and the rest applied; with
    the (upstream) CRD: the PrometheusRule, accepted by its schema; disabled: deleted."""
    cluster, namespace = h.cluster, h.namespace
    (crd,) = [document for document in yaml.safe_load_all(PROMETHEUS_RULE_CRD.read_text()) if document]
    if cluster.get_object("customresourcedefinitions", crd["metadata"]["name"]) is not None:
        pytest.skip("the cluster already has the Prometheus Operator's PrometheusRule CRD")
    wanted = {"prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}}}
    cluster.create_object("routeiqgateways", h.gateway("gw", observability=wanted))
    missing = wait(
        cluster,
        "routeiqgateways",
        "gw",
        namespace,
        has_condition("MonitoringConfigured", "False", "PrometheusRulesNotInstalled"),
    )
    assert has_condition("Degraded", "True", "PrometheusRulesNotInstalled")(missing)
    assert cluster.list_objects("deployments", namespace), "the rest is applied all the same"
    cluster.create_object("customresourcedefinitions", crd)
    rule = wait(cluster, "prometheusrules", "gw-gateway", namespace, exists)
    assert rule is not None
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert [ref["kind"] for ref in rule["metadata"]["ownerReferences"]] == ["RouteIQGateway"]
    matchers = f'namespace="{namespace}", job="gw-gateway"'
    assert all(matchers in rule_["expr"] for group in rule["spec"]["groups"] for rule_ in group["rules"])
    wait(cluster, "routeiqgateways", "gw", namespace, lambda o: condition(o, "MonitoringConfigured") is None)
    cluster.patch_object(
        "routeiqgateways",
        "gw",
        {"spec": {"observability": {"prometheusRule": {"enabled": False}}}},
        namespace,
    )
    wait(cluster, "prometheusrules", "gw-gateway", namespace, lambda o: o is None)


def delete_removes_the_children(h: Harness) -> None:
    cluster, namespace = h.cluster, h.namespace
    cluster.create_object("routeiqgateways", h.gateway("gw"))
    wait(cluster, "deployments", "gw-gateway", namespace, exists)
    stored = cluster.get_object("routeiqgateways", "gw", namespace)
    assert stored is not None
    assert "routeiq.io/finalizer" in stored["metadata"]["finalizers"]
    cluster.delete_object("routeiqgateways", "gw", namespace)
    wait(cluster, "routeiqgateways", "gw", namespace, lambda o: o is None)
    for resource in CHILD_KINDS:
        assert cluster.list_objects(resource, namespace, label_selector="app.kubernetes.io/instance=gw") == []


def drift_is_repaired(h: Harness) -> None:
    cluster, namespace = h.cluster, h.namespace
    cluster.create_object("routeiqgateways", h.gateway("gw"))
    original = wait(cluster, "deployments", "gw-gateway", namespace, exists)
    assert original is not None
    wait(cluster, "services", "gw-gateway", namespace, exists)
    cluster.delete_object("services", "gw-gateway", namespace)
    cluster.patch_object(
        "deployments",
        "gw-gateway",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                **original["spec"]["template"]["spec"]["containers"][0],
                                "image": "attacker/image:latest",
                            }
                        ]
                    }
                }
            }
        },
        namespace,
    )
    wait(cluster, "services", "gw-gateway", namespace, exists, timeout=20)
    repaired = wait(
        cluster,
        "deployments",
        "gw-gateway",
        namespace,
        lambda d: (
            d is not None
            and d["spec"]["template"]["spec"]["containers"][0]["image"]
            == original["spec"]["template"]["spec"]["containers"][0]["image"]
        ),
        timeout=20,
    )
    assert repaired is not None


def api_errors_are_retried(h: Harness) -> None:
    cluster, namespace = h.cluster, h.namespace
    if h.inject_faults is None:
        pytest.skip("injecting API faults needs the emulator")
    server_errors = h.inject_faults(
        method="PATCH", path_re=rf"/namespaces/{namespace}/deployments/", status=500, times=2
    )
    conflict = h.inject_faults(
        method="PATCH", path_re=rf"/namespaces/{namespace}/services/", status=409, times=1
    )
    cluster.create_object("routeiqgateways", h.gateway("gw"))
    wait(cluster, "deployments", "gw-gateway", namespace, exists, timeout=40)
    wait(cluster, "services", "gw-gateway", namespace, exists, timeout=40)
    assert (server_errors.hits, conflict.hits) == (2, 1)


def invalid_gateway_that_bypassed_admission_gets_a_condition_and_no_children(h: Harness) -> None:
    cluster, namespace = h.cluster, h.namespace
    # an object stored before today's rules existed: create it under a CRD without its CEL rules
    crd = cluster.get_object("customresourcedefinitions", "routeiqgateways.routeiq.io")
    assert crd is not None
    lax = _without_cel(crd)
    cluster.replace_object("customresourcedefinitions", "routeiqgateways.routeiq.io", lax)
    try:
        cluster.create_object(
            "routeiqgateways", h.gateway("gw", autoscaling={"minReplicas": 9, "maxReplicas": 3})
        )
    finally:
        restored = cluster.get_object("customresourcedefinitions", "routeiqgateways.routeiq.io")
        assert restored is not None
        crd["metadata"]["resourceVersion"] = restored["metadata"]["resourceVersion"]
        cluster.replace_object("customresourcedefinitions", "routeiqgateways.routeiq.io", crd)
    invalid = wait(
        cluster, "routeiqgateways", "gw", namespace, has_condition("Ready", "False", "InvalidSpec")
    )
    found = condition(invalid, "Ready")
    assert found is not None
    assert "spec.autoscaling: minReplicas must not exceed maxReplicas" in found["message"]
    for resource in CHILD_KINDS:
        assert cluster.list_objects(resource, namespace, label_selector="app.kubernetes.io/instance=gw") == []


def operator_restarted_mid_reconcile_converges_without_duplicates(
    h: Harness, restart_operator: Callable[[], None]
) -> None:
    """The operator dies while applying (SIGKILL: no cleanup); its successor converges."""
    cluster, namespace = h.cluster, h.namespace
    stuck = None
    if h.inject_faults is not None:  # every Service write fails until the first operator is dead
        stuck = h.inject_faults(
            method="PATCH", path_re=rf"/namespaces/{namespace}/services/", status=500, times=None
        )
    cluster.create_object("routeiqgateways", h.gateway("gw", tier="production"))
    wait(cluster, "deployments", "gw-gateway", namespace, exists)
    if stuck is not None:
        assert cluster.get_object("services", "gw-gateway", namespace) is None, "killed mid-reconcile"
        stuck.times = 0  # spent: the next operator's writes go through
    restart_operator()
    wait(cluster, "services", "gw-gateway", namespace, exists)
    wait(cluster, "poddisruptionbudgets", "gw-gateway", namespace, exists)
    for resource in ("deployments", "services", "configmaps", "horizontalpodautoscalers"):
        found = cluster.list_objects(resource, namespace, label_selector="app.kubernetes.io/instance=gw")
        assert len(found) == 1, (resource, found)


def kubectl_applies_the_crds_and_gets_a_gateway_by_short_name(
    kubeconfig: str, apply_flags: list[str]
) -> None:
    kubectl = ["kubectl", "--kubeconfig", kubeconfig]
    subprocess.run(
        [*kubectl, "apply", *apply_flags, "-f", str(ROOT / "crds")], check=True, capture_output=True
    )
    namespace = '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "routeiq"}}'
    subprocess.run(
        [*kubectl, "apply", *apply_flags, "-f", "-"],
        input=namespace.encode(),
        check=True,
        capture_output=True,
    )
    example = str(ROOT / "examples" / "tier3" / "gateway.yaml")
    subprocess.run([*kubectl, "apply", *apply_flags, "-f", example], check=True, capture_output=True)
    listed = subprocess.run(
        [*kubectl, "get", "rqgw", "-n", "routeiq", "-o", "name"], check=True, capture_output=True, text=True
    )
    assert listed.stdout.strip() == "routeiqgateway.routeiq.io/production"
    by_category = subprocess.run(
        [*kubectl, "get", "routeiq", "-n", "routeiq", "-o", "name"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "routeiqgateway.routeiq.io/production" in by_category.stdout


def _without_cel(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [_without_cel(item) for item in node]
    return node


EXTERNAL_SECRET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "externalsecrets.external-secrets.io"},
    "spec": {
        "group": "external-secrets.io",
        "scope": "Namespaced",
        "names": {
            "kind": "ExternalSecret",
            "plural": "externalsecrets",
            "singular": "externalsecret",
            "listKind": "ExternalSecretList",
            "shortNames": ["es"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def model_rollout_and_automatic_rollback(h: Harness) -> None:
    """A ModelArtifact the operator verified reaches the pods and, once they rolled out,
    status.models; a new digest whose rollout exceeds the progress deadline is rejected and the pods
    go back to the stable one at once; a third digest is tried; a Failed (tampered) artifact leaves
    the pods as they are.

    The artifacts are real (file:// in a temporary directory, published with the router's
    `write_artifact`): the operator's ModelArtifact controller verifies them, as in production."""
    import hashlib
    import shutil
    import tempfile
    from datetime import UTC, datetime

    from routeiq_router.artifacts.manifest import TrainingData, write_artifact

    if h.mark_ready is None or h.mark_stalled is None:
        pytest.skip("needs a harness that stands in for the Deployment controller (the emulator's)")
    mark_ready, mark_stalled = h.mark_ready, h.mark_stalled
    with tempfile.TemporaryDirectory(prefix="routeiq-models-") as root:
        versions: list[tuple[str, str]] = []  # (uri, digest)
        for version in range(1, 4):
            directory = Path(root) / f"v{version}"
            write_artifact(
                directory,
                strategy="knn",
                files={"labels.json": f'{{"version": {version}}}'.encode()},
                candidates=["small", "large"],
                training_data=TrainingData(sha256="ab" * 32, examples=10 * version),
                created_at=datetime(2026, 1, version, tzinfo=UTC),
            )
            digest = hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()
            versions.append((directory.as_uri(), digest))
        tampered = Path(root) / "tampered"
        shutil.copytree(Path(root) / "v1", tampered)
        (tampered / "labels.json").write_bytes(b'{"version": "not what the manifest says"}')
        model_rollout_with_artifacts(h, mark_ready, mark_stalled, versions, tampered.as_uri())


def model_rollout_with_artifacts(
    h: Harness,
    mark_ready: Callable[[str, str, int], None],
    mark_stalled: Callable[[str, str], None],
    versions: list[tuple[str, str]],
    tampered: str,
) -> None:
    cluster, namespace = h.cluster, h.namespace
    (uri_1, digest_1), (uri_2, digest_2), (uri_3, digest_3) = versions

    def verified(digest: str | None, phase: str = "Ready") -> Callable[[dict[str, Any] | None], bool]:
        def check(obj: dict[str, Any] | None) -> bool:
            status = (obj or {}).get("status") or {}
            return bool(status.get("phase") == phase and status.get("digest") == digest)

        return check

    def publish(uri: str, digest: str | None, phase: str = "Ready") -> None:
        cluster.patch_object("modelartifacts", "knn-v1", {"spec": {"source": {"uri": uri}}}, namespace)
        wait(cluster, "modelartifacts", "knn-v1", namespace, verified(digest, phase))

    def env_digest(digest: str) -> Callable[[dict[str, Any] | None], bool]:
        def check(obj: dict[str, Any] | None) -> bool:
            template = ((obj or {}).get("spec") or {}).get("template") or {}
            containers = (template.get("spec") or {}).get("containers") or [{}]
            env = {item["name"]: item.get("value") for item in containers[0].get("env") or []}
            return env.get("ROUTEIQ_MODEL_DIGEST") == digest

        return check

    def loaded(digest: str) -> Callable[[dict[str, Any] | None], bool]:
        def check(obj: dict[str, Any] | None) -> bool:
            models = ((obj or {}).get("status") or {}).get("models") or {}
            return bool((models.get("knn-v1") or {}).get("digest") == digest)

        return check

    cluster.create_object(
        "modelartifacts",
        {
            "apiVersion": "routeiq.io/v1alpha1",
            "kind": "ModelArtifact",
            "metadata": {"name": "knn-v1", "namespace": namespace},
            "spec": {"source": {"uri": uri_1}, "strategy": "knn"},
        },
    )
    wait(cluster, "modelartifacts", "knn-v1", namespace, verified(digest_1))
    routing = {"strategy": "knn", "modelArtifactRef": {"name": "knn-v1"}}
    cluster.create_object("routeiqgateways", h.gateway("gw", replicas=2, routing=routing))
    wait(cluster, "deployments", "gw-gateway", namespace, env_digest(digest_1))
    mark_ready(namespace, "gw-gateway", 2)
    ready = wait(cluster, "routeiqgateways", "gw", namespace, loaded(digest_1))
    assert ready is not None
    assert ready["status"]["models"]["knn-v1"] == {"digest": digest_1, "uri": uri_1, "role": "routing"}

    # a new digest rolls out to the pods; its pods never become ready: rolled back at once
    publish(uri_2, digest_2)
    wait(cluster, "deployments", "gw-gateway", namespace, env_digest(digest_2))
    mark_stalled(namespace, "gw-gateway")
    wait(cluster, "deployments", "gw-gateway", namespace, env_digest(digest_1))
    failed = wait(
        cluster, "routeiqgateways", "gw", namespace, has_condition("Degraded", "True", "ModelRolloutFailed")
    )
    assert failed is not None
    assert failed["status"]["rejectedModels"] == {"knn-v1": digest_2}
    assert failed["status"]["models"]["knn-v1"]["digest"] == digest_1
    message = (condition(failed, "Degraded") or {})["message"]
    for named in ("knn-v1", digest_2[:12], digest_1[:12]):
        assert named in message
    mark_ready(namespace, "gw-gateway", 2)
    wait(cluster, "routeiqgateways", "gw", namespace, has_condition("Ready", "True", "GatewayReady"))

    # a third digest is tried, and rolls out
    publish(uri_3, digest_3)
    wait(cluster, "deployments", "gw-gateway", namespace, env_digest(digest_3))
    mark_ready(namespace, "gw-gateway", 2)
    healed = wait(
        cluster,
        "routeiqgateways",
        "gw",
        namespace,
        lambda o: loaded(digest_3)(o) and has_condition("Degraded", "False")(o),
    )
    assert healed is not None
    assert healed["status"]["rejectedModels"] == {"knn-v1": digest_2}

    # a tampered artifact fails verification and never changes the pods: a later spec change rolls
    # out with the digest that was there
    publish(tampered, None, phase="Failed")
    cluster.patch_object("routeiqgateways", "gw", {"spec": {"replicas": 3}}, namespace)
    scaled = wait(
        cluster,
        "deployments",
        "gw-gateway",
        namespace,
        lambda d: d is not None and d["spec"]["replicas"] == 3,
    )
    assert env_digest(digest_3)(scaled)
