"""Reconciling a `ModelArtifact`: fetch it, verify it, report what was found. Level-based.

A pass checks the object against its CRD (`load`) and the cross-field rules the schema cannot
state, reads the referenced Secrets, then fetches the artifact (in a worker thread, off kopf's
loop) and verifies it exactly as a gateway does before loading a model (see
`routeiq_operator.artifact.verification`). The status says `Ready` with what was verified, or
`Failed` with a condition reason naming the failed check (a failed artifact carries no digest, so
no gateway can be rolled out to it).

`reconcile_artifact(force=True)` always verifies (create, update, resume). Without `force`, and
in `recheck_artifact` (the timer), a `Ready` artifact whose generation, public key and source
are unchanged is left alone: the source's identity (`source_version`: ETags, generations, file
stats) is compared with `status.sourceVersion` without downloading anything. Anything else (a
changed source, a new generation, a rotated key, a failed or unfinished verification) is
fetched and verified again.

A pass that changed `status.digest` returns the gateways that use the artifact
(`references.artifact_users`) in `PassResult.follow`: the registration layer reconciles them, so a
new digest reaches them now rather than at their next drift pass. Every pass sets the artifact's
gauges from the status it leaves (`metrics.record_artifact`). Controllers never call each
other, and the registration layer holds the object's lock around every pass.

Secrets (data is base64, as the API server returns it), read with `routeiq_operator.secrets`:

- `spec.source.credentialsSecretRef`, for `s3://`: `AWS_ACCESS_KEY_ID` and
  `AWS_SECRET_ACCESS_KEY` (required), `AWS_SESSION_TOKEN` and `AWS_REGION` (optional;
  `spec.source.s3.region` wins over `AWS_REGION`); for `gs://`: `credentials.json`, a
  service-account key (JSON). Without the reference the operator's own environment is used
  (IRSA, pod identity, Application Default Credentials).
- `spec.signature.publicKeySecretRef`: the ed25519 public key (PEM or base64 of the raw key).

A Secret or key that is not there is SecretNotFound or SecretKeyNotFound; a value that is not
valid base64 is SecretKeyNotFound, one that is not text or is empty CredentialsInvalid.

PVC sources cannot be read by the operator (it does not mount claims): they stay `Pending`
with reason `PvcVerificationNotImplemented`; nothing is reported Ready that was not verified.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from routeiq_operator.artifact.api import ModelArtifact
from routeiq_operator.artifact.verification import (
    Outcome,
    Plan,
    Refused,
    check_combinations,
    condition_reason,
    fetch_and_verify,
    ready_status,
    refused_status,
    status_patch,
    up_to_date,
    verifying_status,
)
from routeiq_operator.kube import KubeClient
from routeiq_operator.metrics import record_artifact
from routeiq_operator.references import ObjectRef, PassResult, artifact_users
from routeiq_operator.secrets import SecretError, read_secret, secret_bytes, secret_text
from routeiq_operator.validation import InvalidSpec, load
from routeiq_router.artifacts.manifest import ArtifactError
from routeiq_router.artifacts.sources import RemoteAccess, source_version
from routeiq_router.artifacts.ssrf import SsrfPolicy

if TYPE_CHECKING:
    from routeiq_router.artifacts.signing import Ed25519PublicKey

__all__ = ["AWS_KEYS", "GCS_CREDENTIALS_KEY", "recheck_artifact", "reconcile_artifact"]

KIND: Final = "ModelArtifact"

# keys of the credentials Secret
AWS_KEYS: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")
GCS_CREDENTIALS_KEY: Final = "credentials.json"

Logger = logging.Logger | logging.LoggerAdapter[Any]


# -- Secrets ---------------------------------------------------------------------------------------


async def _secret(kube: KubeClient, namespace: str, name: str, field: str, keys: str) -> Mapping[str, Any]:
    try:
        return await read_secret(kube, namespace, name)
    except SecretError:
        raise Refused(
            "SecretNotFound", f"Secret {namespace}/{name} ({field}, keys {keys}) not found"
        ) from None


def _refusal(error: SecretError, namespace: str, name: str, field: str) -> Refused:
    """A value that cannot be read, in the artifact's words: one that is not text is CredentialsInvalid."""
    reason = "CredentialsInvalid" if error.reason == "SecretValueInvalid" else error.reason
    separator = ": " if error.detail.startswith("key ") else " "  # "has no key K", "key K is empty"
    return Refused(reason, f"Secret {namespace}/{name} ({field}){separator}{error.detail}")


def _missing(error: SecretError) -> bool:
    return error.reason == "SecretKeyNotFound"


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
        secret = await _secret(kube, namespace, ref.name, field, GCS_CREDENTIALS_KEY)
        try:
            raw = secret_bytes(secret, GCS_CREDENTIALS_KEY)
        except SecretError as error:
            raise _refusal(error, namespace, ref.name, field) from None
        try:
            info = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            info = None
        if not isinstance(info, dict):
            raise Refused(
                "CredentialsInvalid",
                f"Secret {namespace}/{ref.name} ({field}): key {GCS_CREDENTIALS_KEY} is not a "
                "service-account key (a JSON object)",
            )
        return RemoteAccess(gcs_credentials_info=info)
    secret = await _secret(kube, namespace, ref.name, field, "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY")
    values: dict[str, str | None] = {}
    for key in AWS_KEYS:
        try:
            values[key] = secret_text(secret, key)
        except SecretError as error:
            if key in AWS_KEYS[2:] and _missing(error):
                values[key] = None  # optional
                continue
            raise _refusal(error, namespace, ref.name, field) from None
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
    secret = await _secret(kube, namespace, ref.name, field, ref.key)
    try:
        raw = secret_bytes(secret, ref.key)
    except SecretError as error:
        raise _refusal(error, namespace, ref.name, field) from None
    try:
        from routeiq_router.artifacts.signing import KeyFormatError, key_id, load_public_key
    except ImportError:
        raise Refused(
            "DependencyMissing", "verifying signatures needs the cryptography package in the operator"
        ) from None
    try:
        key = load_public_key(raw)
    except KeyFormatError as error:
        raise Refused("PublicKeyInvalid", f"Secret {namespace}/{ref.name} key {ref.key}: {error}") from None
    return key, key_id(key)


# -- the plan ----------------------------------------------------------------------------------------


async def _plan(kube: KubeClient, artifact: ModelArtifact) -> Plan:
    check_combinations(artifact)
    source = artifact.spec.source
    if source.uri is None:  # a PVC (the schema's CEL rule admits exactly one of uri and pvc)
        pvc = source.pvc
        where = f"{pvc.claim_name}:{pvc.path}" if pvc else "?"
        raise Refused(
            "PvcVerificationNotImplemented",
            f"PVC source {where}: the operator cannot mount a claim to verify it, and verification "
            "through a Job is not implemented yet; publish the artifact to s3://, gs:// or file://",
            phase="Pending",
        )
    uri = source.uri
    key = await _public_key(kube, artifact)
    return Plan(
        uri=uri,
        access=await _access(kube, artifact, uri),
        public_key=key[0] if key else None,
        key_id=key[1] if key else None,
        signature_required=bool(artifact.spec.signature and artifact.spec.signature.required),
        expected_digest=artifact.spec.sha256,
        strategy=artifact.spec.strategy,
    )


# -- the passes ------------------------------------------------------------------------------------------


async def _write(
    kube: KubeClient, body: Mapping[str, Any], status: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    previous = body.get("status") or {}
    if status == previous:
        return status, False
    meta = body["metadata"]
    await kube.patch_status(KIND, meta["namespace"], meta["name"], status_patch(status, previous))
    return status, True


async def _pass(
    kube: KubeClient, body: Mapping[str, Any], logger: Logger, ssrf: SsrfPolicy, force: bool
) -> tuple[dict[str, Any], bool]:
    meta = body["metadata"]
    generation = meta.get("generation")
    previous: Mapping[str, Any] = body.get("status") or {}
    try:
        artifact = load(ModelArtifact, body)
    except InvalidSpec as invalid:
        logger.warning(f"invalid spec, nothing verified: {invalid.message}")
        return await _write(
            kube,
            body,
            refused_status(body, None, "InvalidSpec", invalid.message, phase="Failed", checked=False),
        )
    uri = artifact.spec.source.uri
    try:
        plan = await _plan(kube, artifact)
    except Refused as refusal:
        if refusal.phase == "Failed":
            logger.warning(f"not verified: {refusal.reason}: {refusal.message}")
        return await _write(
            kube,
            body,
            refused_status(body, uri, refusal.reason, refusal.message, phase=refusal.phase, checked=False),
        )
    version: str | None = None
    try:
        if not force and up_to_date(previous, generation, plan):
            version = await asyncio.to_thread(source_version, plan.uri, ssrf=ssrf, access=plan.access)
            if version == previous.get("sourceVersion"):
                return dict(previous), False  # verified, and the source has not changed since
            logger.info(f"{plan.uri} changed since it was verified: verifying it again")
        if previous.get("observedGeneration") != generation or previous.get("phase") not in {
            "Ready",
            "Failed",
        }:
            # the status does not describe this generation yet; a re-check keeps its last result
            verifying, _ = await _write(kube, body, verifying_status(body, plan.uri))
            body = {**body, "status": verifying}
        outcome: Outcome = await asyncio.to_thread(fetch_and_verify, plan, ssrf, version)
    except ArtifactError as error:
        reason = condition_reason(error)
        logger.warning(f"refused {plan.uri}: {reason}: {error}")
        return await _write(
            kube, body, refused_status(body, plan.uri, reason, str(error), phase="Failed", checked=True)
        )
    found = outcome.artifact.manifest.strategy
    logger.info(f"verified {plan.uri}: {found} artifact, digest {outcome.artifact.digest}")
    return await _write(kube, body, ready_status(body, plan, outcome))


async def _users_if_new_digest(
    kube: KubeClient, body: Mapping[str, Any], status: Mapping[str, Any]
) -> tuple[ObjectRef, ...]:
    """The gateways that use the artifact, when the pass changed its digest; else none."""
    if status.get("digest") == (body.get("status") or {}).get("digest"):
        return ()
    meta = body["metadata"]
    gateways = await kube.list("RouteIQGateway", meta["namespace"], "")
    experiments = await kube.list("RoutingExperiment", meta["namespace"], "")
    return tuple(artifact_users(gateways, experiments, meta["name"]))


async def reconcile_artifact(
    kube: KubeClient, body: Mapping[str, Any], logger: Logger, *, ssrf: SsrfPolicy, force: bool = False
) -> PassResult:
    """One level-based pass over a ModelArtifact: its status after the pass, and the gateways that
    use it when its digest changed.

    `force`: fetch and verify even when the status already shows this generation verified and
    the source unchanged (create, update and resume handlers pass True).
    """
    status, _ = await _pass(kube, body, logger, ssrf, force)
    record_artifact(body["metadata"]["namespace"], body["metadata"]["name"], status)
    return PassResult(status, await _users_if_new_digest(kube, body, status))


async def recheck_artifact(
    kube: KubeClient, body: Mapping[str, Any], logger: Logger, *, ssrf: SsrfPolicy
) -> PassResult | None:
    """The timer's pass: the status written (and the gateways that use the artifact when its
    digest changed), or None when nothing changed.

    A Ready artifact costs one cheap `source_version` call (a HEAD or a listing, a stat): it is
    downloaded and verified again only when that identity differs from `status.sourceVersion`,
    the generation or the public key changed, or the last verification did not succeed. Pass
    a freshly read body: the status decides what is done.
    """
    status, written = await _pass(kube, body, logger, ssrf, False)
    if not written:
        return None
    record_artifact(body["metadata"]["namespace"], body["metadata"]["name"], status)
    return PassResult(status, await _users_if_new_digest(kube, body, status))
