"""Validation: built-in kinds against the upstream schemas, custom resources against their CRD."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client  # type: ignore[import-untyped,unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped,unused-ignore]

from tests.k8s.emulator import ApiError, KubeEmulator
from tests.k8s.samples import GROUP, NS, deployment, status_body, widget


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
