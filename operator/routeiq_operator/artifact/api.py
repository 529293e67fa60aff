"""`ModelArtifact`: a trained router model, verified before any gateway may load it.

`routeiq_operator.artifact.controller` fetches the artifact from `spec.source`, verifies it
(digest pin, ed25519 signature, every file's size and sha256, the expected strategy) and
reports the result in the status: phase `Ready` with the digest, size, strategy and manifest
summary, or `Failed` with a condition reason naming the failed check. The source is re-checked
every `spec.checkIntervalSeconds`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from routeiq_operator.resource import (
    ApiModel,
    Condition,
    CrdInfo,
    LocalObjectReference,
    ObjectMeta,
    PrinterColumn,
    SecretKeyReference,
    cel,
)
from routeiq_router.strategies.catalog import TRAINED_STRATEGIES

__all__ = ["ModelArtifact", "ModelArtifactSpec", "ModelArtifactStatus"]

if TYPE_CHECKING:
    TrainedStrategy = str
else:
    # the router catalog's trained strategies: Literal[("knn", ...)] is Literal["knn", ...]
    TrainedStrategy = Literal[TRAINED_STRATEGIES]


class PvcSource(ApiModel):
    claim_name: str = Field(min_length=1, max_length=253)
    path: str = Field(min_length=1, pattern=r"^[^/].*$", description="Path inside the volume (relative).")


class S3Options(ApiModel):
    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/@\s]+(/\S*)?$",
        description="S3-compatible endpoint (checked against the operator's SSRF policy); no user or "
        "password in it: the credentials come from credentialsSecretRef.",
    )
    region: str | None = Field(default=None, description="Region; else AWS_REGION from the Secret.")


class ArtifactSource(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(("has(self.uri) != has(self.pvc)", "set exactly one of uri or pvc"))
    }

    uri: str | None = Field(
        default=None,
        pattern=r"^(s3|gs)://[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]/\S+$|^file:///\S+$",
        description="s3://bucket/key, gs://bucket/key or file:///path (a directory or .tar.gz).",
    )
    pvc: PvcSource | None = None
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret with the credentials: for s3:// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "(AWS_SESSION_TOKEN, AWS_REGION optional); for gs:// credentials.json, a service-account key.",
    )
    s3: S3Options | None = None


class Signature(ApiModel):
    public_key_secret_ref: SecretKeyReference = Field(description="ed25519 public key (PEM or raw base64).")
    required: bool = Field(
        default=True,
        description="true: refuse an artifact without a valid signature. false: an unsigned artifact "
        "is accepted, but a manifest.sig that is present must still verify.",
    )


class ModelArtifactSpec(ApiModel):
    source: ArtifactSource
    sha256: str | None = Field(
        default=None, pattern=r"^[a-f0-9]{64}$", description="Pin the artifact's digest."
    )
    signature: Signature | None = None
    strategy: TrainedStrategy | None = Field(
        default=None, description="Expected strategy; the manifest must agree."
    )
    check_interval_seconds: int = Field(
        default=300, ge=30, le=86400, description="How often the source is re-checked."
    )


class ManifestSummary(ApiModel):
    format_version: str | None = None
    strategy: str | None = None
    created_at: datetime | None = None
    embedding_model: str | None = None
    embedding_dimension: int | None = None
    candidate_models: list[str] | None = None
    training_data_sha256: str | None = None
    metrics: dict[str, float] | None = None


class ModelArtifactStatus(ApiModel):
    observed_generation: int | None = None
    phase: Literal["Pending", "Verifying", "Ready", "Failed"] | None = None
    message: str | None = Field(default=None, description="What the last verification found, in words.")
    uri: str | None = Field(default=None, description="The location that was verified.")
    digest: str | None = Field(default=None, description="sha256 of manifest.json (Ready only).")
    size_bytes: int | None = Field(
        default=None, description="Total bytes of the artifact's files, manifest included (Ready only)."
    )
    strategy: str | None = None
    manifest: ManifestSummary | None = None
    signature: Literal["verified", "present", "absent"] | None = Field(
        default=None,
        description="verified: manifest.sig checked with spec.signature's key; present: signed, no key "
        "configured; absent: unsigned.",
    )
    public_key_id: str | None = Field(
        default=None, description="Fingerprint of the public key the signature was checked with."
    )
    source_version: str | None = Field(
        default=None,
        description="Identity of what the source held when verified (ETags, generations, file stats); "
        "a change triggers re-verification.",
    )
    last_verified_time: datetime | None = None
    conditions: list[Condition] | None = None


class ModelArtifact(ApiModel):
    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="ModelArtifact",
        plural="modelartifacts",
        singular="modelartifact",
        short_names=["rqma"],
        printer_columns=[
            PrinterColumn(name="Strategy", type="string", json_path=".status.strategy"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Digest", type="string", json_path=".status.digest", priority=1),
            PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
        ],
    )

    api_version: Literal["routeiq.io/v1alpha1"] = "routeiq.io/v1alpha1"
    kind: Literal["ModelArtifact"] = "ModelArtifact"
    metadata: ObjectMeta
    spec: ModelArtifactSpec
    status: ModelArtifactStatus | None = None
