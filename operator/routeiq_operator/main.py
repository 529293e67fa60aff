"""The kopf registration layer: thin handlers that delegate to the controllers.

Importing this module registers the handlers with kopf; `routeiq operator` runs them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import defaultdict
from typing import Any

import kopf

from routeiq_operator.artifact.controller import recheck_artifact, reconcile_artifact, ssrf_policy_from_env
from routeiq_operator.experiment.controller import (
    RedisPool,
    models_wanted,
    reconcile_experiment,
    release_experiment,
)
from routeiq_operator.gateway.controller import MANAGED_KINDS, forget, reconcile_gateway, refresh_status
from routeiq_operator.kube import KubeClient, load_client
from routeiq_operator.naming import FIELD_MANAGER, managed_selector
from routeiq_operator.resource import GROUP, VERSION

__all__ = ["EXPERIMENT_TICK_SECONDS", "FINALIZER", "RESYNC_SECONDS"]

FINALIZER = "routeiq.io/finalizer"
# the drift timer: every gateway is re-applied this often (deleted or edited children come back)
RESYNC_SECONDS = float(os.environ.get("ROUTEIQ_OPERATOR_RESYNC_SECONDS", "60"))
GATEWAYS = (GROUP, VERSION, "routeiqgateways")
EXPERIMENTS = (GROUP, VERSION, "routingexperiments")
ARTIFACTS = (GROUP, VERSION, "modelartifacts")
# how often each artifact's source is asked whether it changed (its checkIntervalSeconds decides)
ARTIFACT_TICK_SECONDS = float(os.environ.get("ROUTEIQ_OPERATOR_ARTIFACT_TICK_SECONDS", "15"))
# how often each experiment is looked at; it is analysed when its analysis.intervalSeconds passed
EXPERIMENT_TICK_SECONDS = float(os.environ.get("ROUTEIQ_OPERATOR_EXPERIMENT_TICK_SECONDS", "5"))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # long watches, bounded on both sides, so a silently dropped connection is noticed
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 20
    # peering: the replica with the highest priority is active; equal priorities would pause all
    settings.peering.priority = random.SystemRandom().randint(1, 2**31 - 1)
    # a newly installed optional CRD (External Secrets, Prometheus) is noticed within one drift pass
    memo.kube = KubeClient(load_client(), crd_cache_seconds=RESYNC_SECONDS)
    memo.redis = RedisPool()
    # which endpoints artifact downloads may reach: the gateway's ROUTEIQ_SSRF_* variables
    memo.ssrf = ssrf_policy_from_env()
    memo.artifact_checks = {}  # ModelArtifact uid -> when (monotonic) its source was last checked
    memo.artifact_locks = defaultdict(asyncio.Lock)
    # a timer and a change handler of one experiment may run at once: one pass at a time
    memo.experiment_locks = defaultdict(asyncio.Lock)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.redis.close()


@kopf.on.create(*GATEWAYS)
@kopf.on.update(*GATEWAYS)
@kopf.on.resume(*GATEWAYS)
async def reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    await reconcile_gateway(memo.kube, body, logger)


@kopf.timer(*GATEWAYS, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def correct_drift(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    await reconcile_gateway(memo.kube, body, logger)


@kopf.on.delete(*GATEWAYS)
async def delete_children(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    # owner references let the garbage collector do this too; deleting here makes it immediate
    kube: KubeClient = memo.kube
    meta = body["metadata"]
    for kind in reversed(MANAGED_KINDS):
        for item in await kube.list(kind, meta["namespace"], managed_selector(meta["name"])):
            await kube.delete(kind, meta["namespace"], item["metadata"]["name"])
    forget(str(meta.get("uid")))
    logger.info("children deleted")


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": FIELD_MANAGER})
async def deployment_changed(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, type: str | None, **_: Any
) -> None:
    """Replica counts and rollout conditions reach the gateway's status as they change (and a
    router model whose rollout failed is rolled back at once)."""
    owners = [
        ref for ref in body["metadata"].get("ownerReferences") or [] if ref.get("kind") == "RouteIQGateway"
    ]
    if not owners or type == "DELETED":
        return
    kube: KubeClient = memo.kube
    gateway = await kube.get("RouteIQGateway", body["metadata"]["namespace"], owners[0]["name"])
    if gateway is None or gateway["metadata"].get("deletionTimestamp"):
        return
    try:
        await refresh_status(kube, gateway, None, [], logger)
    except ValueError:
        return  # an invalid spec: its own handler reports that, and there is no rollout to follow


# the bodies kopf hands over may predate the last pass's status write: every pass reads it fresh
@kopf.on.create(*EXPERIMENTS)
@kopf.on.update(*EXPERIMENTS)
@kopf.on.resume(*EXPERIMENTS)
async def reconcile_routing_experiment(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    async with memo.experiment_locks[body["metadata"]["uid"]]:
        fresh = await memo.kube.get(
            "RoutingExperiment", body["metadata"]["namespace"], body["metadata"]["name"]
        )
        if fresh is not None and not fresh["metadata"].get("deletionTimestamp"):
            await reconcile_experiment(memo.kube, fresh, logger, memo.redis, force=True)


@kopf.timer(*EXPERIMENTS, interval=EXPERIMENT_TICK_SECONDS, initial_delay=EXPERIMENT_TICK_SECONDS)
async def analyse_routing_experiment(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    async with memo.experiment_locks[body["metadata"]["uid"]]:
        fresh = await memo.kube.get(
            "RoutingExperiment", body["metadata"]["namespace"], body["metadata"]["name"]
        )
        if fresh is not None and not fresh["metadata"].get("deletionTimestamp"):
            await reconcile_experiment(memo.kube, fresh, logger, memo.redis)


@kopf.on.delete(*EXPERIMENTS)
async def release_routing_experiment(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    async with memo.experiment_locks[body["metadata"]["uid"]]:
        await release_experiment(memo.kube, body, logger, memo.redis)
    memo.experiment_locks.pop(body["metadata"]["uid"], None)


@kopf.on.create(*ARTIFACTS)
@kopf.on.update(*ARTIFACTS)
@kopf.on.resume(*ARTIFACTS)
async def verify_model_artifact(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    meta = body["metadata"]
    # one pass per artifact at a time: a slow download must not meet the timer's pass on an older spec
    async with memo.artifact_locks[meta["uid"]]:
        fresh = await memo.kube.get("ModelArtifact", meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return
        memo.artifact_checks[meta["uid"]] = time.monotonic()
        before = (fresh.get("status") or {}).get("digest")
        written = await reconcile_artifact(memo.kube, fresh, logger, ssrf=memo.ssrf, force=True)
    if written.get("digest") != before:
        await _reconcile_gateways_using(memo.kube, meta["namespace"], meta["name"], logger)


@kopf.timer(*ARTIFACTS, interval=ARTIFACT_TICK_SECONDS, initial_delay=ARTIFACT_TICK_SECONDS)
async def recheck_model_artifact(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Every checkIntervalSeconds the source is asked whether it changed (no download); a new
    object at the same URI is verified again, and the gateways follow a new digest."""
    meta = body["metadata"]
    interval = float((body.get("spec") or {}).get("checkIntervalSeconds", 300))
    if time.monotonic() - memo.artifact_checks.get(meta["uid"], 0.0) < interval:
        return
    async with memo.artifact_locks[meta["uid"]]:
        fresh = await memo.kube.get("ModelArtifact", meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return
        memo.artifact_checks[meta["uid"]] = time.monotonic()
        before = (fresh.get("status") or {}).get("digest")
        written = await recheck_artifact(memo.kube, fresh, logger, ssrf=memo.ssrf)
    if written is not None and written.get("digest") != before:
        await _reconcile_gateways_using(memo.kube, meta["namespace"], meta["name"], logger)


@kopf.on.delete(*ARTIFACTS, optional=True)
async def forget_model_artifact(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.artifact_checks.pop(body["metadata"]["uid"], None)
    memo.artifact_locks.pop(body["metadata"]["uid"], None)


async def _reconcile_gateways_using(
    kube: KubeClient, namespace: str, artifact: str, logger: kopf.Logger
) -> None:
    """A new digest reaches the gateways that use the artifact now rather than at their next drift
    pass. A gateway that fails here is left to its drift timer; the others still get the digest."""
    experiments = await kube.list("RoutingExperiment", namespace, "")
    for gateway in await kube.list("RouteIQGateway", namespace, ""):
        meta = gateway["metadata"]
        routing = ((gateway.get("spec") or {}).get("routing") or {}).get("modelArtifactRef") or {}
        uses = (
            routing.get("name") == artifact
            or artifact in ((gateway.get("status") or {}).get("models") or {})
            or artifact in models_wanted(experiments, meta["name"])
        )
        if not uses or meta.get("deletionTimestamp"):
            continue
        try:
            await reconcile_gateway(kube, gateway, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as error:
            logger.warning(
                f"RouteIQGateway {meta['name']} did not take ModelArtifact {artifact} yet: {error}"
            )
