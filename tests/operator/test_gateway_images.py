"""Which image a gateway runs: the operator's standard or ML image, or the user's.

The choice (`gateway.images.effective_image`) is tested pure; the operator's behaviour with
`reconcile_gateway` in-process against the API emulator: a trained strategy or an experiment
variant with a model rolls the Deployment onto the ML image, and the standard image set by hand
for a trained strategy is refused with `ImageCannotServeStrategy` and nothing applied.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.controller import reconcile_gateway
from routeiq_operator.gateway.images import (
    GATEWAY_IMAGE_VARIABLE,
    GATEWAY_ML_IMAGE_VARIABLE,
    IMAGE_CANNOT_SERVE_STRATEGY,
    GatewayImages,
    ImagePolicy,
    effective_image,
    image_reference,
    image_refusal,
)
from routeiq_operator.kube import KubeClient
from routeiq_operator.validation import load
from tests.k8s.emulator import KubeEmulator
from tests.operator.scenarios import gateway

LOGGER = logging.getLogger("tests.gateway_images")
DIGEST = "sha256:" + "ab" * 32
LOCAL = GatewayImages.from_env(
    {
        GATEWAY_IMAGE_VARIABLE: "localhost:5000/routeiq-gateway:dev",
        GATEWAY_ML_IMAGE_VARIABLE: f"localhost:5000/routeiq-gateway-ml:dev@{DIGEST}",
    }
)
KNN = {"strategy": "knn", "modelArtifactRef": {"name": "router"}}


def _gateway(**spec: Any) -> RouteIQGateway:
    return load(RouteIQGateway, gateway("gw", "ns", **spec))


def _image(
    gw: RouteIQGateway, variants: frozenset[str] = frozenset(), defaults: GatewayImages = LOCAL
) -> str:
    image = effective_image(gw, variants, defaults)
    assert not isinstance(image, str), image
    return image_reference(image)


# ---- the choice ------------------------------------------------------------------------------------


def test_defaults_are_this_releases_images_on_ghcr() -> None:
    assert GatewayImages.from_env({}) == GatewayImages()
    assert GatewayImages.from_env({GATEWAY_IMAGE_VARIABLE: " "}) == GatewayImages()
    assert _image(_gateway(), defaults=GatewayImages()) == "ghcr.io/routeiq/routeiq-gateway:0.1.0"
    assert (
        _image(_gateway(routing=KNN), defaults=GatewayImages()) == "ghcr.io/routeiq/routeiq-gateway-ml:0.1.0"
    )


def test_simple_strategies_run_the_standard_image() -> None:
    assert _image(_gateway()) == "localhost:5000/routeiq-gateway:dev"
    assert _image(_gateway(routing={"strategy": "least-busy"})) == "localhost:5000/routeiq-gateway:dev"


@pytest.mark.parametrize(
    ("spec", "variants"),
    [
        ({"routing": KNN}, frozenset()),
        ({"routing": {"strategy": "mf", "modelArtifactRef": {"name": "mf"}}}, frozenset()),
        ({}, frozenset({"candidate-router"})),  # an experiment variant's model
    ],
)
def test_a_trained_router_runs_the_ml_image(spec: dict[str, Any], variants: frozenset[str]) -> None:
    assert _image(_gateway(**spec), variants) == f"localhost:5000/routeiq-gateway-ml:dev@{DIGEST}"


def test_tag_and_digest_apply_to_the_chosen_repository() -> None:
    assert _image(_gateway(image={"tag": "1.2.3"})) == "localhost:5000/routeiq-gateway:1.2.3"
    # a tag of its own drops the default's digest (it pinned another tag)
    assert _image(_gateway(routing=KNN, image={"tag": "1.2.3"})) == "localhost:5000/routeiq-gateway-ml:1.2.3"
    other = "sha256:" + "cd" * 32
    assert (
        _image(_gateway(routing=KNN, image={"digest": other}))
        == f"localhost:5000/routeiq-gateway-ml:dev@{other}"
    )
    gw = _gateway(image={"pullPolicy": "Never"})
    image = effective_image(gw, frozenset(), LOCAL)
    assert not isinstance(image, str)
    assert image.pull_policy == "Never"


def test_a_users_repository_is_run_as_set() -> None:
    custom = {"repository": "registry.example.com/team/gateway-with-ml", "tag": "7"}
    assert _image(_gateway(routing=KNN, image=custom)) == "registry.example.com/team/gateway-with-ml:7"
    # without a tag: the operator's tag
    assert _image(_gateway(image={"repository": "registry.example.com/gw"})) == "registry.example.com/gw:dev"


@pytest.mark.parametrize("repository", ["localhost:5000/routeiq-gateway", "ghcr.io/routeiq/routeiq-gateway"])
def test_the_standard_image_set_by_hand_cannot_serve_a_trained_router(repository: str) -> None:
    refusal = image_refusal(
        _gateway(routing=KNN, image={"repository": repository}), frozenset(), LOCAL, ImagePolicy()
    )
    assert refusal is not None
    reason, message = refusal
    assert reason == IMAGE_CANNOT_SERVE_STRATEGY
    assert f"spec.image.repository {repository} is the standard gateway image" in message
    assert "spec.routing.strategy knn is a trained router" in message
    assert "localhost:5000/routeiq-gateway-ml" in message  # the fix names the ML image
    # the same image serves a simple strategy
    assert (
        image_refusal(_gateway(image={"repository": repository}), frozenset(), LOCAL, ImagePolicy()) is None
    )


def test_the_policy_applies_to_the_default_image() -> None:
    policy = ImagePolicy(allowed=("ghcr.io/routeiq",))
    refusal = image_refusal(_gateway(), frozenset(), LOCAL, policy)
    assert refusal is not None
    assert refusal[0] == "ImageNotAllowed"
    assert "localhost:5000/routeiq-gateway is not allowed" in refusal[1]
    assert image_refusal(_gateway(), frozenset(), GatewayImages(), policy) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("ghcr.io/routeiq/Gateway:1", "is not an image repository"),
        ("ghcr.io/routeiq/gateway:-bad", "is not an image tag"),
        ("ghcr.io/routeiq/gateway:1@sha256:abc", "is not a digest"),
    ],
)
def test_a_malformed_default_image_names_the_variable(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as raised:
        GatewayImages.from_env({GATEWAY_ML_IMAGE_VARIABLE: value})
    assert str(raised.value).startswith(f"{GATEWAY_ML_IMAGE_VARIABLE} (gatewayImages.gatewayML) = ")


def test_references_with_a_registry_port_and_no_tag() -> None:
    images = GatewayImages.from_env({GATEWAY_IMAGE_VARIABLE: "localhost:5000/routeiq-gateway"})
    assert images.standard.repository == "localhost:5000/routeiq-gateway"
    assert images.standard.tag == "0.1.0"
    images = GatewayImages.from_env({GATEWAY_IMAGE_VARIABLE: f"mirror.local/routeiq-gateway@{DIGEST}"})
    assert (images.standard.repository, images.standard.digest) == ("mirror.local/routeiq-gateway", DIGEST)


# ---- the operator --------------------------------------------------------------------------------


def _body(emulator: KubeEmulator, namespace: str, name: str = "gw") -> dict[str, Any]:
    body = emulator.get_object("routeiqgateways", name, namespace)
    assert body is not None
    return body


def _container_image(emulator: KubeEmulator, namespace: str) -> str:
    deployment = emulator.get_object("deployments", "gw-gateway", namespace)
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def _ready(emulator: KubeEmulator, namespace: str) -> dict[str, Any]:
    conditions = {c["type"]: c for c in _body(emulator, namespace)["status"]["conditions"]}
    return dict(conditions["Ready"])


def _experiment(namespace: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": "routeiq.io/v1alpha1",
        "kind": "RoutingExperiment",
        "metadata": {"name": "exp", "namespace": namespace},
        "spec": {
            "gatewayRef": {"name": "gw"},
            "control": "control",
            "variants": [
                {"name": "control", "strategy": "round-robin", "weight": 50},
                {"name": "candidate", "strategy": "knn", "weight": 50, "modelArtifactRef": {"name": model}},
            ],
        },
    }


async def test_an_experiment_with_a_trained_variant_moves_the_gateway_to_the_ml_image(
    kube: KubeClient, emulator: KubeEmulator, namespace: str
) -> None:
    emulator.create_object("routeiqgateways", gateway("gw", namespace), namespace)
    await reconcile_gateway(
        kube, _body(emulator, namespace), LOGGER, images=ImagePolicy(), default_images=LOCAL
    )
    assert _container_image(emulator, namespace) == "localhost:5000/routeiq-gateway:dev"

    emulator.create_object("routingexperiments", _experiment(namespace, "candidate-router"), namespace)
    await reconcile_gateway(
        kube, _body(emulator, namespace), LOGGER, images=ImagePolicy(), default_images=LOCAL
    )
    assert _container_image(emulator, namespace) == f"localhost:5000/routeiq-gateway-ml:dev@{DIGEST}"


async def test_the_standard_image_for_a_trained_variant_is_refused_and_nothing_changes(
    kube: KubeClient, emulator: KubeEmulator, namespace: str
) -> None:
    standard = {"repository": "localhost:5000/routeiq-gateway", "tag": "dev"}
    emulator.create_object("routeiqgateways", gateway("gw", namespace, image=standard), namespace)
    await reconcile_gateway(
        kube, _body(emulator, namespace), LOGGER, images=ImagePolicy(), default_images=LOCAL
    )
    before = emulator.get_object("deployments", "gw-gateway", namespace)
    assert before is not None
    assert _ready(emulator, namespace)["reason"] != IMAGE_CANNOT_SERVE_STRATEGY

    emulator.create_object("routingexperiments", _experiment(namespace, "candidate-router"), namespace)
    await reconcile_gateway(
        kube, _body(emulator, namespace), LOGGER, images=ImagePolicy(), default_images=LOCAL
    )
    ready = _ready(emulator, namespace)
    assert (ready["status"], ready["reason"]) == ("False", IMAGE_CANNOT_SERVE_STRATEGY)
    assert "its experiments' variants load ModelArtifact candidate-router" in ready["message"]
    assert "nothing is applied" in ready["message"]
    after = emulator.get_object("deployments", "gw-gateway", namespace)
    assert after is not None
    assert after["spec"] == before["spec"]

    # the fix the message names: drop spec.image.repository
    spec = copy.deepcopy(_body(emulator, namespace)["spec"])
    del spec["image"]["repository"]
    emulator.replace_object("routeiqgateways", "gw", {**_body(emulator, namespace), "spec": spec}, namespace)
    await reconcile_gateway(
        kube, _body(emulator, namespace), LOGGER, images=ImagePolicy(), default_images=LOCAL
    )
    assert _ready(emulator, namespace)["reason"] != IMAGE_CANNOT_SERVE_STRATEGY
    # spec.image.tag stays set: the ML repository at that tag (the default's digest pinned its own tag)
    assert _container_image(emulator, namespace) == "localhost:5000/routeiq-gateway-ml:dev"
