"""Running a `RoutingExperiment`: the split in Redis, the counters in status, the verdict.

A pass is level based and idempotent, so a restarted operator resumes where its predecessor
stopped: the counters live in Redis, the run's identity (`status.variantsFingerprint`), its start,
the fixed latency threshold and every candidate's last always-valid p-value live in status.

1. Admission: the gateway exists, has Redis, and this is the gateway's *admitted* experiment (the
   oldest one that has not finished); the variants' `ModelArtifact`s are Ready and loaded by the
   gateway's pods. Until then the phase is Pending and a False `Ready` condition says why (a second
   experiment names the first).
2. Start: the variants' weights go to the gateway's `ab:weights` with fresh counters. Changing the
   variants (names, strategies, weights, artifacts, control) restarts the run; other spec changes
   do not. Weights that vanished from Redis (a flushed or restarted Redis) are written back.
3. Every `analysis.intervalSeconds` (and at once after a spec change) the counters are read back
   into status and `routeiq_operator.experiment.analysis.evaluate` judges every candidate against the control
   at alpha / (number of candidates) (Bonferroni). A guardrail breach rolls back at once; a promote
   or a rollback waits for `spec.approved` when `onVerdict` says manual; inconclusive ends the run.
4. After a verdict one variant serves everything: the control after a rollback or an inconclusive
   run (`ab:weights` = that variant at 100), the winner after a promotion: by default its strategy
   becomes `strategy:active` in Redis (or, when it carries an artifact or a model group, it stays
   the only variant at 100), and `status.promotion.gitChange` says what to change in Git; with
   `promotionMode: patchGateway` the operator edits the RouteIQGateway's `spec.routing` instead.
5. Deleting the experiment releases what it wrote: the split and the strategy override, when they
   are still the ones it set.

The pure parts (the run's identity, the split, `analyze`) are in `experiment.selection`, the Redis
URL and clients in `experiment.redis`. Controllers never call each other: a pass returns the
gateway in `PassResult.follow` when the gateway's pass is due (its pods must load the variants'
models, or a release gives it its own routing back), and the registration layer runs it. The
registration layer also holds the object's lock around every pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from redis.exceptions import RedisError

from routeiq_operator.conditions import condition, invalid_spec_conditions, merge_conditions
from routeiq_operator.experiment.analysis import Decision
from routeiq_operator.experiment.api import RoutingExperiment
from routeiq_operator.experiment.redis import RedisPool, gateway_redis_url
from routeiq_operator.experiment.selection import (
    Analysis,
    analyze,
    fingerprint,
    git_change,
    parse_time,
    pending_status,
    previous_p_values,
    stamp,
    unnamed,
    variant_specs,
    weights_after,
)
from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.tiers import resolve
from routeiq_operator.kube import KubeClient
from routeiq_operator.metrics import record_experiment
from routeiq_operator.objects import OBJECTS
from routeiq_operator.references import TERMINAL_PHASES, ObjectRef, PassResult, admitted_experiment
from routeiq_operator.validation import InvalidSpec, load
from routeiq_router.state.admin import StateAdmin
from routeiq_router.state.counters import parse_counters
from routeiq_router.state.keys import as_text
from routeiq_router.state.store import StateError, decode_variants

__all__ = ["reconcile_experiment", "release_experiment"]

# OBJECTS key: when (this process) a finished experiment's outcome in Redis was last checked
OUTCOME_CHECKED = "experiment.outcome_checked"
Logger = logging.Logger | logging.LoggerAdapter[Any]


class _Pending(Exception):
    """The experiment cannot run yet: (reason, message) for the Ready condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def _admission(
    kube: KubeClient, experiment: RoutingExperiment, body: Mapping[str, Any]
) -> tuple[Mapping[str, Any], str]:
    """(gateway, Redis URL) when the experiment may run; _Pending naming what is missing."""
    namespace = experiment.metadata.namespace
    gateway_name = experiment.spec.gateway_ref.name
    gateway = await kube.get("RouteIQGateway", namespace, gateway_name)
    if gateway is None:
        raise _Pending("GatewayNotFound", f"RouteIQGateway {gateway_name} (spec.gatewayRef) not found")
    experiments = await kube.list("RoutingExperiment", namespace, "")
    admitted = admitted_experiment(experiments, gateway_name)
    if admitted is not None and admitted["metadata"]["name"] != experiment.metadata.name:
        raise _Pending(
            "GatewayBusy",
            f"RoutingExperiment {admitted['metadata']['name']} is already running on gateway {gateway_name}; "
            "one experiment per gateway at a time: this one starts when that one finishes or is deleted",
        )
    url, why = await gateway_redis_url(kube, gateway)
    if url is None:
        raise _Pending("RedisNotConfigured", why)
    try:
        features = resolve(load(RouteIQGateway, gateway).spec).features
    except InvalidSpec:
        raise _Pending("GatewayInvalid", f"RouteIQGateway {gateway_name} has an invalid spec") from None
    if not features.get("ab_testing"):
        raise _Pending(
            "ABTestingDisabled",
            f"RouteIQGateway {gateway_name} ignores A/B weights (its tier's features.abTesting is off): "
            "set spec.features.abTesting: true",
        )
    if experiment.spec.assignment.sticky_key != "conversation":
        raise _Pending(
            "StickyKeyUnsupported",
            f"spec.assignment.stickyKey {experiment.spec.assignment.sticky_key!r} is not supported yet: the "
            "gateway keeps a request's variant by its conversation (metadata.conversation_id), else its "
            "previous_response_id, else its user; use stickyKey: conversation",
        )
    needed = {
        v.model_artifact_ref.name: v.name
        for v in experiment.spec.variants
        if v.model_artifact_ref is not None
    }
    if needed:
        loaded = ((gateway.get("status") or {}).get("models")) or {}
        for artifact_name, variant in sorted(needed.items()):
            artifact = await kube.get("ModelArtifact", namespace, artifact_name)
            artifact_status = (artifact or {}).get("status") or {}
            if artifact is None:
                raise _Pending(
                    "ArtifactNotFound", f"ModelArtifact {artifact_name} (variant {variant}) not found"
                )
            if artifact_status.get("phase") != "Ready" or not artifact_status.get("digest"):
                raise _Pending(
                    "ArtifactNotReady",
                    f"ModelArtifact {artifact_name} (variant {variant}) is "
                    f"{artifact_status.get('phase') or 'not verified yet'}",
                )
            if (loaded.get(artifact_name) or {}).get("digest") != artifact_status["digest"]:
                raise _Pending(
                    "WaitingForModels",
                    f"waiting for the pods of gateway {gateway_name} to load ModelArtifact {artifact_name} "
                    f"(digest {str(artifact_status['digest'])[:12]}) for variant {variant}",
                )
    return gateway, url


async def _write_status(
    kube: KubeClient, body: Mapping[str, Any], status: Mapping[str, Any], *, replace: bool = False
) -> dict[str, Any]:
    """Merge `status` into the stored one (`replace`: it is the whole status); no write when equal."""
    meta = body["metadata"]
    previous = body.get("status") or {}
    merged = dict(status) if replace else {**previous, **status}
    # a merge patch: keys to drop are sent as null
    patch = {**{key: None for key in previous if key not in merged}, **status}
    if merged != previous:
        await kube.patch_status("RoutingExperiment", meta["namespace"], meta["name"], patch)
    return merged


async def _redis_call(body: Mapping[str, Any], what: str, call: Any) -> Any:
    try:
        return await call
    except (RedisError, OSError) as error:
        raise kopf.TemporaryError(
            f"{what} for RoutingExperiment {body['metadata']['name']}: Redis: {error}", delay=10
        ) from error


async def reconcile_experiment(
    kube: KubeClient,
    body: Mapping[str, Any],
    logger: Logger,
    redis: RedisPool,
    *,
    force: bool = False,
    now: datetime | None = None,
) -> PassResult:
    """One pass (see the module docstring): the status as written, and the gateway to reconcile
    when the first wait for its pods to load the variants' models starts. `force`: analyse now
    even when the interval has not passed (a spec change). The experiment's gauges follow the
    status as written (`metrics.record_experiment`)."""
    result = await _reconcile(kube, body, logger, redis, force=force, now=now)
    record_experiment(body["metadata"]["namespace"], body["metadata"]["name"], result.status)
    return result


async def _reconcile(
    kube: KubeClient,
    body: Mapping[str, Any],
    logger: Logger,
    redis: RedisPool,
    *,
    force: bool,
    now: datetime | None,
) -> PassResult:
    moment = now or datetime.now(UTC)
    meta = body["metadata"]
    generation = meta.get("generation")
    previous = dict(body.get("status") or {})
    try:
        experiment = load(RoutingExperiment, body)
    except InvalidSpec as invalid:
        logger.warning(f"invalid spec: {invalid.message}")
        conditions = invalid_spec_conditions(
            previous.get("conditions") or [], invalid.message, generation, types=("Ready", "Degraded")
        )
        failed = {"observedGeneration": generation, "phase": "Failed", "message": invalid.message}
        return PassResult(await _write_status(kube, body, {**failed, "conditions": conditions}))
    spec = experiment.spec
    run = fingerprint(spec)
    restarted = previous.get("variantsFingerprint") not in (None, run)
    interval = spec.analysis.interval_seconds
    changed = force or previous.get("observedGeneration") != generation
    uid = str(meta.get("uid"))
    if previous.get("phase") in TERMINAL_PHASES and not restarted:
        checked: datetime | None = OBJECTS.get(uid, OUTCOME_CHECKED)
        if changed or checked is None or (moment - checked).total_seconds() >= interval:
            # once per interval, not on every tick: only a Redis that lost its data needs it
            await _keep_outcome(kube, body, experiment, redis, logger)
            OBJECTS.remember(uid, OUTCOME_CHECKED, moment)
        if previous.get("observedGeneration") != generation:
            return PassResult(await _write_status(kube, body, {"observedGeneration": generation}))
        return PassResult(previous)
    last = parse_time(previous.get("lastAnalysisTime"))
    if (
        previous.get("phase") == "Running"
        and not changed
        and last is not None
        and (moment - last).total_seconds() < interval
    ):
        return PassResult(previous)  # between two looks a running experiment costs no API or Redis call
    try:
        gateway, url = await _admission(kube, experiment, body)
    except _Pending as pending:
        waiting = [c for c in previous.get("conditions") or [] if c.get("reason") == "WaitingForModels"]
        follow: tuple[ObjectRef, ...] = ()
        if pending.reason == "WaitingForModels" and not waiting:
            # once, when the wait starts: the gateway renders the models now; its Deployment's
            # events then bring status.models, so the ticks in between need not reconcile it
            follow = (_gateway_ref(experiment),)
        waiting_status = pending_status(previous, pending.reason, pending.message, generation)
        return PassResult(await _write_status(kube, body, waiting_status), follow)
    admin = StateAdmin(redis.client(url), f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}")
    desired = variant_specs(experiment)
    fresh = previous.get("variantsFingerprint") != run
    notes: list[str] = []
    if fresh:
        await _redis_call(body, "starting the split", admin.set_weights(desired, reset_counters=True))
        logger.info(f"split started: {', '.join(f'{v.name}={v.weight:g}%' for v in desired)}")
        previous = {
            key: value
            for key, value in previous.items()
            if key in {"conditions"}  # a new run: nothing of an earlier one carries over
        }
        previous.update(startedAt=stamp(moment), variantsFingerprint=run)
    else:
        live = await _redis_call(body, "reading the split", admin.client.hgetall(admin.keys.ab_weights))
        try:
            current = list(decode_variants(live))
        except StateError:
            current = []
        if sorted(current, key=lambda v: v.name) != sorted(desired, key=lambda v: v.name):
            await _redis_call(body, "restoring the split", admin.set_weights(desired, reset_counters=False))
            notes.append("the split was missing or changed in Redis and was written again")
            logger.warning("split restored in Redis")
    raw = await _redis_call(body, "reading the counters", admin.client.hgetall(admin.keys.ab_counters))
    counters = parse_counters({as_text(k): int(v) for k, v in raw.items()})
    started = parse_time(previous.get("startedAt")) or moment
    look = analyze(
        spec,
        counters,
        elapsed_seconds=(moment - started).total_seconds(),
        previous_p_values=previous_p_values(previous),
        latency_threshold=previous.get("latencyThresholdMs"),
    )
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "variantsFingerprint": run,
        "startedAt": stamp(started),
        "lastAnalysisTime": stamp(moment),
        "leader": look.leader,
        "samples": look.samples,
        "statistic": look.statistic,
        "pValue": look.p_value,
        "latencyThresholdMs": look.latency_threshold_ms,
        "variants": look.variants,
    }
    conditions = await _act(kube, body, experiment, admin, look, status, logger)
    status["message"] = "; ".join([*notes, look.message]) if notes else status.get("message", look.message)
    status["conditions"] = merge_conditions(previous.get("conditions") or [], conditions)
    written = await _write_status(
        kube, body, {k: v for k, v in status.items() if v is not None}, replace=True
    )
    return PassResult(written)


async def _act(
    kube: KubeClient,
    body: Mapping[str, Any],
    experiment: RoutingExperiment,
    admin: StateAdmin,
    look: Analysis,
    status: dict[str, Any],
    logger: Logger,
) -> list[dict[str, Any]]:
    """Carry out the look's decision; fills phase, verdict, ... into `status`; returns conditions."""
    spec = experiment.spec
    generation = experiment.metadata.generation
    decision = look.decision
    approved = spec.approved
    running = [
        condition(
            "Ready", True, "Running", f"analysing every {spec.analysis.interval_seconds} s", generation
        ),
        condition("Degraded", False, "AsExpected", "nothing is wrong", generation),
    ]
    status["phase"] = "Running"
    status["message"] = look.message
    if decision is Decision.CONTINUE:
        return running
    if decision is Decision.PROMOTE:
        assert look.winner is not None
        status["verdict"] = "promote"
        if spec.on_verdict.promotion == "manual" and not approved:
            return [
                *running,
                condition(
                    "Approved",
                    False,
                    "AwaitingApproval",
                    f"{look.winner} won; set spec.approved: true to promote it",
                    generation,
                ),
            ]
        await _promote(kube, body, experiment, admin, look.winner, status, logger)
        return [
            condition("Ready", True, "Promoted", f"{look.winner} promoted", generation),
            condition("Degraded", False, "AsExpected", "nothing is wrong", generation),
        ]
    if decision is Decision.ROLLBACK:
        status["verdict"] = "rollback"
        reason = "GuardrailBreached" if look.guardrail else "CandidateWorse"
        if not look.guardrail and spec.on_verdict.rollback == "manual" and not approved:
            return [
                *running,
                condition(
                    "Approved",
                    False,
                    "AwaitingApproval",
                    "the candidates are worse; set spec.approved: true to roll back",
                    generation,
                ),
            ]
        await _serve_only(body, admin, experiment, spec.control, "rolling back")
        status.update(phase="RolledBack", servingVariant=spec.control, finishedAt=status["lastAnalysisTime"])
        status["variants"] = weights_after(status["variants"], spec.control)
        logger.warning(f"rolled back to {spec.control}: {look.message}")
        return [
            condition("Ready", True, "RolledBack", f"all traffic back to {spec.control}", generation),
            condition("Degraded", True, reason, look.message, generation),
        ]
    status["verdict"] = "inconclusive"
    await _serve_only(body, admin, experiment, spec.control, "ending an inconclusive run")
    status.update(phase="Inconclusive", servingVariant=spec.control, finishedAt=status["lastAnalysisTime"])
    status["variants"] = weights_after(status["variants"], spec.control)
    logger.info(f"inconclusive: {look.message}")
    return [
        condition("Ready", True, "Inconclusive", f"no winner; {spec.control} keeps all traffic", generation),
        condition("Degraded", False, "AsExpected", "nothing is wrong", generation),
    ]


async def _serve_only(
    body: Mapping[str, Any], admin: StateAdmin, experiment: RoutingExperiment, variant: str, what: str
) -> None:
    # the outcome counters stay (reset_counters=False): they are the evidence for the verdict
    await _redis_call(body, what, admin.set_weights(variant_specs(experiment, serving=variant)))


async def _promote(
    kube: KubeClient,
    body: Mapping[str, Any],
    experiment: RoutingExperiment,
    admin: StateAdmin,
    winner_name: str,
    status: dict[str, Any],
    logger: Logger,
) -> None:
    spec = experiment.spec
    namespace = experiment.metadata.namespace
    winner = next(v for v in spec.variants if v.name == winner_name)
    promotion: dict[str, Any] = {
        "variant": winner.name,
        "strategy": winner.strategy.value,
        "mode": spec.on_verdict.promotion_mode,
        "gitChange": git_change(namespace, spec.gateway_ref.name, winner),
    }
    if spec.on_verdict.promotion_mode == "patchGateway" and winner.model_group is None:
        routing: dict[str, Any] = {
            "strategy": winner.strategy.value,
            "modelArtifactRef": {"name": winner.model_artifact_ref.name}
            if winner.model_artifact_ref
            else None,
        }
        await kube.patch("RouteIQGateway", namespace, spec.gateway_ref.name, {"spec": {"routing": routing}})
        # the gateway's pods roll to the new routing; the winner serves everything until they have
        await _serve_only(body, admin, experiment, winner.name, "promoting")
        promotion["gitChange"] = (
            "the operator patched the RouteIQGateway; make the same change in Git, or a GitOps tool "
            "with self-heal reverts it: " + promotion["gitChange"]
        )
    elif winner.model_artifact_ref is None and winner.model_group is None:
        promotion["mode"] = "redis"
        await _redis_call(body, "promoting", admin.set_active_strategy(winner.strategy.value))
        await _redis_call(body, "promoting", admin.set_weights([]))
        promotion["activeStrategy"] = winner.strategy.value
        status["servingVariant"] = winner.name
    else:
        # strategy:active names a strategy only (and the gateway's spec has no model group): a
        # variant with its own artifact or model group keeps serving as the only variant of the split
        promotion["mode"] = "redis"
        await _serve_only(body, admin, experiment, winner.name, "promoting")
    status.update(
        phase="Promoted",
        servingVariant=winner.name,
        promotion=promotion,
        finishedAt=status["lastAnalysisTime"],
        verdict="promote",
    )
    status["variants"] = weights_after(status["variants"], winner.name)
    logger.info(f"promoted {winner.name} ({promotion['mode']}): {promotion['gitChange']}")


async def _connect(kube: KubeClient, experiment: RoutingExperiment, redis: RedisPool) -> StateAdmin | None:
    gateway = await kube.get(
        "RouteIQGateway", experiment.metadata.namespace, experiment.spec.gateway_ref.name
    )
    if gateway is None:
        return None
    url, _ = await gateway_redis_url(kube, gateway)
    if url is None:
        return None
    meta = gateway["metadata"]
    return StateAdmin(redis.client(url), f"{meta['namespace']}/{meta['name']}")


async def _keep_outcome(
    kube: KubeClient, body: Mapping[str, Any], experiment: RoutingExperiment, redis: RedisPool, logger: Logger
) -> None:
    """A finished experiment's outcome stays in Redis (written again after a Redis restart)."""
    status = body.get("status") or {}
    serving = status.get("servingVariant")
    if status.get("phase") == "Failed" or serving is None:
        return
    admin = await _connect(kube, experiment, redis)
    if admin is None:
        return
    active = (status.get("promotion") or {}).get("activeStrategy")
    client = admin.client
    if active is not None:
        current = await _redis_call(body, "reading the strategy", client.get(admin.keys.active_strategy))
        if current is None:
            await _redis_call(body, "restoring the promotion", admin.set_active_strategy(active))
            logger.warning(f"strategy:active {active} restored in Redis")
        return
    live = await _redis_call(body, "reading the split", client.hgetall(admin.keys.ab_weights))
    if not live:
        await _serve_only(body, admin, experiment, serving, "restoring the outcome")
        logger.warning(f"outcome restored in Redis: {serving} serves everything")


async def release_experiment(
    kube: KubeClient, body: Mapping[str, Any], logger: Logger, redis: RedisPool
) -> PassResult:
    """On delete: end the split and drop the strategy override, when they are still this
    experiment's. The gateway's own routing (its spec) applies again: once released, the gateway
    is returned to be reconciled (its pods' variant models follow the experiments)."""
    status = body.get("status") or {}
    if not status.get("variantsFingerprint"):
        return PassResult({})  # it never wrote anything
    try:
        experiment = load(RoutingExperiment, body)
    except InvalidSpec:
        return PassResult({})
    admin = await _connect(kube, experiment, redis)
    if admin is None:
        return PassResult({})
    live = await _redis_call(body, "reading the split", admin.client.hgetall(admin.keys.ab_weights))
    try:
        current = sorted(decode_variants(live), key=lambda v: v.name)
    except StateError:
        current = []
    serving = status.get("servingVariant")
    # compared without the experiment's name: a split written before variants carried it is ours too
    ours = [unnamed(variant_specs(experiment))]
    if serving:
        ours.append(unnamed(variant_specs(experiment, serving=serving)))
    if current and unnamed(current) in ours:
        await _redis_call(body, "ending the split", admin.set_weights([]))
        logger.info("split ended: the gateway's own routing applies")
    active = (status.get("promotion") or {}).get("activeStrategy")
    if active is not None:
        value = await _redis_call(body, "reading the strategy", admin.client.get(admin.keys.active_strategy))
        if value is not None and as_text(value) == active:
            await _redis_call(body, "dropping the strategy override", admin.set_active_strategy(None))
            logger.info(f"strategy override {active} dropped")
    return PassResult({}, (_gateway_ref(experiment),))


def _gateway_ref(experiment: RoutingExperiment) -> ObjectRef:
    return ObjectRef("RouteIQGateway", experiment.metadata.namespace, experiment.spec.gateway_ref.name)
