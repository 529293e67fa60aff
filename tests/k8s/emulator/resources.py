"""Served resource types: the built-in kinds, and the types a CRD's served versions define."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Final

from tests.k8s.emulator.objects import Obj, RKey, meta_of, timestamp

_ALL_VERBS: Final = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_SUB_VERBS: Final = ("get", "patch", "update")


@dataclasses.dataclass(frozen=True, eq=False)
class ResourceType:
    """One served group/version/resource, built in or defined by a CRD."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    scale_subresource: bool = False
    name_rule: str = "subdomain"  # subdomain | label | label1035 | path
    crd_name: str | None = None  # None for built-in kinds
    schema: Obj | None = None  # the CRD version's openAPIV3Schema
    scale_paths: tuple[str, str, str] = ("spec.replicas", "status.replicas", "status.selector")
    singular_name: str = ""

    @property
    def singular(self) -> str:
        return self.singular_name or self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> RKey:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """e.g. `deployments.apps` or `namespaces`, as in NotFound messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """e.g. `Deployment.apps`, as in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def is_custom(self) -> bool:
        return self.crd_name is not None

    def discovery(self) -> list[Obj]:
        entry: Obj = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(_ALL_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(_SUB_VERBS),
                }
            )
        if self.scale_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": list(_SUB_VERBS),
                }
            )
        return entries


def _builtin(
    group: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    short_names: tuple[str, ...] = (),
    *,
    version: str = "v1",
    all_category: bool = False,
    status: bool = False,
    scale: bool = False,
    name_rule: str = "subdomain",
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        short_names=short_names,
        categories=("all",) if all_category else (),
        status_subresource=status,
        scale_subresource=scale,
        name_rule=name_rule,
    )


BUILTIN_RESOURCES: Final[tuple[ResourceType, ...]] = (
    _builtin("", "namespaces", "Namespace", False, ("ns",), status=True, name_rule="label"),
    _builtin("", "pods", "Pod", True, ("po",), all_category=True, status=True),
    _builtin(
        "", "services", "Service", True, ("svc",), all_category=True, status=True, name_rule="label1035"
    ),
    _builtin("", "configmaps", "ConfigMap", True, ("cm",)),
    _builtin("", "secrets", "Secret"),
    _builtin("", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    _builtin("", "events", "Event", True, ("ev",)),
    _builtin("", "endpoints", "Endpoints", True, ("ep",)),
    _builtin("", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), status=True),
    _builtin(
        "apps", "deployments", "Deployment", True, ("deploy",), all_category=True, status=True, scale=True
    ),
    _builtin(
        "apps", "statefulsets", "StatefulSet", True, ("sts",), all_category=True, status=True, scale=True
    ),
    _builtin("apps", "daemonsets", "DaemonSet", True, ("ds",), all_category=True, status=True),
    _builtin("apps", "replicasets", "ReplicaSet", True, ("rs",), all_category=True, status=True, scale=True),
    _builtin("batch", "jobs", "Job", True, all_category=True, status=True),
    _builtin("batch", "cronjobs", "CronJob", True, ("cj",), all_category=True, status=True),
    _builtin(
        "autoscaling",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        True,
        ("hpa",),
        version="v2",
        all_category=True,
        status=True,
    ),
    _builtin("policy", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), status=True),
    _builtin("networking.k8s.io", "ingresses", "Ingress", True, ("ing",), status=True),
    _builtin("networking.k8s.io", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    _builtin("rbac.authorization.k8s.io", "roles", "Role", name_rule="path"),
    _builtin("rbac.authorization.k8s.io", "rolebindings", "RoleBinding", name_rule="path"),
    _builtin("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", False, name_rule="path"),
    _builtin(
        "rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", False, name_rule="path"
    ),
    _builtin("coordination.k8s.io", "leases", "Lease"),
    _builtin("events.k8s.io", "events", "Event", True, ("ev",)),
    _builtin(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        status=True,
    ),
)
CRD_KEY: Final[RKey] = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY: Final[RKey] = ("", "namespaces")


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version ordering: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (-1, 0, 0)
    stability = {"alpha": 0, "beta": 1, None: 2}[match.group(2)]
    return (stability, int(match.group(1)), int(match.group(3) or 0))


def crd_types(crd: Obj) -> Iterator[ResourceType]:
    """The resource types of a CRD's served versions (all share one store per group and plural)."""
    crd_name = meta_of(crd)["name"]
    spec = crd["spec"]
    names = spec["names"]
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale") or {}
        yield ResourceType(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            status_subresource="status" in subresources,
            scale_subresource="scale" in subresources,
            crd_name=crd_name,
            schema=(version.get("schema") or {}).get("openAPIV3Schema"),
            scale_paths=(
                str(scale.get("specReplicasPath", ".spec.replicas")).lstrip("."),
                str(scale.get("statusReplicasPath", ".status.replicas")).lstrip("."),
                str(scale.get("labelSelectorPath", ".status.selector")).lstrip("."),
            ),
            singular_name=str(names.get("singular") or ""),
        )


def crd_status(crd: Obj) -> Obj:
    """A CRD's status as the server writes it: names accepted, established, the storage version stored."""
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    now = timestamp()
    storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    return {
        "acceptedNames": names,
        "storedVersions": storage,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now,
            },
        ],
    }
