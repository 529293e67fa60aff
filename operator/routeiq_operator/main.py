"""The kopf registration layer: thin handlers that delegate to the controllers.

Every pass of every kind goes through `_pass`: one pass per object at a time (`OBJECTS.lock`),
on the object as stored now (the body kopf hands over may predate the last status write), never
on an object being deleted. A pass returns which other objects need a pass because of what it
did (`references.PassResult.follow`); `_follow` runs them. That is the only place where one
resource makes another one react: the controllers never call each other.

Importing this module registers the handlers with kopf; `routeiq operator` runs them.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import kopf

from routeiq_operator.artifact.controller import recheck_artifact, reconcile_artifact
from routeiq_operator.artifact.verification import ssrf_policy_from_env
from routeiq_operator.experiment.controller import reconcile_experiment, release_experiment
from routeiq_operator.experiment.redis import RedisPool
from routeiq_operator.gateway.controller import delete_children, reconcile_gateway
from routeiq_operator.kube import KubeClient, load_client
from routeiq_operator.metrics import forget_artifact, forget_experiment, measure_pass
from routeiq_operator.naming import FIELD_MANAGER
from routeiq_operator.objects import OBJECTS
from routeiq_operator.references import Kind, ObjectRef, PassResult
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
# OBJECTS key: when (monotonic) an artifact's source was last checked
SOURCE_CHECKED = "artifact.source_checked"

Logger = logging.Logger | logging.LoggerAdapter[Any]
Pass = Callable[[dict[str, Any]], Awaitable[PassResult | dict[str, Any] | None]]


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


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.redis.close()


async def _pass(kube: KubeClient, ref: ObjectRef, uid: str, run: Pass) -> PassResult | dict[str, Any] | None:
    """One pass of `run` over the object as stored now, under the object's lock; None when the
    object is gone or being deleted. Counted and timed by kind (`metrics.measure_pass`): a pass
    that raises is an error."""
    async with OBJECTS.lock(uid):
        with measure_pass(ref.kind):
            fresh = await kube.get(ref.kind, ref.namespace, ref.name)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return None
            return await run(fresh)


async def _follow(memo: kopf.Memo, refs: Sequence[ObjectRef], logger: Logger) -> None:
    """Run the passes another pass asked for (only gateways follow others). One that fails is left
    to that object's own timer; the others still run."""
    for ref in refs:
        if ref.kind != "RouteIQGateway":
            raise TypeError(f"a pass asked for a pass of {ref}; only gateways follow other objects")
        gateway = await memo.kube.get(ref.kind, ref.namespace, ref.name)
        if gateway is None:
            continue
        try:
            await _gateway_pass(memo, gateway, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as error:
            logger.warning(f"{ref} did not follow yet: {error}")


def _ref(kind: Kind, body: kopf.Body | dict[str, Any]) -> tuple[ObjectRef, str]:
    meta = body["metadata"]
    return ObjectRef(kind, meta["namespace"], meta["name"]), str(meta["uid"])


# -- RouteIQGateway ---------------------------------------------------------------------------------


async def _gateway_pass(memo: kopf.Memo, body: kopf.Body | dict[str, Any], logger: Logger) -> None:
    ref, uid = _ref("RouteIQGateway", body)
    await _pass(memo.kube, ref, uid, lambda fresh: reconcile_gateway(memo.kube, fresh, logger))


@kopf.on.create(*GATEWAYS)
@kopf.on.update(*GATEWAYS)
@kopf.on.resume(*GATEWAYS)
async def reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    await _gateway_pass(memo, body, logger)


@kopf.timer(*GATEWAYS, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def correct_drift(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    await _gateway_pass(memo, body, logger)


@kopf.on.delete(*GATEWAYS)
async def delete_gateway_children(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    uid = str(body["metadata"]["uid"])
    async with OBJECTS.lock(uid):
        await delete_children(memo.kube, body, logger)
    OBJECTS.forget(uid)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": FIELD_MANAGER})
async def deployment_changed(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, type: str | None, **_: Any
) -> None:
    """Replica counts and rollout conditions reach the gateway's status as they change (and a
    router model whose rollout failed is rolled back at once): the owning gateway gets a pass."""
    owners = [
        ref for ref in body["metadata"].get("ownerReferences") or [] if ref.get("kind") == "RouteIQGateway"
    ]
    if not owners or type == "DELETED":
        return
    ref = ObjectRef("RouteIQGateway", body["metadata"]["namespace"], owners[0]["name"])
    await _pass(
        memo.kube, ref, str(owners[0]["uid"]), lambda fresh: reconcile_gateway(memo.kube, fresh, logger)
    )


# -- RoutingExperiment ------------------------------------------------------------------------------


async def _experiment_pass(memo: kopf.Memo, body: kopf.Body, logger: Logger, *, force: bool = False) -> None:
    ref, uid = _ref("RoutingExperiment", body)
    result = await _pass(
        memo.kube,
        ref,
        uid,
        lambda fresh: reconcile_experiment(memo.kube, fresh, logger, memo.redis, force=force),
    )
    if isinstance(result, PassResult):
        await _follow(memo, result.follow, logger)


@kopf.on.create(*EXPERIMENTS)
@kopf.on.update(*EXPERIMENTS)
@kopf.on.resume(*EXPERIMENTS)
async def reconcile_routing_experiment(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    await _experiment_pass(memo, body, logger, force=True)


@kopf.timer(*EXPERIMENTS, interval=EXPERIMENT_TICK_SECONDS, initial_delay=EXPERIMENT_TICK_SECONDS)
async def analyse_routing_experiment(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    await _experiment_pass(memo, body, logger)


@kopf.on.delete(*EXPERIMENTS)
async def release_routing_experiment(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    uid = str(body["metadata"]["uid"])
    async with OBJECTS.lock(uid):
        forget_experiment(body["metadata"]["namespace"], body["metadata"]["name"])
        result = await release_experiment(memo.kube, body, logger, memo.redis)
    OBJECTS.forget(uid)
    await _follow(memo, result.follow, logger)


# -- ModelArtifact ----------------------------------------------------------------------------------


async def _artifact_pass(
    memo: kopf.Memo,
    body: kopf.Body,
    logger: Logger,
    check: Callable[[dict[str, Any]], Awaitable[PassResult | None]],
) -> None:
    ref, uid = _ref("ModelArtifact", body)

    async def run(fresh: dict[str, Any]) -> PassResult | None:
        OBJECTS.remember(uid, SOURCE_CHECKED, time.monotonic())
        return await check(fresh)

    result = await _pass(memo.kube, ref, uid, run)
    if isinstance(result, PassResult):
        await _follow(memo, result.follow, logger)


@kopf.on.create(*ARTIFACTS)
@kopf.on.update(*ARTIFACTS)
@kopf.on.resume(*ARTIFACTS)
async def verify_model_artifact(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    # one pass per artifact at a time: a slow download must not meet the timer's pass on an older spec
    await _artifact_pass(
        memo,
        body,
        logger,
        lambda fresh: reconcile_artifact(memo.kube, fresh, logger, ssrf=memo.ssrf, force=True),
    )


@kopf.timer(*ARTIFACTS, interval=ARTIFACT_TICK_SECONDS, initial_delay=ARTIFACT_TICK_SECONDS)
async def recheck_model_artifact(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Every checkIntervalSeconds the source is asked whether it changed (no download); a new
    object at the same URI is verified again, and the gateways follow a new digest."""
    interval = float((body.get("spec") or {}).get("checkIntervalSeconds", 300))
    last = OBJECTS.get(str(body["metadata"]["uid"]), SOURCE_CHECKED) or 0.0
    if time.monotonic() - last < interval:
        return
    await _artifact_pass(
        memo, body, logger, lambda fresh: recheck_artifact(memo.kube, fresh, logger, ssrf=memo.ssrf)
    )


@kopf.on.delete(*ARTIFACTS, optional=True)
async def forget_model_artifact(body: kopf.Body, **_: Any) -> None:
    forget_artifact(body["metadata"]["namespace"], body["metadata"]["name"])
    OBJECTS.forget(str(body["metadata"]["uid"]))
