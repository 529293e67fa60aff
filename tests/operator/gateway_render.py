"""What the gateway's render tests share: a base RouteIQGateway, `build` (it rendered with some spec
fields replaced) and accessors for the children it renders."""

from __future__ import annotations

import copy
from typing import Any

from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.children import ClusterFacts, DesiredState, desired_children

BASE: dict[str, Any] = {
    "apiVersion": "routeiq.io/v1alpha1",
    "kind": "RouteIQGateway",
    "metadata": {"name": "gw", "namespace": "routeiq", "uid": "0f5e-uid"},
    "spec": {
        "litellm": {
            "modelList": [
                {
                    "model_name": "chat",
                    "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "os.environ/OPENAI_API_KEY"},
                }
            ]
        },
        "secrets": {
            "masterKey": {"name": "routeiq-secrets", "key": "master-key"},
            "providerKeys": [
                {"env": "OPENAI_API_KEY", "secretKeyRef": {"name": "routeiq-secrets", "key": "openai"}}
            ],
        },
    },
}


def build(facts: ClusterFacts | None = None, **spec: Any) -> DesiredState:
    document = copy.deepcopy(BASE)
    document["spec"].update(spec)
    return desired_children(RouteIQGateway.model_validate(document), facts or ClusterFacts())


def by_kind(state: DesiredState) -> dict[str, dict[str, Any]]:
    return {child["kind"]: child for child in state.children}


def container(state: DesiredState) -> dict[str, Any]:
    deployment = by_kind(state)["Deployment"]
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


def env(state: DesiredState) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container(state)["env"]}


def pod(state: DesiredState) -> dict[str, Any]:
    result: dict[str, Any] = by_kind(state)["Deployment"]["spec"]["template"]["spec"]
    return result
