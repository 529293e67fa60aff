"""Reconciling a `RouteIQGateway`: level-based and idempotent.

Every pass: check the object against its CRD (an object that bypassed admission gets a False
condition and no children), learn what the cluster offers, render the desired children with
the pure builder, apply them all, delete the managed children no longer desired, and write the
status from what the Deployment reports. A crash anywhere converges on the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from routeiq_operator.api import RouteIQGateway
from routeiq_operator.builders.gateway import (
    GATEWAY_PORT,
    ClusterFacts,
    DesiredState,
    Problem,
    child_name,
    desired_children,
    managed_selector,
    needs_apply,
)
from routeiq_operator.crds import custom_resource_definition
from routeiq_operator.kube import KubeClient
from routeiq_operator.validation import apply_defaults, openapi_schema, validate_custom_resource

__all__ = ["MANAGED_KINDS", "conditions_from", "forget", "reconcile_gateway", "refresh_status"]

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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def _merge_conditions(previous: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep lastTransitionTime unless the status flipped, as Kubernetes conditions do."""
    old = {condition.get("type"): condition for condition in previous}
    merged = []
    for condition in new:
        before = old.get(condition["type"])
        same = before is not None and before.get("status") == condition["status"]
        stamp = before.get("lastTransitionTime") if same and before else None
        merged.append({**condition, "lastTransitionTime": stamp or _now()})
    return merged


def conditions_from(
    deployment: Mapping[str, Any] | None,
    problems: list[Problem],
    missing_secrets: list[str],
    generation: int | None,
    wanted_replicas: int,
) -> list[dict[str, Any]]:
    """Ready / Progressing / Degraded (+ the checks behind them) from what the cluster reports."""
    status = (deployment or {}).get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    observed = status.get("observedGeneration")
    current = deployment is not None and observed == (deployment.get("metadata") or {}).get("generation")
    deployment_conditions = {c.get("type"): c for c in status.get("conditions") or []}
    stalled = deployment_conditions.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded"
    rolled_out = current and updated >= wanted_replicas and replicas == updated and ready >= wanted_replicas
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
    degraded_reasons = [p.reason for p in problems] + (["SecretNotFound"] if missing_secrets else [])
    if stalled:
        degraded_reasons.append("ProgressDeadlineExceeded")
    conditions.append(
        _condition(
            "Degraded",
            bool(degraded_reasons),
            degraded_reasons[0] if degraded_reasons else "AsExpected",
            "; ".join(c["message"] for c in conditions if c["status"] == "False")
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


async def _cluster_facts(kube: KubeClient, gateway: RouteIQGateway) -> tuple[ClusterFacts, list[str]]:
    secrets = gateway.spec.secrets
    names = {
        ref.name for ref in (secrets.master_key, secrets.redis_url, secrets.database_url) if ref is not None
    }
    names |= {provider.secret_key_ref.name for provider in secrets.provider_keys or []}
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
    )
    return facts, missing


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


async def refresh_status(
    kube: KubeClient, body: Mapping[str, Any], desired: DesiredState | None, missing_secrets: list[str]
) -> dict[str, Any]:
    """Write status from the Deployment; returns what was written."""
    meta = body["metadata"]
    generation = meta.get("generation")
    previous = ((body.get("status") or {}).get("conditions")) or []
    if desired is None:
        gateway = RouteIQGateway.model_validate(apply_defaults(dict(body), _SCHEMA))
        facts, missing_secrets = await _cluster_facts(kube, gateway)
        desired = desired_children(gateway, facts)
    deployment = await kube.get("Deployment", meta["namespace"], child_name(meta["name"]))
    scaling = desired.resolved.autoscaling
    wanted = scaling.min_replicas if scaling else desired.resolved.replicas
    status = {
        "observedGeneration": generation,
        "tier": (body.get("spec") or {}).get("tier", "standard"),
        "replicas": int(((deployment or {}).get("status") or {}).get("replicas") or 0),
        "readyReplicas": int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0),
        "endpoint": f"http://{child_name(meta['name'])}.{meta['namespace']}.svc:"
        f"{(body.get('spec') or {}).get('service', {}).get('port', GATEWAY_PORT)}",
        "conditions": _merge_conditions(
            previous, conditions_from(deployment, desired.problems, missing_secrets, generation, wanted)
        ),
    }
    if status != body.get("status"):  # a steady gateway costs no status write
        await kube.patch_status("RouteIQGateway", meta["namespace"], meta["name"], status)
    return status


def forget(uid: str) -> None:
    """Drop what is remembered of a deleted gateway."""
    _last_desired.pop(uid, None)


async def reconcile_gateway(
    kube: KubeClient, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
) -> dict[str, Any]:
    """One level-based pass over a gateway; returns the status written."""
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
    facts, missing_secrets = await _cluster_facts(kube, gateway)
    desired = desired_children(gateway, facts)
    for child in desired.children:
        live = await kube.get(child["kind"], meta["namespace"], child["metadata"]["name"])
        if needs_apply(child, live):
            await kube.apply(child)
    wanted = frozenset((child["kind"], child["metadata"]["name"]) for child in desired.children)
    uid = str(meta.get("uid"))
    if _last_desired.get(uid) != wanted:
        # scan for children to delete only when the desired set changed (or after a restart)
        await _delete_undesired(kube, body, desired, logger)
        _last_desired[uid] = wanted
    return await refresh_status(kube, body, desired, missing_secrets)
