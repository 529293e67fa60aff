"""Deletion: finalizers, garbage collection by owner uid, namespace termination."""

from __future__ import annotations

from typing import Any

import kubernetes.client  # type: ignore[import-untyped,unused-ignore]
import pytest
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped,unused-ignore]

from tests.k8s.emulator import KubeEmulator
from tests.k8s.samples import GROUP, NS, widget


def test_finalizers_hold_deletion_until_removed(custom: Any) -> None:
    body = widget("w1")
    body["metadata"]["finalizers"] = ["example.routeiq.io/cleanup"]
    custom.create_namespaced_custom_object(GROUP, "v1", NS, "widgets", body)
    custom.delete_namespaced_custom_object(GROUP, "v1", NS, "widgets", "w1")
    held = custom.get_namespaced_custom_object(GROUP, "v1", NS, "widgets", "w1")
    assert held["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiException) as no_new:
        custom.patch_namespaced_custom_object(
            GROUP,
            "v1",
            NS,
            "widgets",
            "w1",
            {"metadata": {"finalizers": ["example.routeiq.io/cleanup", "x.io/more"]}},
        )
    assert no_new.value.status == 422
    custom.patch_namespaced_custom_object(
        GROUP, "v1", NS, "widgets", "w1", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as gone:
        custom.get_namespaced_custom_object(GROUP, "v1", NS, "widgets", "w1")
    assert gone.value.status == 404


def test_garbage_collection_cascades_by_owner_uid(k8s_emulator: KubeEmulator, custom: Any, api: Any) -> None:
    core = kubernetes.client.CoreV1Api(api)
    owner = custom.create_namespaced_custom_object(GROUP, "v1", NS, "widgets", widget("owner"))
    keeper = custom.create_namespaced_custom_object(GROUP, "v1", NS, "widgets", widget("keeper"))

    def ref(obj: dict[str, Any], kind: str, api_version: str) -> dict[str, Any]:
        return {
            "apiVersion": api_version,
            "kind": kind,
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"],
        }

    child = core.create_namespaced_config_map(
        NS, {"metadata": {"name": "child", "ownerReferences": [ref(owner, "Widget", f"{GROUP}/v1")]}}
    )
    grandchild_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "child", "uid": child.metadata.uid}
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "grandchild", "ownerReferences": [grandchild_ref]}}
    )
    shared_refs = [ref(owner, "Widget", f"{GROUP}/v1"), ref(keeper, "Widget", f"{GROUP}/v1")]
    core.create_namespaced_config_map(NS, {"metadata": {"name": "shared", "ownerReferences": shared_refs}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "bystander"}})

    custom.delete_namespaced_custom_object(GROUP, "v1", NS, "widgets", "owner")
    assert k8s_emulator.get_object("configmaps", "child", NS) is None
    assert k8s_emulator.get_object("secrets", "grandchild", NS) is None  # cascading
    shared = k8s_emulator.get_object("configmaps", "shared", NS)
    assert shared is not None
    assert [r["name"] for r in shared["metadata"]["ownerReferences"]] == ["keeper"]
    assert k8s_emulator.get_object("configmaps", "bystander", NS) is not None

    orphan = core.create_namespaced_config_map(
        NS, {"metadata": {"name": "orphan", "ownerReferences": [ref(keeper, "Widget", f"{GROUP}/v1")]}}
    )
    custom.delete_namespaced_custom_object(GROUP, "v1", NS, "widgets", "keeper", propagation_policy="Orphan")
    survivor = core.read_namespaced_config_map("orphan", NS)
    assert survivor.metadata.uid == orphan.metadata.uid
    assert not survivor.metadata.owner_references


def test_namespace_deletion_removes_its_contents(k8s_emulator: KubeEmulator, api: Any) -> None:
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "plain"}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "held", "finalizers": ["x.io/hold"]}})
    core.delete_namespace("doomed")
    assert core.read_namespace("doomed").status.phase == "Terminating"
    assert k8s_emulator.get_object("configmaps", "plain", "doomed") is None
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_config_map("doomed", {"metadata": {"name": "late"}})
    assert refused.value.status == 403
    core.patch_namespaced_config_map(
        "held", "doomed", {"metadata": {"finalizers": []}}, _content_type="application/merge-patch+json"
    )
    assert k8s_emulator.get_object("namespaces", "doomed") is None
