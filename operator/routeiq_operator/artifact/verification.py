"""What verifying a `ModelArtifact` means, without the Kubernetes API: the plan (what to fetch and
how to verify it, the Secrets already read), the verification itself, the condition reasons, and
the status each outcome is reported with. `routeiq_operator.artifact.controller` reads the object
and its Secrets, runs `fetch_and_verify` in a worker thread and writes the status.

The artifact is verified exactly as a gateway verifies it before loading a model
(`routeiq_router.artifacts`): the digest pin (`spec.sha256`), the ed25519 signature
(`spec.signature`), every file's size and sha256 against `manifest.json`, no unlisted file, the
size limits, and the SSRF policy for custom endpoints; then the manifest's strategy against
`spec.strategy`.

Signatures: with `spec.signature.required: true` a valid `manifest.sig` made with the key is
mandatory. With `required: false` an unsigned artifact is accepted, but a `manifest.sig` that
is there must verify with the key (a bad or foreign signature is never accepted). Without
`spec.signature` nothing is checked and `status.signature` says `present` or `absent`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from routeiq_operator.artifact.api import ManifestSummary, ModelArtifact, ModelArtifactStatus
from routeiq_operator.conditions import condition, invalid_spec_conditions, merge_conditions, now
from routeiq_router.artifacts.manifest import SIGNATURE, ArtifactError, Manifest
from routeiq_router.artifacts.sources import RemoteAccess, fetch_artifact, source_version
from routeiq_router.artifacts.ssrf import SsrfPolicy
from routeiq_router.artifacts.verify import VerifiedArtifact, read_artifact

if TYPE_CHECKING:
    from routeiq_router.artifacts.signing import Ed25519PublicKey

__all__ = [
    "CONDITION_TYPES",
    "REASONS",
    "SSRF_VARIABLES",
    "Outcome",
    "Plan",
    "Refused",
    "check_combinations",
    "condition_reason",
    "fetch_and_verify",
    "manifest_summary",
    "ready_status",
    "refused_status",
    "ssrf_policy_from_env",
    "status_patch",
    "up_to_date",
    "verifying_status",
]

# the conditions a ModelArtifact reports
CONDITION_TYPES: Final = ("Ready", "Verified")

# the operator takes the gateway's SSRF settings (see docs/artifacts.md, "SSRF protection")
SSRF_VARIABLES: Final = (
    "ROUTEIQ_SSRF_ALLOW_PRIVATE",
    "ROUTEIQ_SSRF_HOST_ALLOWLIST",
    "ROUTEIQ_SSRF_CIDR_ALLOWLIST",
)

# ArtifactError.reason -> the condition reason; "fetch" is SourceNotFound or FetchFailed
REASONS: Final[Mapping[str, str]] = {
    "manifest": "ManifestInvalid",
    "digest": "DigestMismatch",
    "signature_missing": "SignatureMissing",
    "signature": "SignatureInvalid",
    "unlisted_file": "UnlistedFile",
    "file_missing": "FileMissing",
    "size_mismatch": "SizeMismatch",
    "sha256_mismatch": "Sha256Mismatch",
    "archive_corrupt": "ArchiveCorrupt",
    "unsafe_entry": "UnsafeEntry",
    "too_large": "TooLarge",
    "ssrf": "SsrfRefused",
    "format": "FormatInvalid",
    "pickle": "PickleRefused",
    "untrusted_type": "UntrustedType",
    "strategy_mismatch": "StrategyMismatch",
}
_NOT_FOUND = ("no such object", "no such bucket", "no objects under this prefix", "no such file")

_STATUS_FIELDS: Final = tuple(info.alias or name for name, info in ModelArtifactStatus.model_fields.items())
_MANIFEST_FIELDS: Final = tuple(info.alias or name for name, info in ManifestSummary.model_fields.items())


def ssrf_policy_from_env(environ: Mapping[str, str] | None = None) -> SsrfPolicy:
    """The SSRF policy from `ROUTEIQ_SSRF_ALLOW_PRIVATE`, `ROUTEIQ_SSRF_HOST_ALLOWLIST` and
    `ROUTEIQ_SSRF_CIDR_ALLOWLIST` (default: the process environment), parsed exactly as the
    gateway parses them. Raises SettingsError (a ValueError) naming an invalid variable.
    """
    from routeiq_router.settings import load_settings

    source = os.environ if environ is None else environ
    wanted = {name.upper(): value for name, value in source.items() if name.upper() in SSRF_VARIABLES}
    return SsrfPolicy.from_settings(load_settings(wanted))


def condition_reason(error: ArtifactError) -> str:
    """The CamelCase condition reason for a refused artifact."""
    if error.reason == "fetch":
        text = str(error).lower()
        return "SourceNotFound" if any(part in text for part in _NOT_FOUND) else "FetchFailed"
    known = REASONS.get(error.reason)
    if known is not None:
        return known
    camel = "".join(part.capitalize() for part in error.reason.split("_") if part)
    return camel or "VerificationFailed"


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """`status.manifest`: what the manifest says, in the CRD's shape."""
    summary = ManifestSummary(
        format_version=str(manifest.format_version),
        strategy=manifest.strategy,
        created_at=manifest.created_at,
        embedding_model=manifest.embedding.model if manifest.embedding else None,
        embedding_dimension=manifest.embedding.dimension if manifest.embedding else None,
        candidate_models=list(manifest.candidates),
        training_data_sha256=manifest.training_data.sha256,
        metrics=dict(manifest.metrics) or None,
    )
    return summary.model_dump(mode="json", by_alias=True, exclude_none=True)


class Refused(Exception):
    """The pass stops here: the status says why (phase Failed, or Pending)."""

    def __init__(self, reason: str, message: str, phase: str = "Failed") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.phase = phase


@dataclass(frozen=True)
class Plan:
    """What to fetch and how to verify it, with the Secrets resolved."""

    uri: str
    access: RemoteAccess | None
    public_key: Ed25519PublicKey | None
    key_id: str | None
    signature_required: bool
    expected_digest: str | None
    strategy: str | None


@dataclass(frozen=True)
class Outcome:
    artifact: VerifiedArtifact
    size_bytes: int
    version: str


def check_combinations(artifact: ModelArtifact) -> None:
    """Cross-field rules the schema does not state: an option that would be ignored is an error."""
    source = artifact.spec.source
    scheme = (source.uri or "").split("://", 1)[0] if source.uri else "pvc"
    if source.s3 is not None and scheme != "s3":
        raise Refused("InvalidSpec", f"spec.source.s3: applies to s3:// URIs only, the source is {scheme}")
    if source.credentials_secret_ref is not None and scheme not in {"s3", "gs"}:
        raise Refused(
            "InvalidSpec",
            f"spec.source.credentialsSecretRef: applies to s3:// and gs:// URIs only, the source is {scheme}",
        )


def fetch_and_verify(plan: Plan, ssrf: SsrfPolicy, version: str | None) -> Outcome:
    """Fetch the artifact and verify it (blocking: run it in a worker thread); ArtifactError says
    which check failed. `version`: the source's identity when already asked, else it is asked first."""
    # the version first: a source replaced during the download shows up as a change next time
    if version is None:
        version = source_version(plan.uri, ssrf=ssrf, access=plan.access)
    files = fetch_artifact(plan.uri, ssrf=ssrf, access=plan.access)
    # required: a missing signature is refused; optional: a signature that is there must verify
    key = plan.public_key if plan.signature_required or SIGNATURE in files else None
    artifact = read_artifact(files, expected_digest=plan.expected_digest, public_key=key)
    found = artifact.manifest.strategy
    if plan.strategy is not None and found != plan.strategy:
        raise ArtifactError(
            f"the manifest's strategy is {found!r}, spec.strategy is {plan.strategy!r}",
            reason="strategy_mismatch",
        )
    return Outcome(artifact=artifact, size_bytes=sum(len(data) for data in files.values()), version=version)


# -- status ----------------------------------------------------------------------------------------------


def status_patch(status: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that leaves exactly `status`: every field it lacks is removed."""
    patch: dict[str, Any] = dict.fromkeys(_STATUS_FIELDS) | dict(status)
    manifest = status.get("manifest")
    if isinstance(manifest, Mapping):
        old_metrics = (previous.get("manifest") or {}).get("metrics") or {}
        patch["manifest"] = dict.fromkeys(_MANIFEST_FIELDS) | dict(manifest)
        if "metrics" in manifest:
            patch["manifest"]["metrics"] = dict.fromkeys(old_metrics) | dict(manifest["metrics"])
    return patch


def refused_status(
    body: Mapping[str, Any], uri: str | None, reason: str, message: str, *, phase: str, checked: bool
) -> dict[str, Any]:
    """Failed or Pending, and why; no digest, so no gateway can be rolled out to it. A spec that
    breaks the CRD or a cross-field rule is reported by `invalid_spec_conditions`."""
    generation = body["metadata"].get("generation")
    previous = (body.get("status") or {}).get("conditions") or []
    if reason == "InvalidSpec":
        conditions = invalid_spec_conditions(previous, message, generation, types=CONDITION_TYPES)
    else:
        conditions = merge_conditions(
            previous,
            [
                condition("Ready", False, reason, message, generation),
                condition("Verified", False, reason, message, generation),
            ],
        )
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase,
        "message": message,
        "conditions": conditions,
    }
    if uri is not None:
        status["uri"] = uri
    if checked:
        status["lastVerifiedTime"] = now()
    return status


def verifying_status(body: Mapping[str, Any], uri: str) -> dict[str, Any]:
    generation = body["metadata"].get("generation")
    previous = (body.get("status") or {}).get("conditions") or []
    message = f"fetching and verifying {uri}"
    return {
        "observedGeneration": generation,
        "phase": "Verifying",
        "message": message,
        "uri": uri,
        "conditions": merge_conditions(
            previous,
            [
                condition("Ready", False, "Verifying", message, generation),
                condition("Verified", None, "Verifying", message, generation),
            ],
        ),
    }


def ready_status(body: Mapping[str, Any], plan: Plan, outcome: Outcome) -> dict[str, Any]:
    generation = body["metadata"].get("generation")
    previous = (body.get("status") or {}).get("conditions") or []
    artifact = outcome.artifact
    manifest = artifact.manifest
    signature = artifact.signature_status
    checks = [f"{len(manifest.files)} file(s) match manifest.json (sizes and sha256)"]
    if plan.expected_digest:
        checks.append("the digest matches spec.sha256")
    if signature == "verified":
        checks.append(f"manifest.sig verified with key {plan.key_id}")
    elif plan.public_key is not None:
        checks.append("unsigned, accepted: spec.signature.required is false")
    else:
        checks.append(f"signature {signature}, not checked: spec.signature is not set")
    if plan.strategy:
        checks.append("the strategy matches spec.strategy")
    ready = f"{manifest.strategy} artifact {artifact.digest} verified"
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": "Ready",
        "message": ready,
        "uri": plan.uri,
        "digest": artifact.digest,
        "sizeBytes": outcome.size_bytes,
        "strategy": manifest.strategy,
        "manifest": manifest_summary(manifest),
        "signature": signature,
        "sourceVersion": outcome.version,
        "lastVerifiedTime": now(),
        "conditions": merge_conditions(
            previous,
            [
                condition("Ready", True, "Verified", ready, generation),
                condition("Verified", True, "Verified", "; ".join(checks), generation),
            ],
        ),
    }
    if plan.key_id is not None:
        status["publicKeyId"] = plan.key_id
    return status


def up_to_date(previous: Mapping[str, Any], generation: Any, plan: Plan) -> bool:
    """Whether the status describes a successful verification of exactly these inputs."""
    return (
        previous.get("phase") == "Ready"
        and previous.get("observedGeneration") == generation
        and previous.get("uri") == plan.uri
        and previous.get("publicKeyId") == plan.key_id
        and bool(previous.get("sourceVersion"))
    )
