"""Reconciling a `RouteIQGateway`: one linear, level-based pass.

1. Load: the object is checked against its CRD (one that bypassed admission gets a False
   condition, and nothing is applied), and its image against the operator's image policy
   (`gateway.images`; outside it: Ready=False, reason ImageNotAllowed, and nothing is applied).
2. Observe: the Deployment as it stands, which optional CRDs the cluster has, the referenced
   Secrets, the router models (the routing ModelArtifact and those the gateway's experiments want).
3. Decide the router-model rollout (`gateway.rollout.decide`, pure): digests whose rollout exceeded
   its progress deadline are rejected, so the stable set is rendered instead.
4. Render once (`gateway.children.desired_children`, pure) and apply once: only the children that
   differ from the cluster, then delete the managed children no longer desired.
5. Status from what was observed and applied (`gateway.status`, pure); no write when unchanged.

A crash anywhere converges on the next pass. The rejected digests are written to status before the
rollback is applied, so a crash in between cannot roll a rejected digest out again.

Router models: a Ready artifact's digest is rendered unless it is in `status.rejectedModels`; else
the digest the pods last rolled out (`status.models`) stays, and the artifact is reported as
`Degraded` with reason `ModelRolloutFailed` for as long as it still holds the rejected digest.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from routeiq_operator.conditions import invalid_spec_conditions
from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.children import ClusterFacts, DesiredState, desired_children, needs_apply
from routeiq_operator.gateway.images import GatewayImages, ImagePolicy, image_refusal
from routeiq_operator.gateway.models import ResolvedModel
from routeiq_operator.gateway.rollout import decide, stable_models
from routeiq_operator.gateway.status import ModelPlan, gateway_status, refused_conditions, status_patch
from routeiq_operator.gateway.tiers import resolve
from routeiq_operator.kube import KubeClient
from routeiq_operator.metrics import child_applied
from routeiq_operator.naming import child_name, managed_selector
from routeiq_operator.objects import OBJECTS
from routeiq_operator.references import models_wanted
from routeiq_operator.secrets import SecretError, secret_text
from routeiq_operator.validation import InvalidSpec, load

__all__ = ["MANAGED_KINDS", "delete_children", "reconcile_gateway"]

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
    "PrometheusRule",
)
EXTERNAL_SECRETS_CRD = "externalsecrets.external-secrets.io"
SERVICE_MONITORS_CRD = "servicemonitors.monitoring.coreos.com"
PROMETHEUS_RULES_CRD = "prometheusrules.monitoring.coreos.com"
DIGEST = re.compile(r"^[a-f0-9]{64}$")
# OBJECTS key: the (kind, name) set applied last; a cache this process rebuilds after a restart
CHILDREN = "gateway.children"
Logger = logging.Logger | logging.LoggerAdapter[Any]


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
        try:
            public_key = secret_text(await kube.get("Secret", namespace, ref["name"]), ref["key"])
        except SecretError:
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


async def _router_models(
    kube: KubeClient,
    gateway: RouteIQGateway,
    status: Mapping[str, Any],
    rejected_now: Mapping[str, str],
    variants: frozenset[str],
) -> tuple[dict[str, ResolvedModel], dict[str, str], ModelPlan]:
    """(models to render, why others are not rendered, the plan). `variants`: the model names the
    gateway's experiments want."""
    namespace = gateway.metadata.namespace
    ref = gateway.spec.routing.model_artifact_ref
    wanted = variants | ({ref.name} if ref is not None else set())
    if not wanted and not status.get("models") and not status.get("rejectedModels"):
        return {}, {}, ModelPlan()
    stable: dict[str, dict[str, str]] = {
        key: {k: str(v) for k, v in entry.items()} for key, entry in (status.get("models") or {}).items()
    }
    rejected = dict(rejected_now)
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
    return models, unresolved, ModelPlan(stable=stable, rejected=rejected, failures=failures)


async def _cluster_facts(
    kube: KubeClient,
    gateway: RouteIQGateway,
    status: Mapping[str, Any],
    rejected: Mapping[str, str],
    variants: frozenset[str],
    images: GatewayImages,
) -> tuple[ClusterFacts, list[str], ModelPlan]:
    """What the builder needs from the cluster, the referenced Secrets that are missing, and the
    router model plan (`status`: the gateway's stored status; `rejected`: the digests not to render;
    `variants`: the model names its experiments want; `images`: the operator's default images)."""
    models, unresolved, plan = await _router_models(kube, gateway, status, rejected, variants)
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
        prometheus_rules=await kube.crd_exists(PROMETHEUS_RULES_CRD),
        secret_versions=versions,
        models=models,
        variant_models=variants,
        unresolved_models=unresolved,
        images=images,
    )
    return facts, missing, plan


async def _apply(
    kube: KubeClient, namespace: str, desired: DesiredState, known: Mapping[tuple[str, str], Any]
) -> dict[tuple[str, str], Any]:
    """Apply the children that differ from the cluster; returns each child as it now stands.
    `known`: children already read in this pass (not read again)."""
    current: dict[tuple[str, str], Any] = {}
    for child in desired.children:
        key = (child["kind"], child["metadata"]["name"])
        live = known[key] if key in known else await kube.get(key[0], namespace, key[1])
        if needs_apply(child, live):
            current[key] = await kube.apply(child)
            child_applied(key[0])
        else:
            current[key] = live
    return current


async def _delete_undesired(
    kube: KubeClient, body: Mapping[str, Any], desired: DesiredState, logger: Logger
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


async def delete_children(kube: KubeClient, body: Mapping[str, Any], logger: Logger) -> None:
    """On delete: owner references let the garbage collector do this too; here it is immediate."""
    meta = body["metadata"]
    for kind in reversed(MANAGED_KINDS):
        for item in await kube.list(kind, meta["namespace"], managed_selector(meta["name"])):
            await kube.delete(kind, meta["namespace"], item["metadata"]["name"])
    logger.info("children deleted")


@functools.cache
def _image_policy() -> ImagePolicy:
    return ImagePolicy.from_env(os.environ)


@functools.cache
def _gateway_images() -> GatewayImages:
    return GatewayImages.from_env(os.environ)


async def reconcile_gateway(
    kube: KubeClient,
    body: Mapping[str, Any],
    logger: Logger,
    *,
    images: ImagePolicy | None = None,
    default_images: GatewayImages | None = None,
) -> dict[str, Any]:
    """One pass over a gateway (see the module docstring); returns the status as it now stands.
    `body`: the object as stored now (the caller reads it fresh). `images`: which images gateways
    may run; `default_images`: what they run when spec.image.repository is unset (both default to
    the operator's environment, see `gateway.images`)."""
    meta = body["metadata"]
    namespace, generation = meta["namespace"], meta.get("generation")
    previous: Mapping[str, Any] = body.get("status") or {}
    try:
        gateway = load(RouteIQGateway, body)
    except InvalidSpec as invalid:
        status = {
            "observedGeneration": generation,
            "conditions": invalid_spec_conditions(
                previous.get("conditions") or [],
                invalid.message,
                generation,
                ("Ready", "Degraded", "Progressing"),
            ),
        }
        if any(previous.get(key) != value for key, value in status.items()):
            await kube.patch_status("RouteIQGateway", namespace, meta["name"], status)
            logger.warning(f"invalid spec, nothing applied: {invalid.message}")
        return status
    defaults = default_images if default_images is not None else _gateway_images()
    variants = frozenset(models_wanted(await kube.list("RoutingExperiment", namespace, ""), meta["name"]))
    refusal = image_refusal(gateway, variants, defaults, images if images is not None else _image_policy())
    if refusal is not None:  # nothing is applied: the children stay as they were
        reason, refused = refusal
        status = {
            "observedGeneration": generation,
            "conditions": refused_conditions(
                previous.get("conditions") or [],
                reason,
                f"{refused}; nothing is applied",
                generation,
            ),
        }
        if any(previous.get(key) != value for key, value in status.items()):
            await kube.patch_status("RouteIQGateway", namespace, meta["name"], status)
            logger.warning(f"{reason}, nothing applied: {refused}")
        return status
    # observe, and decide the router-model rollout from what the Deployment reports
    deployment_key = ("Deployment", child_name(meta["name"]))
    deployment = await kube.get("Deployment", namespace, deployment_key[1])
    resolved = resolve(gateway.spec)
    wanted = resolved.autoscaling.min_replicas if resolved.autoscaling else resolved.replicas
    stable: dict[str, dict[str, str]] = {
        key: {k: str(v) for k, v in entry.items()} for key, entry in (previous.get("models") or {}).items()
    }
    decision = decide(deployment, wanted, stable, previous.get("rejectedModels") or {})
    if decision.newly_rejected:
        # remembered before the rollback is applied: never rolled out again, even after a crash
        await kube.patch_status(
            "RouteIQGateway", namespace, meta["name"], {"rejectedModels": decision.newly_rejected}
        )
    facts, missing_secrets, models = await _cluster_facts(
        kube, gateway, previous, decision.rejected, variants, defaults
    )
    if decision.failed:
        for message in models.failures:
            logger.warning(message)
    # render once, apply once
    desired = desired_children(gateway, facts)
    current = await _apply(kube, namespace, desired, {deployment_key: deployment})
    children = frozenset(current)
    uid = str(meta.get("uid"))
    if OBJECTS.get(uid, CHILDREN) != children:
        # scan for children to delete only when the desired set changed (or after a restart)
        await _delete_undesired(kube, body, desired, logger)
        OBJECTS.remember(uid, CHILDREN, children)
    # status from what was observed and applied
    deployment = current.get(deployment_key, deployment)
    loaded = stable_models(deployment, wanted, models.stable)
    status = gateway_status(body, deployment, desired.problems, missing_secrets, wanted, models, loaded)
    if status != previous:  # a steady gateway costs no status write
        await kube.patch_status(
            "RouteIQGateway", namespace, meta["name"], status_patch(status, models.stable, loaded)
        )
    return status
