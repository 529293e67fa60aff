"""The store: server-set metadata, generation, conflicts, custom resources, the status subresource."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import kubernetes.client  # type: ignore[import-untyped,unused-ignore]
import pytest
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped,unused-ignore]

from tests.k8s.emulator import KubeEmulator
from tests.k8s.samples import GROUP, NS, deployment, status_body, widget


def test_namespaces_list_get_create(k8s_emulator: KubeEmulator, api: Any) -> None:
    core = kubernetes.client.CoreV1Api(api)
    raw = json.loads(core.list_namespace(_preload_content=False).data)
    assert raw["kind"] == "NamespaceList"
    assert raw["apiVersion"] == "v1"
    assert int(raw["metadata"]["resourceVersion"]) >= 1
    assert {"default", "kube-system"} <= {n["metadata"]["name"] for n in raw["items"]}

    created, code, _ = core.create_namespace_with_http_info({"metadata": {"name": "team-a"}})
    assert code == 201
    assert created.status.phase == "Active"
    assert core.read_namespace("team-a").metadata.labels == {"kubernetes.io/metadata.name": "team-a"}

    with pytest.raises(ApiException) as missing:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "cm"}})
    assert missing.value.status == 404


def test_create_populates_server_metadata(api: Any) -> None:
    core = kubernetes.client.CoreV1Api(api)
    created, code, _ = core.create_namespaced_config_map_with_http_info(
        NS, {"metadata": {"name": "cm1"}, "data": {"a": "1"}}
    )
    assert code == 201
    meta = created.metadata
    assert meta.namespace == NS  # from the URL
    assert len(meta.uid) == 36
    assert meta.creation_timestamp is not None
    assert meta.generation == 1
    second = core.create_namespaced_config_map(NS, {"metadata": {"generateName": "cm-"}})
    assert second.metadata.name.startswith("cm-")
    assert len(second.metadata.name) == len("cm-") + 5
    assert int(second.metadata.resource_version) > int(meta.resource_version)  # one global counter
    assert second.metadata.uid != meta.uid

    with pytest.raises(ApiException) as mismatch:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "cm2", "namespace": "kube-system"}})
    assert mismatch.value.status == 400


def test_generation_counts_spec_changes_only(k8s_emulator: KubeEmulator, api: Any) -> None:
    apps = kubernetes.client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(NS, deployment("web"))
    assert created.metadata.generation == 1
    rv = int(created.metadata.resource_version)

    labelled = apps.patch_namespaced_deployment(
        "web", NS, {"metadata": {"labels": {"tier": "x"}}}, _content_type="application/merge-patch+json"
    )
    assert labelled.metadata.generation == 1
    assert int(labelled.metadata.resource_version) > rv

    status = apps.patch_namespaced_deployment_status(
        "web", NS, {"status": {"replicas": 1}}, _content_type="application/merge-patch+json"
    )
    assert status.metadata.generation == 1
    assert status.status.replicas == 1
    assert int(status.metadata.resource_version) > int(labelled.metadata.resource_version)

    scaled = apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"replicas": 3}}, _content_type="application/merge-patch+json"
    )
    assert scaled.metadata.generation == 2
    unchanged = apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"replicas": 3}}, _content_type="application/merge-patch+json"
    )
    assert unchanged.metadata.resource_version == scaled.metadata.resource_version  # a no-op write

    assert apps.read_namespaced_deployment_scale("web", NS).spec.replicas == 3
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 5}})
    rescaled = apps.read_namespaced_deployment("web", NS)
    assert (rescaled.spec.replicas, rescaled.metadata.generation) == (5, 3)


def test_conflicts_and_not_found_are_status_bodies(api: Any) -> None:
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "dup"}})
    body = status_body(exists.value)
    assert (exists.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'configmaps "dup" already exists'
    assert body["details"] == {"name": "dup", "group": "", "kind": "configmaps"}

    calls: list[Callable[[], Any]] = [
        lambda: core.read_namespaced_config_map("ghost", NS),
        lambda: core.patch_namespaced_config_map(
            "ghost", NS, {"data": {}}, _content_type="application/merge-patch+json"
        ),
        lambda: core.delete_namespaced_config_map("ghost", NS),
        lambda: core.replace_namespaced_config_map("ghost", NS, {"metadata": {"name": "ghost"}}),
    ]
    for call in calls:
        with pytest.raises(ApiException) as missing:
            call()
        body = status_body(missing.value)
        assert (missing.value.status, body["reason"]) == (404, "NotFound")
        assert body["message"] == 'configmaps "ghost" not found'


def test_stale_resource_version_is_a_conflict(api: Any) -> None:
    core = kubernetes.client.CoreV1Api(api)
    first = core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}, "data": {"v": "1"}})
    stale = first.metadata.resource_version
    first.data = {"v": "2"}
    replaced = core.replace_namespaced_config_map("cm", NS, first)  # PUT with the current resourceVersion
    assert replaced.data == {"v": "2"}
    first.data = {"v": "3"}
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("cm", NS, first)
    body = status_body(conflict.value)
    assert (conflict.value.status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    with pytest.raises(ApiException) as patched:
        core.patch_namespaced_config_map(
            "cm",
            NS,
            {"metadata": {"resourceVersion": stale}, "data": {"v": "4"}},
            _content_type="application/merge-patch+json",
        )
    assert patched.value.status == 409
    assert core.read_namespaced_config_map("cm", NS).data == {"v": "2"}


def test_custom_resources_crud_with_defaults(custom: Any) -> None:
    created = custom.create_namespaced_custom_object(GROUP, "v1", NS, "widgets", widget("w1", port="http"))
    assert created["spec"]["mode"] == "cheap"  # a schema default
    assert created["spec"]["tuning"] == {"batch": 8}  # a default object, then its nested default
    assert created["metadata"]["generation"] == 1
    custom.create_namespaced_custom_object(
        GROUP, "v1", NS, "widgets", widget("w2", port=8080, tuning={"batch": 2})
    )
    listed = custom.list_namespaced_custom_object(GROUP, "v1", NS, "widgets")
    assert listed["kind"] == "WidgetList"
    assert listed["apiVersion"] == f"{GROUP}/v1"
    assert [w["metadata"]["name"] for w in listed["items"]] == ["w1", "w2"]
    assert listed["items"][1]["spec"]["tuning"] == {"batch": 2}
    replaced = dict(created, spec={"minReplicas": 2, "maxReplicas": 2})
    updated = custom.replace_namespaced_custom_object(GROUP, "v1", NS, "widgets", "w1", replaced)
    assert updated["spec"] == {"minReplicas": 2, "maxReplicas": 2, "mode": "cheap", "tuning": {"batch": 8}}
    assert updated["metadata"]["generation"] == 2
    custom.delete_namespaced_custom_object(GROUP, "v1", NS, "widgets", "w2")
    with pytest.raises(ApiException) as gone:
        custom.get_namespaced_custom_object(GROUP, "v1", NS, "widgets", "w2")
    assert gone.value.status == 404


def test_status_subresource_is_kept_apart(custom: Any, api: Any) -> None:
    body = widget("w1")
    body["status"] = {"phase": "Forged"}
    created = custom.create_namespaced_custom_object(GROUP, "v1", NS, "widgets", body)
    assert "status" not in created  # dropped on create

    after_status = custom.patch_namespaced_custom_object_status(
        GROUP, "v1", NS, "widgets", "w1", {"status": {"phase": "Ready"}, "spec": {"maxReplicas": 9}}
    )
    assert after_status["status"] == {"phase": "Ready"}
    assert after_status["spec"]["maxReplicas"] == 3  # a status write never changes the spec
    assert after_status["metadata"]["generation"] == 1

    after_main = custom.patch_namespaced_custom_object(
        GROUP, "v1", NS, "widgets", "w1", {"status": {"phase": "Hacked"}, "spec": {"maxReplicas": 5}}
    )
    assert after_main["status"] == {"phase": "Ready"}  # a main write never changes the status
    assert after_main["spec"]["maxReplicas"] == 5
    assert after_main["metadata"]["generation"] == 2

    apps = kubernetes.client.AppsV1Api(api)
    dep = deployment("web")
    dep["status"] = {"replicas": 7}
    assert apps.create_namespaced_deployment(NS, dep).status.replicas is None
    apps.patch_namespaced_deployment_status(
        "web", NS, {"status": {"replicas": 2}}, _content_type="application/merge-patch+json"
    )
    current = apps.read_namespaced_deployment("web", NS)
    current.status.replicas = 99
    current.spec.replicas = 4
    replaced = apps.replace_namespaced_deployment("web", NS, current)
    assert (replaced.status.replicas, replaced.spec.replicas) == (2, 4)

    hpa = {
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "maxReplicas": 3,
        },
    }
    created_hpa = kubernetes.client.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(NS, hpa)
    assert created_hpa.status.desired_replicas == 0  # required status fields start at Go's zero values
