"""Patch flavours (strategic merge, merge, JSON patch), PUT, and server-side apply."""

from __future__ import annotations

import json
from typing import Any

import httpx
import kubernetes.client  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped,unused-ignore]

from tests.k8s.emulator import KubeEmulator
from tests.k8s.samples import GROUP, NS, WIDGET_CRD, deployment, widget


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
