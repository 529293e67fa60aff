"""The Kubernetes API emulator behaves like an API server for real clients.

The official `kubernetes` client for CRUD, status, selectors, conflicts, validation, finalizers and
garbage collection; raw HTTP (httpx) for watches and fault injection; real `kubectl`; and kopf.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import kopf
import kopf._core.intents.registries
import kubernetes.client  # type: ignore[import-untyped,unused-ignore]
import kubernetes.config  # type: ignore[import-untyped,unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped,unused-ignore]

from tests.k8s.emulator import ApiError, KubeEmulator

GROUP = "example.routeiq.io"
NS = "default"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wdg"],
            "categories": ["routeiq"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["minReplicas", "maxReplicas"],
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.minReplicas <= self.maxReplicas",
                                        "message": "minReplicas must not exceed maxReplicas",
                                    }
                                ],
                                "properties": {
                                    "minReplicas": {"type": "integer", "minimum": 0},
                                    "maxReplicas": {"type": "integer"},
                                    "mode": {"type": "string", "enum": ["fast", "cheap"], "default": "cheap"},
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "region": {
                                        "type": "string",
                                        "x-kubernetes-validations": [
                                            {"rule": "self == oldSelf", "message": "region is immutable"}
                                        ],
                                    },
                                    "tuning": {
                                        "type": "object",
                                        "default": {},
                                        "properties": {"batch": {"type": "integer", "default": 8}},
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string"},
                                    "observedGeneration": {"type": "integer"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"minReplicas": 1, "maxReplicas": 3, **spec},
    }


def deployment(name: str, **extra_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "main", "image": "busybox:1", "env": [{"name": "A", "value": "1"}]}
                    ]
                },
            },
            **extra_spec,
        },
    }


def status_body(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    assert body["kind"] == "Status"
    assert body["code"] == exc.status
    return body


@pytest.fixture
def api(k8s_api_client: Any) -> Any:
    return k8s_api_client


@pytest.fixture
def crd(k8s_emulator: KubeEmulator, api: Any) -> dict[str, Any]:
    created: dict[str, Any] = (
        kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(WIDGET_CRD).to_dict()
    )
    return created


@pytest.fixture
def custom(api: Any, crd: dict[str, Any]) -> Any:
    return kubernetes.client.CustomObjectsApi(api)


@pytest.fixture
async def http(k8s_emulator: KubeEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=k8s_emulator.server_url, timeout=10) as client:
        yield client


# --------------------------------------------------------------------------------------------------
# Discovery, namespaces, server-populated metadata
# --------------------------------------------------------------------------------------------------


def test_core_discovery_reports_v1_and_namespaces(k8s_emulator: KubeEmulator) -> None:
    with httpx.Client(base_url=k8s_emulator.server_url) as client:
        assert client.get("/api").json()["versions"] == ["v1"]
        core = client.get("/api/v1").json()
        groups = client.get("/apis").json()
    assert core["groupVersion"] == "v1"
    namespaces = next(r for r in core["resources"] if r["name"] == "namespaces")
    assert namespaces["namespaced"] is False
    assert "watch" in namespaces["verbs"]
    assert "namespaces/status" in {r["name"] for r in core["resources"]}
    apps = next(g for g in groups["groups"] if g["name"] == "apps")
    assert apps["preferredVersion"]["groupVersion"] == "apps/v1"


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


# --------------------------------------------------------------------------------------------------
# CRDs, custom resources, status subresource
# --------------------------------------------------------------------------------------------------


def test_crd_is_registered_in_discovery(k8s_emulator: KubeEmulator, crd: dict[str, Any]) -> None:
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    with httpx.Client(base_url=k8s_emulator.server_url) as client:
        groups = client.get("/apis").json()["groups"]
        group = client.get(f"/apis/{GROUP}").json()
        resources = client.get(f"/apis/{GROUP}/v1").json()
    assert GROUP in {g["name"] for g in groups}
    assert group["preferredVersion"] == {"groupVersion": f"{GROUP}/v1", "version": "v1"}
    assert resources["groupVersion"] == f"{GROUP}/v1"
    by_name = {r["name"]: r for r in resources["resources"]}
    assert set(by_name) == {"widgets", "widgets/status"}
    widgets = by_name["widgets"]
    assert (widgets["singularName"], widgets["kind"], widgets["namespaced"]) == ("widget", "Widget", True)
    assert widgets["shortNames"] == ["wdg"]
    assert widgets["categories"] == ["routeiq"]
    assert {"create", "list", "watch", "patch", "delete"} <= set(widgets["verbs"])


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


# --------------------------------------------------------------------------------------------------
# Selectors, patch flavours, deletion
# --------------------------------------------------------------------------------------------------


def test_label_and_field_selectors(api: Any) -> None:
    core = kubernetes.client.CoreV1Api(api)
    for name, labels in {
        "a": {"app": "a", "tier": "web"},
        "b": {"app": "b"},
        "c": {"app": "c", "tier": "db"},
    }.items():
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs: str) -> list[str]:
        return [cm.metadata.name for cm in core.list_namespaced_config_map(NS, **kwargs).items]

    assert names(label_selector="app=a") == ["a"]
    assert names(label_selector="app==b") == ["b"]
    assert names(label_selector="app!=a") == ["b", "c"]
    assert names(label_selector="app in (a, c)") == ["a", "c"]
    assert names(label_selector="app notin (a,c)") == ["b"]
    assert names(label_selector="tier") == ["a", "c"]
    assert names(label_selector="!tier") == ["b"]
    assert names(label_selector="tier,app=c") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert [
        cm.metadata.name for cm in core.list_config_map_for_all_namespaces(label_selector="app=c").items
    ] == ["c"]
    with pytest.raises(ApiException) as bad:
        names(label_selector="app in a")
    assert bad.value.status == 400
    page = core.list_namespaced_config_map(NS, limit=2)
    assert [cm.metadata.name for cm in page.items] == ["a", "b"]
    rest = core.list_namespaced_config_map(NS, limit=2, _continue=page.metadata._continue)
    assert [cm.metadata.name for cm in rest.items] == ["c"]
    assert rest.metadata._continue is None
    core.delete_collection_namespaced_config_map(NS, label_selector="tier")
    assert names() == ["b"]


def test_patch_flavours_and_put(k8s_emulator: KubeEmulator, custom: Any, api: Any) -> None:
    apps = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment("web"))
    strategic = apps.patch_namespaced_deployment(
        "web",
        NS,
        {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}}},
        _content_type="application/strategic-merge-patch+json",
    )
    container = strategic.spec.template.spec.containers[0]
    assert (container.image, container.env[0].name) == ("busybox:2", "A")  # merged by name, env kept
    merged = apps.patch_namespaced_deployment(
        "web",
        NS,
        {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:3"}]}}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.spec.template.spec.containers[0].env is None  # a merge patch replaces lists
    json_patched = apps.patch_namespaced_deployment(
        "web", NS, [{"op": "replace", "path": "/spec/replicas", "value": 2}]
    )
    assert json_patched.spec.replicas == 2
    defaulted = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 5}})  # the client sends SMP
    assert defaulted.spec.replicas == 5
    assert (
        k8s_emulator.requests_matching("PATCH")[-1].content_type == "application/strategic-merge-patch+json"
    )
    put = apps.read_namespaced_deployment("web", NS)
    put.spec.template.spec.containers[0].image = "busybox:4"
    assert (
        apps.replace_namespaced_deployment("web", NS, put).spec.template.spec.containers[0].image
        == "busybox:4"
    )

    custom.create_namespaced_custom_object(GROUP, "v1", NS, "widgets", widget("w1", region="eu"))
    removed = custom.patch_namespaced_custom_object(
        GROUP, "v1", NS, "widgets", "w1", {"spec": {"region": None}}
    )
    assert "region" not in removed["spec"]  # merge patch: null deletes
    with pytest.raises(ApiException) as smp_on_cr:
        custom.patch_namespaced_custom_object(
            GROUP,
            "v1",
            NS,
            "widgets",
            "w1",
            {"spec": {}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert smp_on_cr.value.status == 415  # as on a real server


def test_server_side_apply_creates_and_updates(k8s_emulator: KubeEmulator, api: Any) -> None:
    url = f"/apis/{GROUP}/v1/namespaces/{NS}/widgets/applied"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(WIDGET_CRD)
    with httpx.Client(base_url=k8s_emulator.server_url) as client:
        missing_manager = client.patch(url, headers=headers, content=json.dumps(widget("applied")))
        assert missing_manager.status_code == 400
        first = client.patch(
            url,
            params={"fieldManager": "op"},
            headers=headers,
            content=json.dumps(widget("applied", region="eu")),
        )
        assert first.status_code == 201
        assert first.json()["spec"]["region"] == "eu"
        other = client.patch(
            url,
            headers={"Content-Type": "application/merge-patch+json"},
            content=json.dumps({"metadata": {"labels": {"owner": "someone-else"}}}),
        )
        assert other.status_code == 200
        yaml_body = yaml.safe_dump(widget("applied", maxReplicas=4))  # region no longer applied
        second = client.patch(
            url, params={"fieldManager": "op", "force": "true"}, headers=headers, content=yaml_body
        )
        assert second.status_code == 200
        spec = second.json()["spec"]
        assert spec["maxReplicas"] == 4
        assert "region" not in spec
        assert second.json()["metadata"]["labels"] == {
            "owner": "someone-else"
        }  # another manager's field stays


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


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def test_builtin_kinds_are_validated_strictly(api: Any) -> None:
    apps = kubernetes.client.AppsV1Api(api)
    bad = deployment("web")
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    bad["spec"]["template"]["spec"]["containers"][0]["bogus"] = True
    del bad["spec"]["selector"]
    with pytest.raises(ApiException) as invalid:
        apps.create_namespaced_deployment(NS, bad)
    body = status_body(invalid.value)
    assert (invalid.value.status, body["reason"]) == (422, "Invalid")
    assert body["message"].startswith('Deployment.apps "web" is invalid: [')
    causes = {c["field"]: c for c in body["details"]["causes"]}
    assert set(causes) == {
        "spec.selector",
        "spec.template.spec.containers[0].imagePullPolicy",
        "spec.template.spec.containers[0].bogus",
    }
    assert causes["spec.selector"]["reason"] == "FieldValueRequired"
    assert causes["spec.template.spec.containers[0].imagePullPolicy"]["reason"] == "FieldValueTypeInvalid"
    assert (
        'unknown field "spec.template.spec.containers[0].bogus"'
        in causes["spec.template.spec.containers[0].bogus"]["message"]
    )

    with pytest.raises(ApiException) as bad_label:
        kubernetes.client.CoreV1Api(api).create_namespaced_config_map(
            NS, {"metadata": {"name": "Bad_Name", "labels": {"k": "x" * 64}}}
        )
    fields = [c["field"] for c in status_body(bad_label.value)["details"]["causes"]]
    assert fields == ["metadata.name", "metadata.labels"]

    # The verdicts agree with kubernetes_validate.validate(..., strict=True) itself.
    good = deployment("ok")
    kubernetes_validate.validate(good, "1.33", strict=True)
    apps.create_namespaced_deployment(NS, good)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.33", strict=True)


def test_kube_version_is_configurable(tmp_path: Path) -> None:
    service = {
        "metadata": {"name": "svc"},
        "spec": {"ports": [{"port": 80}], "trafficDistribution": "PreferClose"},  # new in Kubernetes 1.30
    }
    with KubeEmulator(kube_version="1.29") as old, KubeEmulator() as current:
        with pytest.raises(ApiError, match="unknown field"):
            old.create_object("services", service)
        assert current.create_object("services", service)["spec"]["trafficDistribution"] == "PreferClose"
        assert httpx.get(f"{old.server_url}/version").json()["minor"] == "29"


def test_custom_resources_are_validated_against_the_crd(custom: Any) -> None:
    def causes_of(body: dict[str, Any], **kwargs: Any) -> dict[str, dict[str, Any]]:
        with pytest.raises(ApiException) as invalid:
            custom.create_namespaced_custom_object(GROUP, "v1", NS, "widgets", body, **kwargs)
        status = status_body(invalid.value)
        assert (invalid.value.status, status["reason"]) == (422, "Invalid")
        assert status["message"].startswith(f'Widget.{GROUP} "{body["metadata"]["name"]}" is invalid')
        return {c["field"]: c for c in status["details"]["causes"]}

    missing = widget("w1")
    del missing["spec"]["maxReplicas"]
    assert causes_of(missing)["spec.maxReplicas"]["reason"] == "FieldValueRequired"

    enum = causes_of(widget("w1", mode="turbo"))["spec.mode"]
    assert enum["reason"] == "FieldValueNotSupported"
    assert '"fast", "cheap"' in enum["message"]

    assert causes_of(widget("w1", minReplicas=-1))["spec.minReplicas"]["reason"] == "FieldValueInvalid"
    assert set(causes_of(widget("w1", port=[80]))) == {"spec.port"}  # int-or-string

    cel = causes_of(widget("w1", minReplicas=5, maxReplicas=2))["spec"]
    assert cel["message"] == 'Invalid value: "object": minReplicas must not exceed maxReplicas'

    strict = causes_of(widget("w1", colour="red"), field_validation="Strict")
    assert strict["spec.colour"]["message"] == 'unknown field "spec.colour"'
    _, code, headers = custom.create_namespaced_custom_object_with_http_info(
        GROUP, "v1", NS, "widgets", widget("w1", colour="red")
    )
    assert code == 201
    assert (
        "colour" not in custom.get_namespaced_custom_object(GROUP, "v1", NS, "widgets", "w1")["spec"]
    )  # pruned
    assert 'unknown field \\"spec.colour\\"' in headers["Warning"]

    # A transition rule (oldSelf) is skipped on create and enforced on update.
    custom.create_namespaced_custom_object(GROUP, "v1", NS, "widgets", widget("w2", region="eu"))
    with pytest.raises(ApiException) as immutable:
        custom.patch_namespaced_custom_object(GROUP, "v1", NS, "widgets", "w2", {"spec": {"region": "us"}})
    assert immutable.value.status == 422
    assert "region is immutable" in status_body(immutable.value)["message"]


def test_validation_ratchets_values_an_update_leaves_unchanged(
    k8s_emulator: KubeEmulator, custom: Any
) -> None:
    crd_name = f"widgets.{GROUP}"
    strict = k8s_emulator.get_object("customresourcedefinitions", crd_name)
    assert strict is not None
    lax = json.loads(json.dumps(strict).replace('"fast", "cheap"', '"fast", "cheap", "turbo"'))
    del lax["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"
    ]
    k8s_emulator.replace_object("customresourcedefinitions", crd_name, lax)
    k8s_emulator.create_object("widgets", widget("old", minReplicas=5, maxReplicas=2, mode="turbo"), NS)
    strict["metadata"].pop("resourceVersion")
    k8s_emulator.replace_object("customresourcedefinitions", crd_name, strict)  # today's rules again

    updated = custom.patch_namespaced_custom_object_status(
        GROUP, "v1", NS, "widgets", "old", {"status": {"phase": "Bad"}}
    )
    assert updated["status"] == {"phase": "Bad"}  # the stored, now-invalid spec does not block other writes
    with pytest.raises(ApiException) as rechecked:
        custom.patch_namespaced_custom_object(GROUP, "v1", NS, "widgets", "old", {"spec": {"maxReplicas": 3}})
    causes = {c["field"] for c in status_body(rechecked.value)["details"]["causes"]}
    assert causes == {"spec"}  # the changed node's rule runs again; the unchanged enum stays ratcheted


# --------------------------------------------------------------------------------------------------
# Watches and fault injection over raw HTTP
# --------------------------------------------------------------------------------------------------


async def next_event(lines: AsyncIterator[str]) -> tuple[str, str]:
    async with asyncio.timeout(5):
        line = await anext(lines)
    event = json.loads(line)
    return event["type"], event["object"]["metadata"]["name"]


async def test_watch_streams_events_after_a_resource_version(
    k8s_emulator: KubeEmulator, http: httpx.AsyncClient
) -> None:
    base = f"/api/v1/namespaces/{NS}/configmaps"
    assert (await http.post(base, json={"metadata": {"name": "before"}})).status_code == 201
    listed = (await http.get(base)).json()
    params = {"watch": "true", "resourceVersion": listed["metadata"]["resourceVersion"]}
    async with http.stream("GET", base, params=params) as stream:
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        await http.post(base, json={"metadata": {"name": "one"}})
        assert await next_event(lines) == ("ADDED", "one")  # not "before": only events after the RV
        await http.patch(
            f"{base}/one", json={"data": {"a": "b"}}, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert await next_event(lines) == ("MODIFIED", "one")
        k8s_emulator.patch_object("configmaps", "one", {"data": {"a": "c"}}, NS)  # as if from another client
        assert await next_event(lines) == ("MODIFIED", "one")
        await http.delete(f"{base}/one")
        assert await next_event(lines) == ("DELETED", "one")

    async with http.stream("GET", base, params={"watch": "true"}) as fresh:
        assert await next_event(fresh.aiter_lines()) == ("ADDED", "before")  # the current state, synthesised


async def test_watch_honours_namespace_and_label_selector(
    k8s_emulator: KubeEmulator, http: httpx.AsyncClient
) -> None:
    k8s_emulator.create_object("namespaces", {"metadata": {"name": "other"}})
    merge = {"Content-Type": "application/merge-patch+json"}
    params = {
        "watch": "true",
        "labelSelector": "app in (web)",
        "resourceVersion": str(k8s_emulator.resource_version),
    }
    async with (
        http.stream("GET", f"/api/v1/namespaces/{NS}/configmaps", params=params) as scoped,
        http.stream("GET", "/api/v1/configmaps", params=params) as everywhere,
    ):
        scoped_lines, all_lines = scoped.aiter_lines(), everywhere.aiter_lines()
        await http.post(
            f"/api/v1/namespaces/{NS}/configmaps", json={"metadata": {"name": "db", "labels": {"app": "db"}}}
        )
        await http.post(
            "/api/v1/namespaces/other/configmaps",
            json={"metadata": {"name": "far", "labels": {"app": "web"}}},
        )
        await http.post(
            f"/api/v1/namespaces/{NS}/configmaps",
            json={"metadata": {"name": "near", "labels": {"app": "web"}}},
        )
        assert await next_event(all_lines) == ("ADDED", "far")
        assert await next_event(all_lines) == ("ADDED", "near")
        assert await next_event(scoped_lines) == ("ADDED", "near")
        await http.patch(
            f"/api/v1/namespaces/{NS}/configmaps/db",
            json={"metadata": {"labels": {"app": "web"}}},
            headers=merge,
        )
        assert await next_event(scoped_lines) == ("ADDED", "db")  # started matching
        await http.patch(
            f"/api/v1/namespaces/{NS}/configmaps/db",
            json={"metadata": {"labels": {"app": "x"}}},
            headers=merge,
        )
        assert await next_event(scoped_lines) == ("DELETED", "db")  # stopped matching


async def test_watch_timeout_and_expired_history(k8s_emulator: KubeEmulator, http: httpx.AsyncClient) -> None:
    base = f"/api/v1/namespaces/{NS}/configmaps"
    old_rv = str(k8s_emulator.resource_version)
    async with asyncio.timeout(5):
        response = await http.get(
            base, params={"watch": "true", "timeoutSeconds": "1", "resourceVersion": old_rv}
        )
    assert response.status_code == 200
    assert response.text == ""

    await http.post(base, json={"metadata": {"name": "x"}})
    k8s_emulator.expire_watch_history()
    response = await http.get(base, params={"watch": "true", "resourceVersion": old_rv})
    event = json.loads(response.text.splitlines()[0])
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410


async def test_fault_injection(k8s_emulator: KubeEmulator, http: httpx.AsyncClient) -> None:
    k8s_emulator.create_object("deployments", deployment("web"), NS)
    url = f"/apis/apps/v1/namespaces/{NS}/deployments/web"
    merge = {"Content-Type": "application/merge-patch+json"}
    fault = k8s_emulator.inject_faults(method="PATCH", path_re=r"/deployments/.*", status=500, times=2)
    statuses = [
        (await http.patch(url, json={"spec": {"replicas": 2}}, headers=merge)).status_code for _ in range(3)
    ]
    assert statuses == [500, 500, 200]
    assert fault.hits == 2
    assert (await http.get(url)).status_code == 200  # other methods are untouched

    k8s_emulator.inject_faults(method="GET", path_re=r"/deployments$", status=503, retry_after=1, watch=True)
    refused = await http.get(f"/apis/apps/v1/namespaces/{NS}/deployments", params={"watch": "true"})
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["reason"] == "ServiceUnavailable"
    assert (
        await http.get(f"/apis/apps/v1/namespaces/{NS}/deployments")
    ).status_code == 200  # a list, not a watch

    k8s_emulator.inject_faults(path_re="/configmaps", status=409, times=None)
    for _ in range(2):
        assert (await http.get(f"/api/v1/namespaces/{NS}/configmaps")).json()["reason"] == "Conflict"
    k8s_emulator.clear_faults()
    assert (await http.get(f"/api/v1/namespaces/{NS}/configmaps")).status_code == 200

    patches = k8s_emulator.requests_matching("PATCH", r"/deployments/web$")
    assert [(r.status, r.fault) for r in patches] == [(500, True), (500, True), (200, False)]


def test_sync_api_acts_like_another_client(k8s_emulator: KubeEmulator, api: Any) -> None:
    apps = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, deployment("web"))
    assert k8s_emulator.resolve("deploy") is k8s_emulator.resolve("deployments.apps")
    assert k8s_emulator.resolve("Deployment") is k8s_emulator.resolve("apps/v1/deployments")
    k8s_emulator.patch_status(
        "deployments", "web", {"readyReplicas": 1, "replicas": 1}, NS
    )  # a controller's write
    assert apps.read_namespaced_deployment_status("web", NS).status.ready_replicas == 1
    listed = k8s_emulator.list_objects("deploy", NS, label_selector="app=web")
    assert [d["metadata"]["name"] for d in listed] == ["web"]
    assert listed[0]["apiVersion"] == "apps/v1"
    with pytest.raises(ApiError) as invalid:
        k8s_emulator.patch_object("deployments", "web", {"spec": {"replicas": "many"}}, NS)
    assert invalid.value.code == 422
    assert k8s_emulator.delete_object("deployments", "web", NS) is None
    with pytest.raises(ApiError) as missing:
        k8s_emulator.delete_object("deployments", "web", NS)
    assert missing.value.code == 404


# --------------------------------------------------------------------------------------------------
# Real clients: kubeconfig, kubectl, kopf
# --------------------------------------------------------------------------------------------------


def test_kubeconfig_loads_in_the_official_client(k8s_kubeconfig: Path) -> None:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(k8s_kubeconfig), client_configuration=configuration)
    with kubernetes.client.ApiClient(configuration) as client:
        names = {n.metadata.name for n in kubernetes.client.CoreV1Api(client).list_namespace().items}
    assert "default" in names


def test_kubectl_applies_a_crd_and_gets_by_short_name(kubectl: Callable[..., str], tmp_path: Path) -> None:
    (tmp_path / "crd.yaml").write_text(yaml.safe_dump(WIDGET_CRD))
    assert "created" in kubectl("apply", "--validate=false", "-f", str(tmp_path / "crd.yaml"))
    assert "created" in kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(widget("w1")))
    table = kubectl("get", "wdg")
    assert table.split()[:2] == ["NAME", "AGE"]
    assert "w1" in table.split()
    fetched = json.loads(kubectl("get", "wdg", "w1", "-o", "json"))
    assert fetched["spec"]["mode"] == "cheap"
    assert "unchanged" in kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(widget("w1")))
    assert "deleted" in kubectl("delete", "wdg", "w1")
    assert kubectl("get", "wdg", "-o", "name") == ""


def test_kubectl_typed_generators_send_protobuf_the_emulator_decodes(
    k8s_emulator: KubeEmulator, kubectl: Callable[..., str]
) -> None:
    kubectl("create", "namespace", "team")
    kubectl("create", "configmap", "settings", "-n", "team", "--from-literal=a=b", "--from-literal=empty=")
    kubectl("create", "secret", "generic", "keys", "-n", "team", "--from-literal=k=v")
    kubectl("create", "serviceaccount", "robot", "-n", "team")
    assert k8s_emulator.get_object("namespaces", "team") is not None
    settings = k8s_emulator.get_object("configmaps", "settings", "team")
    assert settings is not None
    assert settings["data"] == {"a": "b", "empty": ""}
    keys = k8s_emulator.get_object("secrets", "keys", "team")
    assert keys is not None
    assert keys["data"] == {"k": "dg=="}  # base64 of "v"
    assert k8s_emulator.get_object("serviceaccounts", "robot", "team") is not None
    refused = kubectl("create", "deployment", "web", "--image=busybox", check=False)
    assert "cannot decode protobuf for apps/v1 Deployment" in refused


def test_kopf_operator_runs_against_the_emulator(k8s_emulator: KubeEmulator, api: Any) -> None:
    kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(WIDGET_CRD)
    registry = kopf._core.intents.registries.SmartOperatorRegistry()
    deleted = threading.Event()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=k8s_emulator.server_url, insecure=True, default_namespace=NS)

    @kopf.on.create(GROUP, "v1", "widgets", registry=registry)
    def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Ready"
        kopf.info(body, reason="Configured", message="the widget is ready")  # a core/v1 Event, validated

    @kopf.on.delete(GROUP, "v1", "widgets", registry=registry)
    def removed(**_: Any) -> None:
        deleted.set()

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    with KopfRunner(
        ["run", "--standalone", "--all-namespaces"], registry=registry, settings=settings, timeout=30
    ) as runner:
        k8s_emulator.create_object("widgets", widget("w1"), NS)
        ready = k8s_emulator.wait_for(
            "widgets",
            "w1",
            NS,
            condition=lambda w: bool(w and w.get("status", {}).get("phase") == "Ready"),
            timeout=20,
        )
        assert ready is not None
        assert "kopf.zalando.org/KopfFinalizerMarker" in ready["metadata"]["finalizers"]
        deadline = time.monotonic() + 10
        while not k8s_emulator.list_objects("events", NS) and time.monotonic() < deadline:
            time.sleep(0.05)  # kopf posts its events in the background
        events = k8s_emulator.list_objects("events", NS)
        assert any(e["involvedObject"]["name"] == "w1" and e["reason"] == "Configured" for e in events), (
            events
        )
        k8s_emulator.delete_object("widgets", "w1", NS)
        k8s_emulator.wait_for("widgets", "w1", NS, condition=lambda w: w is None, timeout=20)
    assert runner.exception is None
    assert runner.exit_code == 0
    assert deleted.is_set()
    invalid = [str(r) for r in k8s_emulator.request_log if r.status in (400, 415, 422, 500)]
    assert not invalid, invalid
    assert "inconsistencies" not in runner.output  # what kopf logs when a patch is not applied as sent
    assert "[ERROR" not in runner.output


def test_kopf_run_subprocess_logs_in_with_the_kubeconfig(
    k8s_emulator: KubeEmulator, k8s_kubeconfig: Path, tmp_path: Path
) -> None:
    k8s_emulator.create_object("customresourcedefinitions", WIDGET_CRD)
    handlers = tmp_path / "handlers.py"
    handlers.write_text(
        "import kopf\n"
        f"@kopf.on.create({GROUP!r}, 'v1', 'widgets')\n"
        "def created(patch, **_):\n"
        "    patch.status['phase'] = 'Ready'\n"
    )
    env = {**os.environ, "KUBECONFIG": str(k8s_kubeconfig)}  # kopf's default login reads it
    command = [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", str(handlers)]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as kopf_run:
        try:
            k8s_emulator.create_object("widgets", widget("w1"), NS)
            k8s_emulator.wait_for(
                "widgets",
                "w1",
                NS,
                condition=lambda w: bool(w and w.get("status", {}).get("phase")),
                timeout=30,
            )
        finally:
            kopf_run.send_signal(signal.SIGINT)
            output, _ = kopf_run.communicate(timeout=30)
    assert kopf_run.returncode == 0, output
    assert "Activity 'login_via_client' succeeded" in output
