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
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from routeiq_operator.gateway.api import IMAGE_REPOSITORY, GatewayImage

__all__ = ["ALLOWED_VARIABLE", "DIGEST_REQUIRED_VARIABLE", "ImagePolicy", "image_reference"]

ALLOWED_VARIABLE = "ROUTEIQ_ALLOWED_IMAGE_REPOSITORIES"
DIGEST_REQUIRED_VARIABLE = "ROUTEIQ_DIGEST_REQUIRED_IMAGE_REPOSITORIES"
_CHART_VALUES = {
    ALLOWED_VARIABLE: "gatewayImages.allowedRepositories",
    DIGEST_REQUIRED_VARIABLE: "gatewayImages.digestRequiredRepositories",
}
_REPOSITORY = re.compile(IMAGE_REPOSITORY)


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
        or None."""
        repository = image.repository
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
