"""A gateway's router models: the ModelArtifacts it loads (the routing model and its experiments'
variants' models), rendered into its pod as env, volumes and the credentials they need.

The controller resolves each ModelArtifact to a `ResolvedModel`; `router_models` renders them, and
`template_models` reads back what a Deployment's pod template carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from routeiq_operator.gateway.api import ML_STRATEGIES, RouteIQGateway, Strategy

__all__ = [
    "GCS_CREDENTIALS_PATH",
    "MODELS_ANNOTATION",
    "MODELS_DIR",
    "ResolvedModel",
    "RouterModels",
    "router_models",
    "template_models",
]

# the pod template's router models, {"<artifact>": {"digest", "role", "uri"}}: what a rollout carries
MODELS_ANNOTATION = "routeiq.io/models"
MODELS_DIR = "/var/lib/routeiq/models"  # a PVC artifact is mounted at <MODELS_DIR>/<artifact name>
GCS_CREDENTIALS_DIR = "/var/run/secrets/routeiq/gcs"
GCS_CREDENTIALS_KEY = "credentials.json"
GCS_CREDENTIALS_PATH = f"{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_KEY}"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A router model to render: one ModelArtifact at one verified digest, and how pods reach it.

    Exactly one of `uri` (s3://, gs://, file:///) and `pvc` (claim, path inside it) is set.
    """

    name: str  # the ModelArtifact's name: a variant's model key
    digest: str  # sha256 of its manifest.json, 64 lowercase hex
    uri: str | None = None
    pvc: tuple[str, str] | None = None
    public_key: str | None = None  # the signature's ed25519 public key (PEM or base64), not secret
    credentials_secret: str | None = None  # spec.source.credentialsSecretRef.name
    s3_endpoint: str | None = None
    s3_region: str | None = None

    @property
    def scheme(self) -> Literal["s3", "gs", "file", "pvc"]:
        if self.uri is None:
            return "pvc"
        if self.uri.startswith("s3://"):
            return "s3"
        return "gs" if self.uri.startswith("gs://") else "file"

    @property
    def source(self) -> str:
        """Where it comes from, as status.models records it (`pvc://<claim>/<path>` for a claim)."""
        if self.pvc is not None:
            return f"pvc://{self.pvc[0]}/{self.pvc[1]}"
        return self.uri or ""

    @property
    def location(self) -> str:
        """What the pod loads: the URI, or the file path of the mounted claim."""
        if self.pvc is not None:
            return f"{MODELS_DIR}/{self.name}/{self.pvc[1].strip('/')}"
        return self.uri or ""

    def identity(self) -> tuple[str | None, ...] | None:
        """The pod-wide credentials it needs (a pod has one AWS identity, one GCS key), or None."""
        if self.scheme == "s3":
            return (self.credentials_secret, self.s3_endpoint, self.s3_region)
        if self.scheme == "gs":
            return (self.credentials_secret,)
        return None


@dataclass(slots=True)
class RouterModels:
    """The router models' part of the pod: env, volumes, mounts, and what it loads."""

    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    # "<artifact>" -> {"digest", "role", "uri"}: the MODELS_ANNOTATION, and status.models once rolled out
    loaded: dict[str, dict[str, str]] = field(default_factory=dict)
    # (reason, message) for the ModelsResolved condition
    problems: list[tuple[str, str]] = field(default_factory=list)


def _names(models: list[ResolvedModel]) -> str:
    return ", ".join(model.name for model in models)


def _credentials_env(model: ResolvedModel) -> list[dict[str, Any]]:
    """The variables boto3 / google-cloud-storage read, for the credentials one model needs."""
    env: list[dict[str, Any]] = []
    secret = model.credentials_secret
    if model.scheme == "s3":
        if secret is not None:
            for key, optional in (
                ("AWS_ACCESS_KEY_ID", False),
                ("AWS_SECRET_ACCESS_KEY", False),
                ("AWS_SESSION_TOKEN", True),
            ):
                ref: dict[str, Any] = {"name": secret, "key": key} | ({"optional": True} if optional else {})
                env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
        if model.s3_region is not None:  # spec.source.s3.region wins over the Secret's AWS_REGION
            env.append({"name": "AWS_REGION", "value": model.s3_region})
        elif secret is not None:
            ref = {"name": secret, "key": "AWS_REGION", "optional": True}
            env.append({"name": "AWS_REGION", "valueFrom": {"secretKeyRef": ref}})
        if model.s3_endpoint is not None:
            env.append({"name": "AWS_ENDPOINT_URL_S3", "value": model.s3_endpoint})
    elif model.scheme == "gs" and secret is not None:
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": GCS_CREDENTIALS_PATH})
    return env


def router_models(
    gateway: RouteIQGateway,
    *,
    models: Mapping[str, ResolvedModel],
    variant_models: frozenset[str],
    unresolved_models: Mapping[str, str],
    taken: set[str],
) -> RouterModels:
    """ROUTEIQ_MODEL_* for the routing model, ROUTEIQ_VARIANT_MODELS for the variants' models, and
    the credentials they need. `models`, `variant_models`, `unresolved_models`: the ClusterFacts
    fields; `taken`: variable names the gateway's other env already sets."""
    out = RouterModels()
    routing = gateway.spec.routing
    routing_name = routing.model_artifact_ref.name if routing.model_artifact_ref else None
    routing_model = models.get(routing_name) if routing_name else None
    if routing_name is not None and routing_model is None and routing.strategy.value in ML_STRATEGIES:
        why = unresolved_models.get(routing_name, "not resolved")
        out.problems.append(
            (
                "ModelArtifactNotReady",
                f"ModelArtifact {routing_name} (spec.routing.modelArtifactRef) is {why}: the "
                f"{routing.strategy.value} strategy needs it, so the pods cannot become ready; "
                "everything else is applied",
            )
        )
    # the routing model first: a variant's model that needs other credentials gives way
    candidates = [routing_model] if routing_model is not None else []
    reserved = {strategy.value for strategy in Strategy}
    refused: list[ResolvedModel] = []
    for name in sorted(variant_models):
        model = models.get(name)
        if model is None:
            continue
        if name in reserved:  # the worker holds each strategy's own model under its name
            refused.append(model)
        elif model is not routing_model:
            candidates.append(model)
    if refused:
        out.problems.append(
            (
                "ModelKeyReserved",
                f"ModelArtifact(s) {_names(refused)}: a variant's model key cannot be a strategy's name; "
                "rename the ModelArtifact; not loaded for the variants",
            )
        )
    rendered: list[ResolvedModel] = []
    identities: dict[str, tuple[tuple[str | None, ...], ResolvedModel]] = {}
    conflicts: list[tuple[ResolvedModel, ResolvedModel]] = []
    for model in candidates:
        identity = model.identity()
        if identity is not None:
            first = identities.setdefault(model.scheme, (identity, model))
            if first[0] != identity:
                conflicts.append((model, first[1]))
                continue
        rendered.append(model)
    if conflicts:
        out.problems.append(
            (
                "ArtifactCredentialsConflict",
                "; ".join(
                    f"ModelArtifact {model.name} needs other {model.scheme}:// credentials or endpoint "
                    f"(spec.source.credentialsSecretRef, spec.source.s3) than {first.name}, and a pod has "
                    "one identity: not loaded"
                    for model, first in conflicts
                ),
            )
        )
    for model in rendered:
        if model.pvc is not None:
            volume = f"model-{model.name}"
            out.volumes.append(
                {"name": volume, "persistentVolumeClaim": {"claimName": model.pvc[0], "readOnly": True}}
            )
            out.mounts.append({"name": volume, "mountPath": f"{MODELS_DIR}/{model.name}", "readOnly": True})
    if routing_model is not None:
        remote = routing_model.scheme in ("s3", "gs")
        out.env.append(
            {
                "name": "ROUTEIQ_MODEL_S3_URI" if remote else "ROUTEIQ_MODELS_PATH",
                "value": routing_model.location,
            }
        )
        out.env.append({"name": "ROUTEIQ_MODEL_DIGEST", "value": routing_model.digest})
        if routing_model.public_key is not None:
            out.env.append({"name": "ROUTEIQ_MODEL_PUBLIC_KEY", "value": routing_model.public_key})
    variants = {
        model.name: {"uri": model.location, "digest": model.digest}
        | ({"publicKey": model.public_key} if model.public_key is not None else {})
        for model in rendered
        if model.name in variant_models and model.name not in reserved
    }
    if variants:
        out.env.append(
            {
                "name": "ROUTEIQ_VARIANT_MODELS",
                "value": json.dumps(variants, sort_keys=True, separators=(",", ":")),
            }
        )
    clashes: list[str] = []
    for model in rendered:
        for variable in _credentials_env(model):
            if variable["name"] in taken:
                clashes.append(f"{variable['name']} (ModelArtifact {model.name})")
            elif all(variable["name"] != item["name"] for item in out.env):
                out.env.append(variable)
        gcs_mounted = any(volume["name"] == "model-gcs-credentials" for volume in out.volumes)
        if model.scheme == "gs" and model.credentials_secret is not None and not gcs_mounted:
            out.volumes.append(
                {
                    "name": "model-gcs-credentials",
                    "secret": {
                        "secretName": model.credentials_secret,
                        "items": [{"key": GCS_CREDENTIALS_KEY, "path": GCS_CREDENTIALS_KEY}],
                    },
                }
            )
            out.mounts.append(
                {"name": "model-gcs-credentials", "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True}
            )
    if clashes:
        out.problems.append(
            (
                "ArtifactCredentialsConflict",
                f"the gateway's own environment (spec.secrets, spec.observability) already sets "
                f"{', '.join(clashes)}: the models are fetched with that value",
            )
        )
    out.loaded = {
        model.name: {
            "digest": model.digest,
            "role": "routing" if model is routing_model else "variant",
            "uri": model.source,
        }
        for model in rendered
    }
    return out


def template_models(deployment: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """The router models a Deployment's pod template carries (MODELS_ANNOTATION), by artifact name."""
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    text = ((template.get("metadata") or {}).get("annotations") or {}).get(MODELS_ANNOTATION)
    if not text:
        return {}
    try:
        loaded = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {
        str(name): {key: str(entry[key]) for key in ("digest", "role", "uri")}
        for name, entry in loaded.items()
        if isinstance(entry, dict)
        and all(isinstance(entry.get(key), str) for key in ("digest", "role", "uri"))
    }
