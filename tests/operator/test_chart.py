"""The routeiq-operator Helm chart, rendered and linted by the real Helm engine (helm-python-sdk).

Every rendered built-in manifest is checked against the upstream Kubernetes schemas (strict:
unknown fields fail) for the oldest and newest Kubernetes versions the chart supports, in both
modes: cluster-wide, and namespaced with two watched namespaces. The RBAC is compared with the
exact least-privilege grants the operator needs, the chart's RouteIQ CRDs with the generated ones,
and kopf's peering CRDs (static files beside them in crds/) are checked to be valid. Installing
needs a cluster; that belongs in e2e/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from routeiq_operator.crds import render_crds
from tests.test_dockerfile import exec_form, parse_stages

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "routeiq-operator"
OPERATOR_DOCKERFILE = ROOT / "Dockerfile.operator"
RELEASE = "routeiq-operator"
NAMESPACE = "routeiq-system"
WATCHED = ["team-b", "team-a"]  # out of order on purpose: the chart sorts them
KUBE_VERSIONS = ["1.29", "1.33"]  # Chart.yaml: kubeVersion >=1.29; the newest schemas we pin
MODES: dict[str, dict[str, Any]] = {"cluster-wide": {}, "namespaced": {"watchNamespaces": WATCHED}}

Grants = dict[tuple[str, str], frozenset[str]]

WRITE_CHILDREN = frozenset({"create", "get", "list", "watch", "patch", "delete"})
PEERING_VERBS = frozenset({"get", "list", "watch", "patch"})
# What the operator does in the namespaces it watches: its own kinds and their status, the
# gateway children, Secrets read only (checksums), Events.
NAMESPACED_GRANTS: Grants = {
    ("routeiq.io", "routeiqgateways"): frozenset({"get", "list", "watch", "patch", "update"}),
    ("routeiq.io", "routingexperiments"): frozenset({"get", "list", "watch", "patch", "update"}),
    ("routeiq.io", "modelartifacts"): frozenset({"get", "list", "watch", "patch", "update"}),
    ("routeiq.io", "routeiqgateways/status"): frozenset({"patch", "update"}),
    ("routeiq.io", "routingexperiments/status"): frozenset({"patch", "update"}),
    ("routeiq.io", "modelartifacts/status"): frozenset({"patch", "update"}),
    # ownerReferences[].blockOwnerDeletion on the gateway children, where owner-reference
    # permissions are enforced (OwnerReferencesPermissionEnforcement, OpenShift)
    ("routeiq.io", "routeiqgateways/finalizers"): frozenset({"update"}),
    ("", "serviceaccounts"): WRITE_CHILDREN,
    ("", "configmaps"): WRITE_CHILDREN,
    ("", "services"): WRITE_CHILDREN,
    ("apps", "deployments"): WRITE_CHILDREN,
    ("autoscaling", "horizontalpodautoscalers"): WRITE_CHILDREN,
    ("policy", "poddisruptionbudgets"): WRITE_CHILDREN,
    ("networking.k8s.io", "networkpolicies"): WRITE_CHILDREN,
    ("external-secrets.io", "externalsecrets"): WRITE_CHILDREN,
    ("monitoring.coreos.com", "servicemonitors"): WRITE_CHILDREN,
    ("monitoring.coreos.com", "prometheusrules"): WRITE_CHILDREN,
    ("", "secrets"): frozenset({"get"}),
    ("", "events"): frozenset({"create", "patch"}),
    ("events.k8s.io", "events"): frozenset({"create", "patch"}),
}
# Cluster-scoped reads needed in both modes: which CRDs exist, and kopf's namespace discovery.
CLUSTER_GRANTS: Grants = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): frozenset({"get", "list", "watch"}),
    ("", "namespaces"): frozenset({"list", "watch"}),
}
CLUSTER_SCOPED_RESOURCES = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}
KOPF_CRDS = {  # file in crds/ -> (kind, scope)
    "kopf.dev_clusterkopfpeerings.yaml": ("ClusterKopfPeering", "Cluster"),
    "kopf.dev_kopfpeerings.yaml": ("KopfPeering", "Namespaced"),
}
STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}


# ---- rendering ----------------------------------------------------------------------------------


def render(values: dict[str, Any] | None = None, *, release: str = RELEASE) -> list[dict[str, Any]]:
    """The chart's manifests (NOTES.txt left out) as Helm renders them for an install."""
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
    documents: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document is not None:
                assert isinstance(document, dict), f"{path} renders a non-object: {document!r}"
                documents.append(document)
    return documents


def notes(values: dict[str, Any] | None = None) -> str:
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    (text,) = [text for path, text in rendered.items() if path.endswith("NOTES.txt")]
    return text


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] == kind]


def the(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (document,) = of_kind(documents, kind)
    return document


def grants(rules: list[dict[str, Any]]) -> Grants:
    """(apiGroup, resource) -> verbs, over every combination the rules spell out."""
    found: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule keys: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in found.items()}


def all_rules(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for document in documents:
        if document["kind"] in {"ClusterRole", "Role"}:
            for rule in document["rules"]:
                yield f"{document['kind']}/{document['metadata']['name']}", rule


@pytest.fixture(scope="module", params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def documents(mode: str) -> list[dict[str, Any]]:
    return render(MODES[mode])


@pytest.fixture(scope="module")
def pod_spec(documents: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = the(documents, "Deployment")["spec"]["template"]["spec"]
    return spec


# ---- helm lint ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_chart_lints_clean_in_strict_mode(mode: str, kube_version: str) -> None:
    report = helm_python.lint(CHART, MODES[mode], strict=True, kube_version=f"v{kube_version}.0")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # severity 2 = warning, 3 = error; info (1), e.g. "icon is recommended", is fine
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert problems == []


def test_lint_reports_values_the_schema_rejects() -> None:
    report = helm_python.lint(CHART, {"replicas": -1}, strict=True, kube_version="v1.33.0")
    assert any("/replicas" in error for error in report["errors"]), report


def test_chart_metadata() -> None:
    with helm_python.Chart.load(CHART) as chart:
        chart_metadata = chart.metadata
    assert chart_metadata["apiVersion"] == "v2"
    assert chart_metadata["name"] == "routeiq-operator"
    assert chart_metadata["version"] == "0.1.0"
    assert chart_metadata["appVersion"] == metadata.version("routeiq")
    assert chart_metadata["kubeVersion"] == ">=1.29.0-0"


# ---- every rendered manifest is a valid Kubernetes object -----------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_built_in_manifest_is_valid(documents: list[dict[str, Any]], kube_version: str) -> None:
    built_in = [document for document in documents if not document["apiVersion"].startswith("kopf.dev/")]
    for document in built_in:
        kubernetes_validate.validate(document, kube_version, strict=True)
    with helm_python.Chart.load(CHART) as chart:
        for crd in chart.crds:
            kubernetes_validate.validate(yaml.safe_load(crd["data"]), kube_version, strict=True)


def test_rendered_kinds(documents: list[dict[str, Any]], mode: str) -> None:
    kinds = sorted(document["kind"] for document in documents)
    expected = ["ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "ServiceAccount"]
    if mode == "cluster-wide":
        expected += ["ClusterKopfPeering"]
    else:
        expected += ["KopfPeering", "KopfPeering", "Role", "Role", "RoleBinding", "RoleBinding"]
    assert kinds == sorted(expected)


def test_every_object_has_the_standard_labels_and_its_namespace(documents: list[dict[str, Any]]) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    for document in documents:
        meta = document["metadata"]
        assert set(meta["labels"]) >= STANDARD_LABELS, f"{document['kind']}/{meta['name']}"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert meta["labels"]["app.kubernetes.io/version"] == metadata.version("routeiq")
        if document["kind"] in cluster_scoped:
            assert "namespace" not in meta, f"{document['kind']}/{meta['name']} is cluster-scoped"
        elif document["kind"] not in {"Role", "RoleBinding", "KopfPeering"}:
            assert meta["namespace"] == NAMESPACE


# ---- RBAC: least privilege -------------------------------------------------------------------------


def test_no_wildcards_and_secrets_are_get_only(documents: list[dict[str, Any]]) -> None:
    for where, rule in all_rules(documents):
        for key in ("apiGroups", "resources", "verbs"):
            assert not any("*" in value for value in rule[key]), f"{where} has a wildcard: {rule}"
        if "secrets" in rule["resources"]:
            # list/watch would let a compromised operator read every Secret of the namespace
            assert set(rule["verbs"]) == {"get"}, f"{where} grants more than get on Secrets: {rule}"


def test_cluster_wide_mode_grants_exactly_what_the_operator_needs() -> None:
    documents = render(MODES["cluster-wide"])
    assert of_kind(documents, "Role") == []
    assert of_kind(documents, "RoleBinding") == []
    cluster_role = the(documents, "ClusterRole")
    expected = {
        **CLUSTER_GRANTS,
        **NAMESPACED_GRANTS,
        ("kopf.dev", "clusterkopfpeerings"): PEERING_VERBS,
    }
    assert grants(cluster_role["rules"]) == expected
    binding = the(documents, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": cluster_role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_namespaced_mode_grants_a_role_per_namespace_and_only_cluster_reads_cluster_wide() -> None:
    documents = render(MODES["namespaced"])
    cluster_role = the(documents, "ClusterRole")
    assert grants(cluster_role["rules"]) == CLUSTER_GRANTS
    assert {resource for _, resource in grants(cluster_role["rules"])} <= CLUSTER_SCOPED_RESOURCES
    roles = {role["metadata"]["namespace"]: role for role in of_kind(documents, "Role")}
    assert sorted(roles) == sorted(WATCHED)
    for role in roles.values():
        assert grants(role["rules"]) == {**NAMESPACED_GRANTS, ("kopf.dev", "kopfpeerings"): PEERING_VERBS}
    bindings = {binding["metadata"]["namespace"]: binding for binding in of_kind(documents, "RoleBinding")}
    assert sorted(bindings) == sorted(WATCHED)
    for namespace, binding in bindings.items():
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == roles[namespace]["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_cluster_scoped_names_include_the_release_namespace() -> None:
    """Two namespaced installs with the same release name must not fight over one ClusterRole."""
    documents = render(MODES["namespaced"])
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        assert the(documents, kind)["metadata"]["name"] == f"{NAMESPACE}-{RELEASE}"


def test_without_peering_nothing_of_kopf_dev_is_granted_or_rendered(mode: str) -> None:
    """kopf's peering CRDs still ship in crds/ (Helm cannot make crds/ conditional): harmless."""
    documents = render({**MODES[mode], "peering": {"enabled": False}, "replicas": 1})
    for where, rule in all_rules(documents):
        assert "kopf.dev" not in rule["apiGroups"], where
    assert [d for d in documents if d["apiVersion"].startswith("kopf.dev/")] == []
    args = the(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--standalone" in args
    assert not any(arg.startswith("--peering") for arg in args)


# ---- peering ---------------------------------------------------------------------------------------


def test_peering_objects_match_the_mode_and_are_plain_manifests(
    documents: list[dict[str, Any]], mode: str
) -> None:
    peerings = [document for document in documents if document["apiVersion"] == "kopf.dev/v1"]
    if mode == "cluster-wide":
        assert [(p["kind"], "namespace" in p["metadata"]) for p in peerings] == [
            ("ClusterKopfPeering", False)
        ]
    else:
        assert sorted((p["kind"], p["metadata"]["namespace"]) for p in peerings) == [
            ("KopfPeering", namespace) for namespace in sorted(WATCHED)
        ]
    for peering in peerings:
        assert peering["metadata"]["name"] == "routeiq-operator"
        # release objects, not hooks: created once, deleted on uninstall, synced as-is by Argo CD
        assert "annotations" not in peering["metadata"]
        assert set(peering) == {"apiVersion", "kind", "metadata"}  # kopf owns .status


def test_no_template_is_a_crd_a_hook_or_a_lookup(mode: str) -> None:
    """CRDs belong in crds/; hooks and `lookup` render differently offline (Argo CD, helm template)."""
    documents = render(MODES[mode])
    assert of_kind(documents, "CustomResourceDefinition") == []
    for document in documents:
        annotations = document["metadata"].get("annotations", {})
        assert not any(key.startswith("helm.sh/") for key in annotations), document["metadata"]
    for template in (CHART / "templates").iterdir():
        assert "lookup" not in template.read_text(encoding="utf-8"), template.name


def test_peering_name_reaches_the_objects_and_the_args() -> None:
    documents = render({"peering": {"enabled": True, "name": "shared.peering"}})
    assert the(documents, "ClusterKopfPeering")["metadata"]["name"] == "shared.peering"
    args = the(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=shared.peering" in args


# ---- the Deployment ----------------------------------------------------------------------------------


def test_args_select_the_watched_namespaces_and_peering(pod_spec: dict[str, Any], mode: str) -> None:
    (container,) = pod_spec["containers"]
    watch = ["--all-namespaces"] if mode == "cluster-wide" else ["--namespace=team-a", "--namespace=team-b"]
    assert container["args"] == [*watch, "--liveness-port=8080", "--peering=routeiq-operator"]
    assert "command" not in container, "the image's ENTRYPOINT (routeiq operator) must stay"


def test_pod_runs_non_root_with_a_read_only_root_and_no_privileges(pod_spec: dict[str, Any]) -> None:
    pod_security = pod_spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == 10001
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod_spec["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod_spec
    assert "hostPID" not in pod_spec
    # /tmp (HOME and TMPDIR) is the only writable path
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = [volume for volume in pod_spec["volumes"] if volume["name"] == mount["name"]]
    assert "emptyDir" in volume


def test_liveness_probe_and_resources(pod_spec: dict[str, Any]) -> None:
    (container,) = pod_spec["containers"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    (port,) = [port for port in container["ports"] if port["name"] == probe["port"]]
    assert port["containerPort"] == 8080
    assert "--liveness-port=8080" in container["args"]
    # readiness on the same endpoint: `helm --wait` and `kubectl rollout status` wait for kopf
    assert container["readinessProbe"]["httpGet"] == probe
    resources = container["resources"]
    assert set(resources["requests"]) >= {"cpu", "memory"}
    assert set(resources["limits"]) >= {"memory"}


def test_metrics_port_on_the_container(pod_spec: dict[str, Any]) -> None:
    (container,) = pod_spec["containers"]
    (port,) = [port for port in container["ports"] if port["name"] == "metrics"]
    assert (port["containerPort"], port["protocol"]) == (8081, "TCP")
    env = {item["name"]: item for item in container["env"]}
    assert env["ROUTEIQ_OPERATOR_METRICS_PORT"]["value"] == "8081"


def test_metrics_off_has_no_port() -> None:
    (container,) = the(render({"metrics": {"port": 0}}), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert [port["name"] for port in container["ports"]] == ["liveness"]
    env = {item["name"]: item for item in container["env"]}
    assert env["ROUTEIQ_OPERATOR_METRICS_PORT"]["value"] == "0"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_metrics_service_and_service_monitor(kube_version: str) -> None:
    documents = render(
        {
            "metrics": {
                "port": 9100,
                "service": {"enabled": True, "annotations": {"a": "b"}},
                "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
            }
        }
    )
    service, monitor, deployment = (
        the(documents, "Service"),
        the(documents, "ServiceMonitor"),
        the(documents, "Deployment"),
    )
    kubernetes_validate.validate(service, kube_version, strict=True)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["metadata"]["annotations"] == {"a": "b"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "interval": "15s",
            "scrapeTimeout": "10s",
            "honorLabels": True,
        }
    ]
    # the Service alone, without the Prometheus Operator
    alone = render({"metrics": {"service": {"enabled": True}}})
    assert of_kind(alone, "ServiceMonitor") == []
    assert len(of_kind(alone, "Service")) == 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"metrics": {"port": 8080}}, "metrics.port must differ from livenessPort"),
        ({"metrics": {"port": 0, "serviceMonitor": {"enabled": True}}}, "need metrics.port"),
    ],
)
def test_metrics_values_that_cannot_work_fail_the_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(values)


def test_environment_image_and_service_account(pod_spec: dict[str, Any]) -> None:
    (container,) = pod_spec["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["ROUTEIQ_OPERATOR_LOG_LEVEL"]["value"] == "INFO"
    # kopf names its peering identity after POD_ID
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["image"] == f"ghcr.io/routeiq/routeiq-operator:{metadata.version('routeiq')}"
    assert pod_spec["serviceAccountName"] == RELEASE
    assert pod_spec["automountServiceAccountToken"] is True
    assert pod_spec["enableServiceLinks"] is False


def test_values_reach_the_deployment() -> None:
    documents = render(
        {
            "image": {
                "repository": "registry.example.com/routeiq/operator",
                "tag": "1.2.3",
                "pullPolicy": "Always",
            },
            "replicas": 3,
            "logLevel": "DEBUG",
            "extraEnv": [{"name": "ROUTEIQ_SSRF_HOST_ALLOWLIST", "value": "minio.storage.svc"}],
            "livenessPort": 9000,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                        ]
                    }
                }
            },
            "podAnnotations": {"example.com/team": "platform"},
            "priorityClassName": "system-cluster-critical",
            "serviceAccount": {"create": False, "name": "existing-sa", "annotations": {}},
        }
    )
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate.validate(the(documents, "Deployment"), kube_version, strict=True)
    assert of_kind(documents, "ServiceAccount") == []
    deployment = the(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {"example.com/team": "platform"}
    spec = template["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "registry.example.com/routeiq/operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert "--liveness-port=9000" in container["args"]
    assert container["ports"][0]["containerPort"] == 9000
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["ROUTEIQ_OPERATOR_LOG_LEVEL"] == "DEBUG"
    assert env["ROUTEIQ_SSRF_HOST_ALLOWLIST"] == "minio.storage.svc"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert list(spec["affinity"]) == ["nodeAffinity"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["serviceAccountName"] == "existing-sa"
    for document in of_kind(documents, "ClusterRoleBinding"):
        assert document["subjects"][0]["name"] == "existing-sa"


def test_replicas_spread_over_nodes_by_default(pod_spec: dict[str, Any]) -> None:
    (term,) = pod_spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "routeiq-operator",
        "app.kubernetes.io/instance": RELEASE,
    }


def test_pod_matches_the_operator_image() -> None:
    runtime = parse_stages(OPERATOR_DOCKERFILE.read_text(encoding="utf-8"))["runtime"]
    documents = render()
    spec = the(documents, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    uid, gid = (int(part) for part in runtime.one("USER").split(":"))
    security = container["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    assert runtime.one("EXPOSE") == str(container["ports"][0]["containerPort"])
    assert exec_form(runtime.one("ENTRYPOINT")) == ["routeiq", "operator"]


def test_notes_describe_the_mode() -> None:
    assert "every namespace" in notes()
    namespaced = notes(MODES["namespaced"])
    assert "team-a, team-b" in namespaced
    assert "kubectl apply --server-side -f charts/routeiq-operator/crds/" in namespaced


# ---- values.schema.json -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": -1}, "/replicas"),
        ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
        ({"peering": {"enabled": True, "name": "x", "priority": 1}}, "'priority' not allowed"),
        # kopf's CRDs are in crds/: `helm install --skip-crds` skips them
        ({"peering": {"enabled": True, "name": "x", "installCRDs": False}}, "'installCRDs' not allowed"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"logLevel": "verbose"}, "/logLevel"),
        ({"livenessPort": 80}, "/livenessPort"),
        ({"metrics": {"port": 80}}, "/metrics/port"),
        ({"metrics": {"scrape": True}}, "'scrape' not allowed"),
        (
            {"metrics": {"serviceMonitor": {"enabled": True, "interval": "often"}}},
            "/metrics/serviceMonitor/interval",
        ),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"watchNamespaces": ["a", "a"]}, "/watchNamespaces"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "/resources/requests/cpu"),
        ({"resources": {"limits": None}}, "missing property 'limits'"),
        ({"serviceAccount": {"create": False}}, "/serviceAccount/name"),
        ({"peering": {"enabled": False}}, "/replicas"),  # standalone replicas would all reconcile
        ({"affinity": {"podAntiAfinity": {}}}, "'podAntiAfinity' not allowed"),
        ({"tolerations": [{"key": "a", "effect": "Never"}]}, "/tolerations/0/effect"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with helm_python.Chart.load(CHART) as chart:
        with pytest.raises(helm_python.HelmValuesError) as rejected:
            chart.validate_schema(values)
        assert message in str(rejected.value)
        # a render (what install and template run) refuses them too
        with pytest.raises(helm_python.HelmValuesError, match="values don't meet the specifications"):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_schema_accepts_the_defaults_and_the_modes(mode: str) -> None:
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(MODES[mode])
        chart.validate_schema({"global": {"imageRegistry": "example.com"}})  # as a subchart


def test_schema_is_strict_at_every_level() -> None:
    with helm_python.Chart.load(CHART) as chart:
        schema = chart.schema
    assert schema is not None

    def objects(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                yield path, node
            for key, value in node.items():
                yield from objects(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                yield from objects(item, f"{path}/{index}")

    found = list(objects(schema, ""))
    assert len(found) >= 8
    for path, node in found:
        assert node.get("additionalProperties") is False, f"{path} allows unknown keys"


# ---- CRDs: the chart ships exactly the generated RouteIQ CRDs and kopf's peering CRDs ------------------------


def test_chart_crds_are_the_generated_ones() -> None:
    generated = render_crds()
    assert all(name.startswith("routeiq.io_") for name in generated)
    shipped = {path.name: path.read_text(encoding="utf-8") for path in (CHART / "crds").iterdir()}
    routeiq = {name: text for name, text in shipped.items() if name.startswith("routeiq.io_")}
    assert sorted(routeiq) == sorted(generated), (
        "charts/routeiq-operator/crds/ differs from the generated CRDs: "
        "run `routeiq crds --out charts/routeiq-operator/crds` (and delete routeiq.io_* files it no longer writes)"
    )
    for name, text in generated.items():
        assert routeiq[name] == text, (
            f"charts/routeiq-operator/crds/{name} is stale: run `routeiq crds --out charts/routeiq-operator/crds`"
        )
    assert sorted(shipped) == sorted([*generated, *KOPF_CRDS]), "crds/ holds an unexpected file"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_chart_ships_kopfs_peering_crds(kube_version: str) -> None:
    for name, (kind, scope) in KOPF_CRDS.items():
        path = CHART / "crds" / name
        assert path.is_file(), f"charts/routeiq-operator/crds/{name} is missing"
        (crd,) = [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]
        kubernetes_validate.validate(crd, kube_version, strict=True)
        assert (crd["apiVersion"], crd["kind"]) == ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        plural = f"{kind.lower()}s"
        assert crd["metadata"]["name"] == f"{plural}.kopf.dev"
        spec = crd["spec"]
        assert (spec["group"], spec["scope"]) == ("kopf.dev", scope)
        assert spec["names"] == {
            "kind": kind,
            "listKind": f"{kind}List",
            "plural": plural,
            "singular": kind.lower(),
        }
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
        # kopf writes keep-alives into .status of the main resource: no status subresource
        assert "subresources" not in version
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_helm_sees_every_crd_in_its_crd_directory() -> None:
    with helm_python.Chart.load(CHART) as chart:
        loaded = {Path(crd["filename"]).name: crd["data"] for crd in chart.crds}
    assert {name: text for name, text in loaded.items() if name.startswith("routeiq.io_")} == render_crds()
    for name in KOPF_CRDS:
        assert loaded[name] == (CHART / "crds" / name).read_text(encoding="utf-8")


# ---- Grafana dashboards ------------------------------------------------------------------------------------

DASHBOARDS = ROOT / "deploy" / "grafana"


def test_dashboards_are_off_by_default() -> None:
    assert of_kind(render(), "ConfigMap") == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_dashboards_are_configmaps_for_the_grafana_sidecar(kube_version: str) -> None:
    """One ConfigMap per dashboard of deploy/grafana/, with the JSON as generated (scripts/dashboards.py)."""
    config_maps = of_kind(render({"dashboards": {"enabled": True}}), "ConfigMap")
    shipped = {path.name: path.read_text(encoding="utf-8") for path in sorted(DASHBOARDS.glob("*.json"))}
    assert len(shipped) == 3
    found: dict[str, str] = {}
    for config_map in config_maps:
        kubernetes_validate.validate(config_map, kube_version, strict=True)
        meta = config_map["metadata"]
        assert meta["namespace"] == NAMESPACE
        assert meta["labels"]["grafana_dashboard"] == "1"
        assert set(meta["labels"]) >= STANDARD_LABELS
        assert "annotations" not in meta
        ((key, text),) = config_map["data"].items()
        assert meta["name"] == f"{RELEASE}-dashboard-{key.removeprefix('routeiq-').removesuffix('.json')}"
        found[key] = text
    assert sorted(found) == sorted(shipped)
    for key, text in found.items():
        assert text + "\n" == shipped[key], f"{key} differs from deploy/grafana/{key}"
        assert json.loads(text)["uid"] == key.removesuffix(".json")


def test_dashboard_labels_and_annotations_come_from_the_values() -> None:
    values = {
        "dashboards": {
            "enabled": True,
            "labels": {"grafana_dashboard": "routeiq"},
            "annotations": {"grafana_folder": "RouteIQ"},
        }
    }
    config_maps = of_kind(render(values), "ConfigMap")
    assert len(config_maps) == 3
    for config_map in config_maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "routeiq"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "RouteIQ"}
    report = helm_python.lint(CHART, values, strict=True, kube_version="v1.33.0")
    assert report["errors"] == []
    assert [message for message in report["messages"] if message["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dashboards": {"enabled": "yes", "labels": {}}}, "/dashboards/enabled"),
        ({"dashboards": {"enabled": True, "labels": {"grafana_dashboard": 1}}}, "/dashboards/labels"),
        ({"dashboards": {"enabled": True, "labels": {}, "folder": "x"}}, "'folder' not allowed"),
    ],
)
def test_schema_rejects_bad_dashboard_values(values: dict[str, Any], message: str) -> None:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as rejected:
        chart.validate_schema(values)
    assert message in str(rejected.value)
