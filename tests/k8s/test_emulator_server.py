"""The emulator as a server: discovery, fault injection and the synchronous state API."""

from __future__ import annotations

from typing import Any

import httpx
import kubernetes.client  # type: ignore[import-untyped,unused-ignore]
import pytest

from tests.k8s.emulator import ApiError, KubeEmulator
from tests.k8s.samples import GROUP, NS, deployment


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
