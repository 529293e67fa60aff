"""Reconciling a `RouteIQGateway`: level-based and idempotent.

Every pass: check the object against its CRD (an object that bypassed admission gets a False
condition and no children), learn what the cluster offers, render the desired children with
the pure builder, apply them all, delete the managed children no longer desired, and write the
status from what the Deployment reports. A crash anywhere converges on the next pass.

Router models (the routing ModelArtifact and those the gateway's experiments want): a Ready
artifact's digest is rendered unless it is in `status.rejectedModels`; else the digest the pods
last rolled out (`status.models`) stays. The pod template records what it carries
(`routeiq.io/models`): once the Deployment has rolled out, that becomes `status.models`; when the
rollout exceeds its progress deadline with new digests, they go to `status.rejectedModels` and
the stable set is rendered and applied at once (the rollback), reported as `Degraded` with reason
`ModelRolloutFailed` for as long as the artifact still holds the rejected digest.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from routeiq_operator.conditions import condition as _condition
from routeiq_operator.conditions import merge_conditions as _merge_conditions
from routeiq_operator.experiment.controller import models_wanted
from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.builder import (
    GATEWAY_PORT,
    ClusterFacts,
    DesiredState,
    Problem,
    ResolvedModel,
    desired_children,
    needs_apply,
    template_models,
)
from routeiq_operator.kube import KubeClient
from routeiq_operator.naming import child_name, managed_selector
from routeiq_operator.schema import custom_resource_definition
from routeiq_operator.validation import apply_defaults, openapi_schema, validate_custom_resource

__all__ = [
    "MANAGED_KINDS",
    "ModelPlan",
    "conditions_from",
    "forget",
    "reconcile_gateway",
    "refresh_status",
]

# every kind the builder can emit, so a child that stops being desired is found and deleted
MANAGED_KINDS = (
    "ServiceAccount",
    "ConfigMap",
    "ExternalSecret",
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ServiceMonitor",
)
_CRD = custom_resource_definition(RouteIQGateway)
_SCHEMA = openapi_schema(_CRD)
EXTERNAL_SECRETS_CRD = "externalsecrets.external-secrets.io"
# gateway uid -> the (kind, name) set applied last; a cache this process rebuilds after a restart
_last_desired: dict[str, frozenset[tuple[str, str]]] = {}
SERVICE_MONITORS_CRD = "servicemonitors.monitoring.coreos.com"
DIGEST = re.compile(r"^[a-f0-9]{64}$")
_log = logging.getLogger(__name__)
# gateway uid -> one pass at a time (a timer, a change and a Deployment event may overlap; a pass
# that rendered a digest another one just rejected would roll it out again)
_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


@dataclass(frozen=True, slots=True)
class _Rollout:
    ready: int
    updated: int
    current: bool  # the Deployment controller has seen the current template
    stalled: bool  # Progressing: ProgressDeadlineExceeded
    rolled_out: bool


def _rollout(deployment: Mapping[str, Any] | None, wanted_replicas: int) -> _Rollout:
    status = (deployment or {}).get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    observed = status.get("observedGeneration")
    current = deployment is not None and observed == (deployment.get("metadata") or {}).get("generation")
    deployment_conditions = {c.get("type"): c for c in status.get("conditions") or []}
    stalled = deployment_conditions.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded"
    rolled_out = current and updated >= wanted_replicas and replicas == updated and ready >= wanted_replicas
    return _Rollout(ready, updated, current, stalled, rolled_out)


def conditions_from(
    deployment: Mapping[str, Any] | None,
    problems: list[Problem],
    missing_secrets: list[str],
    generation: int | None,
    wanted_replicas: int,
    model_failures: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Ready / Progressing / Degraded (+ the checks behind them) from what the cluster reports.

    `model_failures`: router model rollbacks in force (Degraded, reason ModelRolloutFailed)."""
    rollout = _rollout(deployment, wanted_replicas)
    ready, updated, stalled, rolled_out = rollout.ready, rollout.updated, rollout.stalled, rollout.rolled_out
    conditions = [
        _condition(
            "ResolvedRefs",
            not missing_secrets,
            "SecretsFound" if not missing_secrets else "SecretNotFound",
            "every referenced Secret exists"
            if not missing_secrets
            else f"referenced Secret(s) not found: {', '.join(missing_secrets)}",
            generation,
        )
    ]
    conditions += [_condition(p.condition, False, p.reason, p.message, generation) for p in problems]
    degraded_reasons = (["ModelRolloutFailed"] if model_failures else []) + [p.reason for p in problems]
    degraded_reasons += ["SecretNotFound"] if missing_secrets else []
    if stalled:
        degraded_reasons.append("ProgressDeadlineExceeded")
    conditions.append(
        _condition(
            "Degraded",
            bool(degraded_reasons),
            degraded_reasons[0] if degraded_reasons else "AsExpected",
            "; ".join([*model_failures, *(c["message"] for c in conditions if c["status"] == "False")])
            or ("the rollout exceeded its progress deadline" if stalled else "nothing is wrong"),
            generation,
        )
    )
    conditions.append(
        _condition(
            "Progressing",
            not rolled_out and not stalled,
            "RolloutComplete" if rolled_out else ("RolloutStalled" if stalled else "RollingOut"),
            f"{ready}/{wanted_replicas} replicas ready, {updated} updated",
            generation,
        )
    )
    conditions.append(
        _condition(
            "Ready",
            rolled_out,
            "GatewayReady" if rolled_out else ("RolloutStalled" if stalled else "WaitingForReplicas"),
            f"{ready}/{wanted_replicas} replicas ready",
            generation,
        )
    )
    return conditions


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """The router models of one pass: the gateway's model status it was made from, and the
    rollbacks in force."""

    stable: dict[str, dict[str, str]] = field(default_factory=dict)  # status.models
    rejected: dict[str, str] = field(default_factory=dict)  # status.rejectedModels
    failures: list[str] = field(default_factory=list)  # messages for Degraded=ModelRolloutFailed


def _secret_text(secret: Mapping[str, Any] | None, key: str) -> str | None:
    if secret is None:
        return None
    raw = (secret.get("data") or {}).get(key)
    if raw is not None:
        try:
            return base64.b64decode(raw).decode().strip() or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    plain = (secret.get("stringData") or {}).get(key)
    return None if plain is None else str(plain).strip() or None


async def _resolve_model(
    kube: KubeClient,
    namespace: str,
    name: str,
    artifact: Mapping[str, Any] | None,
    digest: str,
    recorded: str | None,
) -> ResolvedModel | str:
    """The model at `digest`, or why it cannot be rendered. Its location: `recorded` (the uri in
    status.models, for the stable digest), else the artifact's verified one; the rest (credentials,
    endpoint, public key) from the artifact's spec."""
    spec = (artifact or {}).get("spec") or {}
    source = spec.get("source") or {}
    pvc = source.get("pvc")
    uri: str | None = None
    claim: tuple[str, str] | None = None
    if recorded is not None and recorded.startswith("pvc://"):
        claim_name, _, path = recorded.removeprefix("pvc://").partition("/")
        claim = (claim_name, path)
    elif recorded is not None:
        uri = recorded
    elif pvc:
        claim = (str(pvc.get("claimName")), str(pvc.get("path")))
    else:
        uri = ((artifact or {}).get("status") or {}).get("uri") or source.get("uri")
    if uri is None and claim is None:
        return "without a source"
    public_key = None
    signature = spec.get("signature") or {}
    verified = ((artifact or {}).get("status") or {}).get("signature") == "verified"
    # a key makes the pods refuse an unsigned artifact: pass it unless signatures are optional and
    # this artifact carries none (signature.required: false accepts it unsigned)
    if signature.get("publicKeySecretRef") and (signature.get("required", True) or verified):
        ref = signature["publicKeySecretRef"]
        public_key = _secret_text(await kube.get("Secret", namespace, ref["name"]), ref["key"])
        if public_key is None:
            return f"unusable: its public key (Secret {ref['name']}, key {ref['key']}) cannot be read"
    s3 = source.get("s3") or {}
    return ResolvedModel(
        name=name,
        digest=digest,
        uri=uri,
        pvc=claim,
        public_key=public_key,
        credentials_secret=(source.get("credentialsSecretRef") or {}).get("name"),
        s3_endpoint=s3.get("endpointUrl"),
        s3_region=s3.get("region"),
    )


async def _gateway_status(
    kube: KubeClient, gateway: RouteIQGateway, status: Mapping[str, Any]
) -> Mapping[str, Any]:
    """The gateway's status as stored now (a handler's body may predate the last status write)."""
    fresh = await kube.get("RouteIQGateway", gateway.metadata.namespace, gateway.metadata.name)
    return status if fresh is None else fresh.get("status") or {}


async def _router_models(
    kube: KubeClient,
    gateway: RouteIQGateway,
    status: Mapping[str, Any],
    rejected_now: Mapping[str, str] | None,
) -> tuple[dict[str, ResolvedModel], frozenset[str], dict[str, str], ModelPlan]:
    """(models to render, the variants' model names, why others are not rendered, the plan)."""
    namespace, name = gateway.metadata.namespace, gateway.metadata.name
    ref = gateway.spec.routing.model_artifact_ref
    variants = frozenset(models_wanted(await kube.list("RoutingExperiment", namespace, ""), name))
    wanted = variants | ({ref.name} if ref is not None else set())
    if not wanted and not status.get("models") and not status.get("rejectedModels"):
        return {}, variants, {}, ModelPlan()
    status = await _gateway_status(kube, gateway, status)
    stable: dict[str, dict[str, str]] = {
        key: {k: str(v) for k, v in entry.items()} for key, entry in (status.get("models") or {}).items()
    }
    rejected = dict(rejected_now if rejected_now is not None else status.get("rejectedModels") or {})
    models: dict[str, ResolvedModel] = {}
    unresolved: dict[str, str] = {}
    failures: list[str] = []
    for artifact_name in sorted(wanted):
        artifact = await kube.get("ModelArtifact", namespace, artifact_name)
        artifact_status = (artifact or {}).get("status") or {}
        phase = artifact_status.get("phase")
        digest = str(artifact_status.get("digest") or "")
        # Ready for its current spec: a status of an older generation may name an older source
        current = artifact is not None and artifact_status.get("observedGeneration") == (
            artifact["metadata"].get("generation")
        )
        ready = current and phase == "Ready" and DIGEST.match(digest) is not None
        previous = stable.get(artifact_name)
        resolved: ResolvedModel | str
        if ready and rejected.get(artifact_name) == digest:
            back = f"rolled back to {previous['digest'][:12]}" if previous else "it is not loaded"
            failures.append(
                f"ModelArtifact {artifact_name}: digest {digest[:12]} failed to roll out (the Deployment "
                f"exceeded its progress deadline); {back}"
            )
            ready = False
        if ready:
            resolved = await _resolve_model(kube, namespace, artifact_name, artifact, digest, None)
        elif previous is not None:  # a failed, tampered or deleted artifact never changes the pods
            resolved = await _resolve_model(
                kube, namespace, artifact_name, artifact, previous["digest"], previous["uri"]
            )
        elif artifact is None:
            resolved = "not found"
        elif not current:
            resolved = "not verified yet for its current spec"
        elif phase == "Ready" and DIGEST.match(digest) is not None:
            resolved = f"Ready, but its digest {digest[:12]} failed to roll out and no earlier digest did"
        else:
            resolved = f"{phase or 'not verified yet'}" + (
                f" ({artifact_status['message']})" if artifact_status.get("message") else ""
            )
        if isinstance(resolved, str):
            unresolved[artifact_name] = resolved
        else:
            models[artifact_name] = resolved
    return models, variants, unresolved, ModelPlan(stable=stable, rejected=rejected, failures=failures)


async def _cluster_facts(
    kube: KubeClient,
    gateway: RouteIQGateway,
    status: Mapping[str, Any] | None = None,
    rejected: Mapping[str, str] | None = None,
) -> tuple[ClusterFacts, list[str], ModelPlan]:
    """What the builder needs from the cluster, the referenced Secrets that are missing, and the
    router model plan (`status`: the gateway's status as known; `rejected`: overrides its
    rejectedModels)."""
    models, variants, unresolved, plan = await _router_models(kube, gateway, status or {}, rejected)
    secrets = gateway.spec.secrets
    names = {
        ref.name for ref in (secrets.master_key, secrets.redis_url, secrets.database_url) if ref is not None
    }
    names |= {provider.secret_key_ref.name for provider in secrets.provider_keys or []}
    names |= {model.credentials_secret for model in models.values() if model.credentials_secret}
    versions: dict[str, str] = {}
    missing: list[str] = []
    for name in sorted(names):
        secret = await kube.get("Secret", gateway.metadata.namespace, name)
        if secret is None:
            missing.append(name)
        else:
            versions[name] = str(secret["metadata"].get("resourceVersion", ""))
    if secrets.external_secret is not None:
        synced = await kube.get(
            "Secret", gateway.metadata.namespace, child_name(gateway.metadata.name, "secrets")
        )
        versions[child_name(gateway.metadata.name, "secrets")] = (
            str(synced["metadata"].get("resourceVersion", "")) if synced else ""
        )
    facts = ClusterFacts(
        external_secrets=await kube.crd_exists(EXTERNAL_SECRETS_CRD),
        service_monitors=await kube.crd_exists(SERVICE_MONITORS_CRD),
        secret_versions=versions,
        models=models,
        variant_models=variants,
        unresolved_models=unresolved,
    )
    return facts, missing, plan


async def _apply(kube: KubeClient, namespace: str, desired: DesiredState) -> None:
    for child in desired.children:
        live = await kube.get(child["kind"], namespace, child["metadata"]["name"])
        if needs_apply(child, live):
            await kube.apply(child)


async def _delete_undesired(
    kube: KubeClient,
    body: Mapping[str, Any],
    desired: DesiredState,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    meta = body["metadata"]
    wanted = {(child["kind"], child["metadata"]["name"]) for child in desired.children}
    for kind in MANAGED_KINDS:
        for item in await kube.list(kind, meta["namespace"], managed_selector(meta["name"])):
            item_meta = item["metadata"]
            owned = any(ref.get("uid") == meta.get("uid") for ref in item_meta.get("ownerReferences") or [])
            if owned and (kind, item_meta["name"]) not in wanted:
                await kube.delete(kind, meta["namespace"], item_meta["name"])
                logger.info(f"deleted {kind}/{item_meta['name']}: no longer desired")


def _parse(body: Mapping[str, Any]) -> RouteIQGateway:
    document = {key: value for key, value in body.items() if key != "status"}
    return RouteIQGateway.model_validate(apply_defaults(document, _SCHEMA))


async def refresh_status(
    kube: KubeClient,
    body: Mapping[str, Any],
    desired: DesiredState | None,
    missing_secrets: list[str],
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    *,
    models: ModelPlan | None = None,
) -> dict[str, Any]:
    """Write status from the Deployment; returns what was written.

    Router models: a rolled-out Deployment's models become `status.models`; a rollout past its
    progress deadline with new digests rejects them and applies the stable set at once.
    Without `desired` and `models` they are worked out here (a ValueError when the spec is invalid)."""
    async with _locks[str(body["metadata"].get("uid"))]:
        return await _refresh_status(kube, body, desired, missing_secrets, logger, models)


async def _refresh_status(
    kube: KubeClient,
    body: Mapping[str, Any],
    desired: DesiredState | None,
    missing_secrets: list[str],
    logger: logging.Logger | logging.LoggerAdapter[Any] | None,
    models: ModelPlan | None,
) -> dict[str, Any]:
    meta = body["metadata"]
    namespace = meta["namespace"]
    generation = meta.get("generation")
    log = logger if logger is not None else _log
    previous = ((body.get("status") or {}).get("conditions")) or []
    if desired is None or models is None:
        gateway = _parse(body)
        facts, missing_secrets, models = await _cluster_facts(kube, gateway, body.get("status"))
        desired = desired_children(gateway, facts)
    deployment = await kube.get("Deployment", namespace, child_name(meta["name"]))
    scaling = desired.resolved.autoscaling
    wanted = scaling.min_replicas if scaling else desired.resolved.replicas
    rollout = _rollout(deployment, wanted)
    loaded = template_models(deployment)
    stable = loaded if rollout.rolled_out else models.stable
    failed = {
        artifact: entry["digest"]
        for artifact, entry in loaded.items()
        if (models.stable.get(artifact) or {}).get("digest") != entry["digest"]
    }
    if rollout.current and rollout.stalled and not rollout.rolled_out and failed:
        # the new digests did not roll out: never again, and the pods go back to the stable set now
        newly = {
            artifact: digest for artifact, digest in failed.items() if models.rejected.get(artifact) != digest
        }
        if newly:
            await kube.patch_status("RouteIQGateway", namespace, meta["name"], {"rejectedModels": newly})
        rejected = {**models.rejected, **failed}
        gateway = _parse(body)
        facts, missing_secrets, models = await _cluster_facts(kube, gateway, body.get("status"), rejected)
        desired = desired_children(gateway, facts)
        await _apply(kube, namespace, desired)
        for message in models.failures:
            log.warning(message)
        deployment = await kube.get("Deployment", namespace, child_name(meta["name"]))
    status = {
        "observedGeneration": generation,
        "tier": (body.get("spec") or {}).get("tier", "standard"),
        "replicas": int(((deployment or {}).get("status") or {}).get("replicas") or 0),
        "readyReplicas": int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0),
        "endpoint": f"http://{child_name(meta['name'])}.{meta['namespace']}.svc:"
        f"{(body.get('spec') or {}).get('service', {}).get('port', GATEWAY_PORT)}",
        "conditions": _merge_conditions(
            previous,
            conditions_from(
                deployment, desired.problems, missing_secrets, generation, wanted, models.failures
            ),
        ),
    }
    if stable:
        status["models"] = stable
    if models.rejected:
        status["rejectedModels"] = models.rejected
    if status != body.get("status"):  # a steady gateway costs no status write
        # a merge patch: a model no longer loaded is removed with null
        dropped = {artifact: None for artifact in models.stable if artifact not in stable}
        patch = (
            {**status, "models": {**dropped, **stable} if stable else None} if dropped or stable else status
        )
        await kube.patch_status("RouteIQGateway", namespace, meta["name"], patch)
    return status


def forget(uid: str) -> None:
    """Drop what is remembered of a deleted gateway."""
    _last_desired.pop(uid, None)
    _locks.pop(uid, None)


async def reconcile_gateway(
    kube: KubeClient, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
) -> dict[str, Any]:
    """One level-based pass over a gateway; returns the status written."""
    async with _locks[str(body["metadata"].get("uid"))]:
        return await _reconcile_gateway(kube, body, logger)


async def _reconcile_gateway(
    kube: KubeClient, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
) -> dict[str, Any]:
    meta = body["metadata"]
    document = {key: value for key, value in body.items() if key != "status"}
    violations = validate_custom_resource(document, _CRD)
    if violations:
        message = "; ".join(str(violation) for violation in violations)
        generation = meta.get("generation")
        status = {
            "observedGeneration": generation,
            "conditions": _merge_conditions(
                ((body.get("status") or {}).get("conditions")) or [],
                [
                    _condition("Ready", False, "InvalidSpec", message, generation),
                    _condition("Degraded", True, "InvalidSpec", message, generation),
                    _condition(
                        "Progressing",
                        False,
                        "InvalidSpec",
                        "nothing is applied until the spec is valid",
                        generation,
                    ),
                ],
            ),
        }
        await kube.patch_status("RouteIQGateway", meta["namespace"], meta["name"], status)
        logger.warning(f"invalid spec, nothing applied: {message}")
        return status
    gateway = RouteIQGateway.model_validate(apply_defaults(document, _SCHEMA))
    facts, missing_secrets, models = await _cluster_facts(kube, gateway, body.get("status"))
    desired = desired_children(gateway, facts)
    await _apply(kube, meta["namespace"], desired)
    wanted = frozenset((child["kind"], child["metadata"]["name"]) for child in desired.children)
    uid = str(meta.get("uid"))
    if _last_desired.get(uid) != wanted:
        # scan for children to delete only when the desired set changed (or after a restart)
        await _delete_undesired(kube, body, desired, logger)
        _last_desired[uid] = wanted
    return await _refresh_status(kube, body, desired, missing_secrets, logger, models)
