"""Which images a gateway may run: the operator's image policy (pure).

Whoever may create a `RouteIQGateway` picks its `spec.image`; the cluster admin narrows that choice
with two operator settings (chart values `gatewayImages.*`), each a comma-separated list of
repository prefixes:

- `ROUTEIQ_ALLOWED_IMAGE_REPOSITORIES`: a gateway's repository must fall under one of them (empty:
  any repository);
- `ROUTEIQ_DIGEST_REQUIRED_IMAGE_REPOSITORIES`: a gateway whose repository falls under one of them
  must pin its image with `spec.image.digest`.

A prefix matches at a path boundary: `ghcr.io/routeiq` admits `ghcr.io/routeiq` and
`ghcr.io/routeiq/<anything>`, never `ghcr.io/routeiq-fork/...`. Repositories are compared as
written (case-insensitively): `nginx` and `docker.io/library/nginx` are different entries.

A gateway outside the policy is not applied at all (its status says why, naming the repository
and the setting); its children, if any, stay as they were.

Which image a gateway runs when `spec.image.repository` is not set is the operator's choice too
(`GatewayImages`, chart values `gatewayImages.gateway` and `gatewayImages.gatewayML`): the standard
image (`ROUTEIQ_GATEWAY_IMAGE`, the `gateway` extra) serves the simple strategies; the ML image
(`ROUTEIQ_GATEWAY_ML_IMAGE`, the `gateway,ml-serve,s3,gcs` extras) also serves trained routers, and is the one
run whenever the gateway's strategy is trained or it loads a router model (its own or an
experiment variant's). A gateway that sets the standard repository itself while it needs a trained
router is refused like an image outside the policy (`ImageCannotServeStrategy`): its pods could not
route as asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from routeiq_operator.gateway.api import (
    IMAGE_DIGEST,
    IMAGE_REPOSITORY,
    ML_STRATEGIES,
    GatewayImage,
    RouteIQGateway,
)

__all__ = [
    "ALLOWED_VARIABLE",
    "DIGEST_REQUIRED_VARIABLE",
    "GATEWAY_IMAGE_VARIABLE",
    "GATEWAY_ML_IMAGE_VARIABLE",
    "IMAGE_CANNOT_SERVE_STRATEGY",
    "IMAGE_NOT_ALLOWED",
    "GatewayImages",
    "ImagePolicy",
    "effective_image",
    "image_reference",
    "image_refusal",
    "trained_router_need",
]

GATEWAY_IMAGE_VARIABLE = "ROUTEIQ_GATEWAY_IMAGE"
GATEWAY_ML_IMAGE_VARIABLE = "ROUTEIQ_GATEWAY_ML_IMAGE"
IMAGE_CANNOT_SERVE_STRATEGY = "ImageCannotServeStrategy"
# the reasons of the conditions of a gateway that is not applied for its image
IMAGE_NOT_ALLOWED = "ImageNotAllowed"
DEFAULT_TAG = "0.1.0"  # this release's images
STANDARD_REPOSITORY = "ghcr.io/routeiq/routeiq-gateway"
ML_REPOSITORY = "ghcr.io/routeiq/routeiq-gateway-ml"

ALLOWED_VARIABLE = "ROUTEIQ_ALLOWED_IMAGE_REPOSITORIES"
DIGEST_REQUIRED_VARIABLE = "ROUTEIQ_DIGEST_REQUIRED_IMAGE_REPOSITORIES"
_CHART_VALUES = {
    ALLOWED_VARIABLE: "gatewayImages.allowedRepositories",
    DIGEST_REQUIRED_VARIABLE: "gatewayImages.digestRequiredRepositories",
    GATEWAY_IMAGE_VARIABLE: "gatewayImages.gateway",
    GATEWAY_ML_IMAGE_VARIABLE: "gatewayImages.gatewayML",
}
_REPOSITORY = re.compile(IMAGE_REPOSITORY)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(IMAGE_DIGEST)


def image_reference(image: GatewayImage) -> str:
    """The container's image: repository:tag, or repository:tag@digest when a digest is set (the
    digest decides what runs; the tag stays for people reading the pod)."""
    reference = f"{image.repository}:{image.tag}"
    return f"{reference}@{image.digest}" if image.digest else reference


def _prefixes(variable: str, text: str) -> tuple[str, ...]:
    prefixes = []
    for item in text.split(","):
        prefix = item.strip().rstrip("/")
        if not prefix:
            continue
        if not _REPOSITORY.match(prefix):
            raise ValueError(
                f"{variable}: {prefix!r} is not an image repository (registry host, optional port and "
                "path; no tag, digest or wildcard)"
            )
        prefixes.append(prefix.lower())
    return tuple(prefixes)


def _under(repository: str, prefixes: tuple[str, ...]) -> bool:
    repository = repository.lower()
    return any(repository == prefix or repository.startswith(f"{prefix}/") for prefix in prefixes)


def _setting(variable: str) -> str:
    return f"{variable}, chart value {_CHART_VALUES[variable]}"


@dataclass(frozen=True, slots=True)
class ImagePolicy:
    """Repository prefixes: allowed (empty: any) and those that must be pinned by digest."""

    allowed: tuple[str, ...] = ()
    digest_required: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ImagePolicy:
        """The policy the operator's environment sets; ValueError naming the variable when an entry
        is not a repository."""
        return cls(
            allowed=_prefixes(ALLOWED_VARIABLE, environ.get(ALLOWED_VARIABLE, "")),
            digest_required=_prefixes(DIGEST_REQUIRED_VARIABLE, environ.get(DIGEST_REQUIRED_VARIABLE, "")),
        )

    def problem(self, image: GatewayImage) -> str | None:
        """Why this operator will not run `image` (one line naming the repository and the setting),
        or None. `image`: the effective image (its repository set)."""
        repository = image.repository or ""
        if self.allowed and not _under(repository, self.allowed):
            return (
                f"spec.image.repository {repository} is not allowed: this operator runs gateway images "
                f"from {', '.join(self.allowed)} only ({_setting(ALLOWED_VARIABLE)})"
            )
        if image.digest is None and _under(repository, self.digest_required):
            return (
                f"spec.image.repository {repository} must be pinned by spec.image.digest (sha256:...): "
                f"images from {', '.join(self.digest_required)} run by digest only "
                f"({_setting(DIGEST_REQUIRED_VARIABLE)})"
            )
        return None


def _parse_reference(variable: str, text: str) -> GatewayImage:
    """`repository:tag`, `repository@sha256:...` or `repository:tag@sha256:...`; ValueError naming
    the variable otherwise."""
    reference, _, digest = text.strip().partition("@")
    repository, tag = reference, DEFAULT_TAG
    head, sep, tail = reference.rpartition(":")
    if sep and "/" not in tail:  # a colon after the last slash starts the tag (not a registry port)
        repository, tag = head, tail
    problems = []
    if not _REPOSITORY.match(repository):
        problems.append(f"{repository!r} is not an image repository")
    if not _TAG.match(tag):
        problems.append(f"{tag!r} is not an image tag")
    if digest and not _DIGEST.match(digest):
        problems.append(f"{digest!r} is not a digest (sha256:<64 hex digits>)")
    if problems:
        raise ValueError(f"{variable} ({_CHART_VALUES[variable]}) = {text!r}: {'; '.join(problems)}")
    return GatewayImage(repository=repository, tag=tag, digest=digest or None)


@dataclass(frozen=True, slots=True)
class GatewayImages:
    """The images gateways run when their spec names no repository."""

    standard: GatewayImage = field(
        default_factory=lambda: GatewayImage(repository=STANDARD_REPOSITORY, tag=DEFAULT_TAG)
    )
    ml: GatewayImage = field(default_factory=lambda: GatewayImage(repository=ML_REPOSITORY, tag=DEFAULT_TAG))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewayImages:
        """The operator's settings (unset or empty: this release's images on ghcr.io); ValueError
        naming the variable when one is not an image reference."""
        default = cls()
        return cls(
            standard=_parse_reference(GATEWAY_IMAGE_VARIABLE, environ[GATEWAY_IMAGE_VARIABLE])
            if environ.get(GATEWAY_IMAGE_VARIABLE, "").strip()
            else default.standard,
            ml=_parse_reference(GATEWAY_ML_IMAGE_VARIABLE, environ[GATEWAY_ML_IMAGE_VARIABLE])
            if environ.get(GATEWAY_ML_IMAGE_VARIABLE, "").strip()
            else default.ml,
        )

    def standard_repositories(self) -> frozenset[str]:
        """Repositories known to hold the standard image, which cannot serve trained routers."""
        return frozenset({(self.standard.repository or "").lower(), STANDARD_REPOSITORY})


def trained_router_need(gateway: RouteIQGateway, variant_models: frozenset[str]) -> str | None:
    """Why the gateway's pods need the ML image (a trained strategy, or router models to load),
    or None when the simple strategies are all they run."""
    routing = gateway.spec.routing
    if routing.strategy in ML_STRATEGIES:
        return f"spec.routing.strategy {routing.strategy} is a trained router"
    if routing.model_artifact_ref is not None:
        return f"spec.routing.modelArtifactRef loads ModelArtifact {routing.model_artifact_ref.name}"
    if variant_models:
        return f"its experiments' variants load ModelArtifact {', '.join(sorted(variant_models))}"
    return None


def effective_image(
    gateway: RouteIQGateway, variant_models: frozenset[str], defaults: GatewayImages
) -> GatewayImage | str:
    """The image the gateway's pods run, or why none can (one line naming the field and the fix).

    Without spec.image.repository: the ML image when a trained router is needed, else the standard
    one; spec.image.tag and digest, when set, apply to it. With a repository: that image, unless it
    is the standard image while a trained router is needed."""
    image = gateway.spec.image
    need = trained_router_need(gateway, variant_models)
    if image.repository is None:
        base = defaults.ml if need else defaults.standard
        return GatewayImage(
            repository=base.repository,
            tag=image.tag or base.tag,
            digest=image.digest or (base.digest if image.tag is None else None),
            pull_policy=image.pull_policy,
        )
    if need and image.repository.lower() in defaults.standard_repositories():
        return (
            f"spec.image.repository {image.repository} is the standard gateway image, which cannot serve "
            f"trained routers, but {need}; remove spec.image.repository so that the operator runs "
            f"{defaults.ml.repository}, or set it to an image built with the ml-serve extra"
        )
    return GatewayImage(
        repository=image.repository,
        tag=image.tag or defaults.standard.tag,
        digest=image.digest,
        pull_policy=image.pull_policy,
    )


def image_refusal(
    gateway: RouteIQGateway, variant_models: frozenset[str], defaults: GatewayImages, policy: ImagePolicy
) -> tuple[str, str] | None:
    """(condition reason, message) when the gateway is not to be applied for its image, else None."""
    image = effective_image(gateway, variant_models, defaults)
    if isinstance(image, str):
        return IMAGE_CANNOT_SERVE_STRATEGY, image
    refused = policy.problem(image)
    return None if refused is None else (IMAGE_NOT_ALLOWED, refused)
