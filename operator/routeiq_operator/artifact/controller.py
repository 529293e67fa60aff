"""Reconciling a `ModelArtifact`: fetch it, verify it, report what was found. Level-based.

A pass checks the object against its CRD and the cross-field rules the schema cannot state,
reads the referenced Secrets, then fetches the artifact (in a worker thread, off kopf's loop)
and verifies it exactly as a gateway does before loading a model (`routeiq_router.artifacts`):
the digest pin (`spec.sha256`), the ed25519 signature (`spec.signature`), every file's size
and sha256 against `manifest.json`, no unlisted file, the size limits, and the SSRF policy for
custom endpoints; then the manifest's strategy against `spec.strategy`. The status says
`Ready` with what was verified, or `Failed` with a condition reason naming the failed check
(a failed artifact carries no digest, so no gateway can be rolled out to it).

`reconcile_artifact(force=True)` always verifies (create, update, resume). Without `force`, and
in `recheck_artifact` (the timer), a `Ready` artifact whose generation, public key and source
are unchanged is left alone: the source's identity (`source_version`: ETags, generations, file
stats) is compared with `status.sourceVersion` without downloading anything. Anything else (a
changed source, a new generation, a rotated key, a failed or unfinished verification) is
fetched and verified again.

Secrets (data is base64, as the API server returns it):

- `spec.source.credentialsSecretRef`, for `s3://`: `AWS_ACCESS_KEY_ID` and
  `AWS_SECRET_ACCESS_KEY` (required), `AWS_SESSION_TOKEN` and `AWS_REGION` (optional;
  `spec.source.s3.region` wins over `AWS_REGION`); for `gs://`: `credentials.json`, a
  service-account key (JSON). Without the reference the operator's own environment is used
  (IRSA, pod identity, Application Default Credentials).
- `spec.signature.publicKeySecretRef`: the ed25519 public key (PEM or base64 of the raw key).

Signatures: with `spec.signature.required: true` a valid `manifest.sig` made with the key is
mandatory. With `required: false` an unsigned artifact is accepted, but a `manifest.sig` that
is there must verify with the key (a bad or foreign signature is never accepted). Without
`spec.signature` nothing is checked and `status.signature` says `present` or `absent`.

PVC sources cannot be read by the operator (it does not mount claims): they stay `Pending`
with reason `PvcVerificationNotImplemented`; nothing is reported Ready that was not verified.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from routeiq_operator.artifact.api import ManifestSummary, ModelArtifact, ModelArtifactStatus
from routeiq_operator.conditions import condition, merge_conditions, now
from routeiq_operator.kube import KubeClient
from routeiq_operator.schema import custom_resource_definition
from routeiq_operator.validation import apply_defaults, openapi_schema, validate_custom_resource
from routeiq_router.artifacts.manifest import SIGNATURE, ArtifactError, Manifest
from routeiq_router.artifacts.sources import RemoteAccess, fetch_artifact, source_version
from routeiq_router.artifacts.ssrf import SsrfPolicy
from routeiq_router.artifacts.verify import VerifiedArtifact, read_artifact

if TYPE_CHECKING:
    from routeiq_router.artifacts.signing import Ed25519PublicKey

__all__ = [
    "AWS_KEYS",
    "GCS_CREDENTIALS_KEY",
    "REASONS",
    "SSRF_VARIABLES",
    "condition_reason",
    "manifest_summary",
    "recheck_artifact",
    "reconcile_artifact",
    "ssrf_policy_from_env",
]

KIND: Final = "ModelArtifact"
_CRD = custom_resource_definition(ModelArtifact)
_SCHEMA = openapi_schema(_CRD)

# keys of the credentials Secret
AWS_KEYS: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")
GCS_CREDENTIALS_KEY: Final = "credentials.json"

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


class _Refused(Exception):
    """The pass stops here: the status says why (phase Failed, or Pending)."""

    def __init__(self, reason: str, message: str, phase: str = "Failed") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.phase = phase


@dataclass(frozen=True)
class _Plan:
    """What to fetch and how to verify it, with the Secrets resolved."""

    uri: str
    access: RemoteAccess | None
    public_key: Ed25519PublicKey | None
    key_id: str | None
    signature_required: bool
    expected_digest: str | None
    strategy: str | None


@dataclass(frozen=True)
class _Outcome:
    artifact: VerifiedArtifact
    size_bytes: int
    version: str


# -- Secrets ---------------------------------------------------------------------------------------


async def _secret(kube: KubeClient, namespace: str, name: str, field: str, keys: str) -> dict[str, str]:
    secret = await kube.get("Secret", namespace, name)
    if secret is None:
        raise _Refused("SecretNotFound", f"Secret {namespace}/{name} ({field}, keys {keys}) not found")
    data: dict[str, str] = secret.get("data") or {}
    return data


def _value(
    data: Mapping[str, str], namespace: str, name: str, field: str, key: str, *, required: bool = True
) -> bytes | None:
    encoded = data.get(key)
    if encoded is None:
        if not required:
            return None
        raise _Refused("SecretKeyNotFound", f"Secret {namespace}/{name} ({field}) has no key {key}")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(
            "SecretKeyNotFound", f"Secret {namespace}/{name} ({field}): key {key} is not valid base64"
        ) from None


def _text(value: bytes, namespace: str, name: str, field: str, key: str) -> str:
    try:
        text = value.decode().strip()
    except UnicodeDecodeError:
        raise _Refused(
            "CredentialsInvalid", f"Secret {namespace}/{name} ({field}): key {key} is not UTF-8 text"
        ) from None
    if not text:
        raise _Refused("CredentialsInvalid", f"Secret {namespace}/{name} ({field}): key {key} is empty")
    return text


async def _access(kube: KubeClient, artifact: ModelArtifact, uri: str) -> RemoteAccess | None:
    source = artifact.spec.source
    namespace = artifact.metadata.namespace
    endpoint = source.s3.endpoint_url if source.s3 else None
    region = source.s3.region if source.s3 else None
    ref = source.credentials_secret_ref
    if ref is None:
        return RemoteAccess(endpoint_url=endpoint, region=region) if endpoint or region else None
    field = "spec.source.credentialsSecretRef"
    if uri.startswith("gs://"):
        data = await _secret(kube, namespace, ref.name, field, GCS_CREDENTIALS_KEY)
        raw = _value(data, namespace, ref.name, field, GCS_CREDENTIALS_KEY)
        try:
            info = json.loads(raw or b"")
        except (ValueError, UnicodeDecodeError):
            info = None
        if not isinstance(info, dict):
            raise _Refused(
                "CredentialsInvalid",
                f"Secret {namespace}/{ref.name} ({field}): key {GCS_CREDENTIALS_KEY} is not a "
                "service-account key (a JSON object)",
            )
        return RemoteAccess(gcs_credentials_info=info)
    data = await _secret(kube, namespace, ref.name, field, "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY")
    values: dict[str, str | None] = {}
    for key in AWS_KEYS:
        raw = _value(data, namespace, ref.name, field, key, required=key in AWS_KEYS[:2])
        values[key] = None if raw is None else _text(raw, namespace, ref.name, field, key)
    return RemoteAccess(
        endpoint_url=endpoint,
        region=region or values["AWS_REGION"],
        aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=values["AWS_SESSION_TOKEN"],
    )


async def _public_key(kube: KubeClient, artifact: ModelArtifact) -> tuple[Ed25519PublicKey, str] | None:
    signature = artifact.spec.signature
    if signature is None:
        return None
    ref = signature.public_key_secret_ref
    namespace = artifact.metadata.namespace
    field = "spec.signature.publicKeySecretRef"
    data = await _secret(kube, namespace, ref.name, field, ref.key)
    raw = _value(data, namespace, ref.name, field, ref.key) or b""
    try:
        from routeiq_router.artifacts.signing import KeyFormatError, key_id, load_public_key
    except ImportError:
        raise _Refused(
            "DependencyMissing", "verifying signatures needs the cryptography package in the operator"
        ) from None
    try:
        key = load_public_key(raw)
    except KeyFormatError as error:
        raise _Refused("PublicKeyInvalid", f"Secret {namespace}/{ref.name} key {ref.key}: {error}") from None
    return key, key_id(key)


# -- the spec ----------------------------------------------------------------------------------------


def _check_combinations(artifact: ModelArtifact) -> None:
    """Cross-field rules the schema does not state: an option that would be ignored is an error."""
    source = artifact.spec.source
    scheme = (source.uri or "").split("://", 1)[0] if source.uri else "pvc"
    if source.s3 is not None and scheme != "s3":
        raise _Refused("InvalidSpec", f"spec.source.s3: applies to s3:// URIs only, the source is {scheme}")
    if source.credentials_secret_ref is not None and scheme not in {"s3", "gs"}:
        raise _Refused(
            "InvalidSpec",
            f"spec.source.credentialsSecretRef: applies to s3:// and gs:// URIs only, the source is {scheme}",
        )


async def _plan(kube: KubeClient, artifact: ModelArtifact) -> _Plan:
    _check_combinations(artifact)
    source = artifact.spec.source
    if source.uri is None:  # a PVC (the schema's CEL rule admits exactly one of uri and pvc)
        pvc = source.pvc
        where = f"{pvc.claim_name}:{pvc.path}" if pvc else "?"
        raise _Refused(
            "PvcVerificationNotImplemented",
            f"PVC source {where}: the operator cannot mount a claim to verify it, and verification "
            "through a Job is not implemented yet; publish the artifact to s3://, gs:// or file://",
            phase="Pending",
        )
    uri = source.uri
    key = await _public_key(kube, artifact)
    return _Plan(
        uri=uri,
        access=await _access(kube, artifact, uri),
        public_key=key[0] if key else None,
        key_id=key[1] if key else None,
        signature_required=bool(artifact.spec.signature and artifact.spec.signature.required),
        expected_digest=artifact.spec.sha256,
        strategy=artifact.spec.strategy,
    )


# -- fetching and verifying (in a worker thread) -------------------------------------------------------


def _fetch_and_verify(plan: _Plan, ssrf: SsrfPolicy, version: str | None) -> _Outcome:
    # the version first: a source replaced during the download shows up as a change next time
    if version is None:
        version = source_version(plan.uri, ssrf=ssrf, access=plan.access)
    files = fetch_artifact(plan.uri, ssrf=ssrf, access=plan.access)
    # required: a missing signature is refused; optional: a signature that is there must verify
    key = plan.public_key if plan.signature_required or SIGNATURE in files else None
    artifact = read_artifact(files, expected_digest=plan.expected_digest, public_key=key)
    return _Outcome(artifact=artifact, size_bytes=sum(len(data) for data in files.values()), version=version)


# -- status ----------------------------------------------------------------------------------------------


def _status_patch(status: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that leaves exactly `status`: every field it lacks is removed."""
    patch: dict[str, Any] = dict.fromkeys(_STATUS_FIELDS) | dict(status)
    manifest = status.get("manifest")
    if isinstance(manifest, Mapping):
        old_metrics = (previous.get("manifest") or {}).get("metrics") or {}
        patch["manifest"] = dict.fromkeys(_MANIFEST_FIELDS) | dict(manifest)
        if "metrics" in manifest:
            patch["manifest"]["metrics"] = dict.fromkeys(old_metrics) | dict(manifest["metrics"])
    return patch


async def _write(
    kube: KubeClient, body: Mapping[str, Any], status: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    previous = body.get("status") or {}
    if status == previous:
        return status, False
    meta = body["metadata"]
    await kube.patch_status(KIND, meta["namespace"], meta["name"], _status_patch(status, previous))
    return status, True


def _refused_status(
    body: Mapping[str, Any], uri: str | None, reason: str, message: str, *, phase: str, checked: bool
) -> dict[str, Any]:
    generation = body["metadata"].get("generation")
    previous = (body.get("status") or {}).get("conditions") or []
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase,
        "message": message,
        "conditions": merge_conditions(
            previous,
            [
                condition("Ready", False, reason, message, generation),
                condition("Verified", False, reason, message, generation),
            ],
        ),
    }
    if uri is not None:
        status["uri"] = uri
    if checked:
        status["lastVerifiedTime"] = now()
    return status


def _verifying_status(body: Mapping[str, Any], uri: str) -> dict[str, Any]:
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


def _ready_status(body: Mapping[str, Any], plan: _Plan, outcome: _Outcome) -> dict[str, Any]:
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


# -- the passes ------------------------------------------------------------------------------------------


def _up_to_date(previous: Mapping[str, Any], generation: Any, plan: _Plan) -> bool:
    """Whether the status describes a successful verification of exactly these inputs."""
    return (
        previous.get("phase") == "Ready"
        and previous.get("observedGeneration") == generation
        and previous.get("uri") == plan.uri
        and previous.get("publicKeyId") == plan.key_id
        and bool(previous.get("sourceVersion"))
    )


async def _pass(
    kube: KubeClient,
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
    ssrf: SsrfPolicy,
    force: bool,
) -> tuple[dict[str, Any], bool]:
    meta = body["metadata"]
    generation = meta.get("generation")
    previous: Mapping[str, Any] = body.get("status") or {}
    document = {key: value for key, value in body.items() if key != "status"}
    violations = validate_custom_resource(document, _CRD)
    if violations:
        message = "; ".join(str(violation) for violation in violations)
        logger.warning(f"invalid spec, nothing verified: {message}")
        return await _write(
            kube, body, _refused_status(body, None, "InvalidSpec", message, phase="Failed", checked=False)
        )
    artifact = ModelArtifact.model_validate(apply_defaults(document, _SCHEMA))
    uri = artifact.spec.source.uri
    try:
        plan = await _plan(kube, artifact)
    except _Refused as refusal:
        if refusal.phase == "Failed":
            logger.warning(f"not verified: {refusal.reason}: {refusal.message}")
        return await _write(
            kube,
            body,
            _refused_status(body, uri, refusal.reason, refusal.message, phase=refusal.phase, checked=False),
        )
    version: str | None = None
    try:
        if not force and _up_to_date(previous, generation, plan):
            version = await asyncio.to_thread(source_version, plan.uri, ssrf=ssrf, access=plan.access)
            if version == previous.get("sourceVersion"):
                return dict(previous), False  # verified, and the source has not changed since
            logger.info(f"{plan.uri} changed since it was verified: verifying it again")
        if previous.get("observedGeneration") != generation or previous.get("phase") not in {
            "Ready",
            "Failed",
        }:
            # the status does not describe this generation yet; a re-check keeps its last result
            verifying, _ = await _write(kube, body, _verifying_status(body, plan.uri))
            body = {**body, "status": verifying}
        outcome = await asyncio.to_thread(_fetch_and_verify, plan, ssrf, version)
        found = outcome.artifact.manifest.strategy
        if plan.strategy is not None and found != plan.strategy:
            raise ArtifactError(
                f"the manifest's strategy is {found!r}, spec.strategy is {plan.strategy!r}",
                reason="strategy_mismatch",
            )
    except ArtifactError as error:
        reason = condition_reason(error)
        logger.warning(f"refused {plan.uri}: {reason}: {error}")
        return await _write(
            kube, body, _refused_status(body, plan.uri, reason, str(error), phase="Failed", checked=True)
        )
    logger.info(f"verified {plan.uri}: {found} artifact, digest {outcome.artifact.digest}")
    return await _write(kube, body, _ready_status(body, plan, outcome))


async def reconcile_artifact(
    kube: KubeClient,
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
    *,
    ssrf: SsrfPolicy,
    force: bool = False,
) -> dict[str, Any]:
    """One level-based pass over a ModelArtifact; returns its status after the pass.

    `force`: fetch and verify even when the status already shows this generation verified and
    the source unchanged (create, update and resume handlers pass True).
    """
    status, _ = await _pass(kube, body, logger, ssrf, force)
    return status


async def recheck_artifact(
    kube: KubeClient,
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[Any],
    *,
    ssrf: SsrfPolicy,
) -> dict[str, Any] | None:
    """The timer's pass: the status written, or None when nothing changed.

    A Ready artifact costs one cheap `source_version` call (a HEAD or a listing, a stat): it is
    downloaded and verified again only when that identity differs from `status.sourceVersion`,
    the generation or the public key changed, or the last verification did not succeed. Pass
    a freshly read body: the status decides what is done.
    """
    status, written = await _pass(kube, body, logger, ssrf, False)
    return status if written else None
