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
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from redis.asyncio import Redis
from redis.exceptions import RedisError
from scipy.stats import binomtest

from routeiq_operator.conditions import condition, merge_conditions
from routeiq_operator.experiment.analysis import (
    HIGHER_IS_BETTER,
    ArmData,
    Decision,
    GuardrailLimit,
    Verdict,
    evaluate,
    latency_threshold_ms,
    metric_value,
)
from routeiq_operator.experiment.api import Metric, RoutingExperiment, RoutingExperimentSpec, Variant
from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.tiers import resolve
from routeiq_operator.kube import KubeClient
from routeiq_operator.naming import child_name
from routeiq_operator.schema import custom_resource_definition
from routeiq_operator.validation import apply_defaults, openapi_schema, validate_custom_resource
from routeiq_router.state.admin import StateAdmin
from routeiq_router.state.counters import VariantCounters, parse_counters
from routeiq_router.state.keys import as_text
from routeiq_router.state.store import StateError, VariantSpec, decode_variants

__all__ = [
    "TERMINAL_PHASES",
    "Analysis",
    "RedisPool",
    "admitted_experiment",
    "analyze",
    "fingerprint",
    "gateway_redis_url",
    "models_wanted",
    "reconcile_experiment",
    "release_experiment",
    "variant_specs",
]

TERMINAL_PHASES = frozenset({"Promoted", "RolledBack", "Inconclusive", "Failed"})
_CRD = custom_resource_definition(RoutingExperiment)
_SCHEMA = openapi_schema(_CRD)
_GATEWAY_SCHEMA = openapi_schema(custom_resource_definition(RouteIQGateway))
# experiment uid -> when a finished experiment's outcome in Redis was last checked (this process)
_outcome_checked: dict[str, datetime] = {}
Logger = logging.Logger | logging.LoggerAdapter[Any]


# -- pure parts ----------------------------------------------------------------------------------


def fingerprint(spec: RoutingExperimentSpec) -> str:
    """The identity of a run: what the split is made of. Changing any of it restarts the run."""
    document = {
        "control": spec.control,
        "variants": [
            [
                v.name,
                v.strategy.value,
                v.weight,
                v.model_group,
                v.model_artifact_ref and v.model_artifact_ref.name,
            ]
            for v in sorted(spec.variants, key=lambda v: v.name)
        ],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def _spec_of(variant: Variant, weight: float) -> VariantSpec:
    return VariantSpec(
        name=variant.name,
        strategy=variant.strategy.value,
        weight=weight,
        model_group=variant.model_group,
        model=variant.model_artifact_ref.name if variant.model_artifact_ref else None,
    )


def variant_specs(spec: RoutingExperimentSpec, serving: str | None = None) -> list[VariantSpec]:
    """What goes to `ab:weights`: every variant at its weight, or only `serving` at 100."""
    if serving is not None:
        return [_spec_of(v, 100) for v in spec.variants if v.name == serving]
    return [_spec_of(v, v.weight) for v in spec.variants]


def _wilson(errors: int, requests: int) -> tuple[float | None, float | None]:
    if requests <= 0:
        return None, None
    interval = binomtest(errors, requests).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def _arm(counters: VariantCounters | None) -> ArmData:
    return ArmData.from_counters(counters if counters is not None else VariantCounters())


def _rounded(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True, slots=True)
class Analysis:
    """One look at an experiment: the decision, and everything status reports about it."""

    decision: Decision
    message: str
    winner: str | None  # the candidate to promote
    guardrail: bool  # the rollback comes from a breached guardrail
    leader: str | None
    samples: int
    statistic: float | None
    p_value: float | None
    latency_threshold_ms: float | None
    variants: list[dict[str, Any]]


def analyze(
    spec: RoutingExperimentSpec,
    counters: Mapping[str, VariantCounters],
    *,
    elapsed_seconds: float,
    previous_p_values: Mapping[str, float] | None = None,
    latency_threshold: float | None = None,
) -> Analysis:
    """Judge every candidate against the control (pure; see the module docstring)."""
    analysis = spec.analysis
    metric = spec.primary_metric.type
    control = _arm(counters.get(spec.control))
    candidates = [v for v in spec.variants if v.name != spec.control]
    threshold = latency_threshold
    if (
        metric is Metric.P95_LATENCY
        and threshold is None
        and control.latency_count >= analysis.min_samples_per_variant
    ):
        threshold = latency_threshold_ms(control.latency_buckets)
    guardrails = [GuardrailLimit(g.metric, g.max) for g in spec.guardrails or []]
    alpha = analysis.significance_level / max(1, len(candidates))
    previous = previous_p_values or {}
    verdicts: dict[str, Verdict] = {}
    for candidate in candidates:
        verdicts[candidate.name] = evaluate(
            control,
            _arm(counters.get(candidate.name)),
            metric=metric,
            significance_level=alpha,
            minimum_detectable_effect=analysis.minimum_detectable_effect,
            min_samples_per_variant=analysis.min_samples_per_variant,
            elapsed_seconds=elapsed_seconds,
            max_duration_seconds=analysis.max_duration_seconds,
            guardrails=guardrails,
            previous_p_value=previous.get(candidate.name),
            latency_threshold=threshold,
            control_name=spec.control,
            candidate_name=candidate.name,
        )
    decision, winner, guardrail, message = _combine(verdicts, metric)
    tested = [verdicts[winner]] if winner else [v for v in verdicts.values() if v.p_value is not None]
    best = min(tested, key=lambda v: v.p_value if v.p_value is not None else 1.0, default=None)
    values = {
        v.name: metric_value(metric, _arm(counters.get(v.name)))
        for v in spec.variants
        if _arm(counters.get(v.name)).requests > 0
    }
    scored = {name: value for name, value in values.items() if value is not None}
    higher = metric in HIGHER_IS_BETTER
    leader = (max if higher else min)(scored, key=scored.__getitem__) if scored else None
    return Analysis(
        decision=decision,
        message=message,
        winner=winner,
        guardrail=guardrail,
        leader=leader,
        samples=sum(_arm(counters.get(v.name)).requests for v in spec.variants),
        statistic=_rounded(best.statistic) if best else None,
        p_value=_rounded(best.p_value, 8) if best else None,
        latency_threshold_ms=threshold,
        variants=[_variant_status(v, counters.get(v.name), verdicts.get(v.name)) for v in spec.variants],
    )


def _combine(verdicts: Mapping[str, Verdict], metric: Metric) -> tuple[Decision, str | None, bool, str]:
    """The experiment's decision from its candidates' (decision, winner, guardrail, message)."""
    for verdict in verdicts.values():
        if verdict.guardrail is not None:
            return Decision.ROLLBACK, None, True, verdict.message
    promoted = [name for name, v in verdicts.items() if v.verdict is Decision.PROMOTE]
    if promoted:
        sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
        winner = max(promoted, key=lambda name: sign * (verdicts[name].effect or 0.0))
        return Decision.PROMOTE, winner, False, verdicts[winner].message
    decisions = {v.verdict for v in verdicts.values()}
    messages = "; ".join(f"{name}: {v.message}" for name, v in verdicts.items())
    if decisions == {Decision.ROLLBACK}:
        return Decision.ROLLBACK, None, False, messages
    if decisions <= {Decision.ROLLBACK, Decision.INCONCLUSIVE}:
        return Decision.INCONCLUSIVE, None, False, messages
    return Decision.CONTINUE, None, False, messages


def _variant_status(
    variant: Variant, counters: VariantCounters | None, verdict: Verdict | None
) -> dict[str, Any]:
    c = counters if counters is not None else VariantCounters()
    low, high = _wilson(c.errors, c.requests)
    status: dict[str, Any] = {
        "name": variant.name,
        "strategy": variant.strategy.value,
        "weight": variant.weight,
        "requests": c.requests,
        "errors": c.errors,
        "errorRate": _rounded(c.error_rate),
        "errorRateLow": _rounded(low),
        "errorRateHigh": _rounded(high),
        "p50LatencyMs": _rounded(c.quantile(0.5), 3),
        "p95LatencyMs": _rounded(c.quantile(0.95), 3),
        "tokens": c.prompt_tokens + c.completion_tokens,
        "cost": _rounded(c.cost_usd),
    }
    if verdict is not None:
        status.update(
            decision=verdict.verdict.value,
            pValue=_rounded(verdict.p_value, 8),
            effect=_rounded(verdict.effect),
            effectLow=_rounded(verdict.effect_low),
            effectHigh=_rounded(verdict.effect_high),
        )
    return {key: value for key, value in status.items() if value is not None}


def _created(item: Mapping[str, Any]) -> tuple[str, str]:
    meta = item["metadata"]
    return str(meta.get("creationTimestamp") or ""), str(meta["name"])


def admitted_experiment(experiments: Sequence[Mapping[str, Any]], gateway: str) -> Mapping[str, Any] | None:
    """The one experiment that may run on `gateway`: the oldest that has not finished."""
    live = [
        item
        for item in experiments
        if (item.get("spec") or {}).get("gatewayRef", {}).get("name") == gateway
        and not item["metadata"].get("deletionTimestamp")
        and (item.get("status") or {}).get("phase") not in TERMINAL_PHASES
    ]
    return min(live, key=_created, default=None)


def models_wanted(experiments: Sequence[Mapping[str, Any]], gateway: str) -> set[str]:
    """The ModelArtifacts the gateway's pods must load for its experiments: every variant's of the
    admitted one, and the serving variant's of each finished one."""
    wanted: set[str] = set()
    admitted = admitted_experiment(experiments, gateway)
    for item in experiments:
        spec = item.get("spec") or {}
        if spec.get("gatewayRef", {}).get("name") != gateway or item["metadata"].get("deletionTimestamp"):
            continue
        serving = (item.get("status") or {}).get("servingVariant")
        for variant in spec.get("variants") or []:
            ref = (variant.get("modelArtifactRef") or {}).get("name")
            if ref and (item is admitted or variant.get("name") == serving):
                wanted.add(str(ref))
    return wanted


def git_change(namespace: str, gateway: str, variant: Variant) -> str:
    fields = [f"spec.routing.strategy: {variant.strategy.value}"]
    if variant.model_artifact_ref is not None:
        fields.append(f"spec.routing.modelArtifactRef.name: {variant.model_artifact_ref.name}")
    text = f"in RouteIQGateway {namespace}/{gateway} set " + ", ".join(fields)
    if variant.model_group is not None:
        text += f"; route model group {variant.model_group!r} as this variant did"
    return text + ", then delete this RoutingExperiment"


# -- I/O -----------------------------------------------------------------------------------------


class RedisPool:
    """One client per Redis URL (a gateway's REDIS_URL), shared by every experiment on it."""

    def __init__(self, factory: Callable[[str], Redis] | None = None) -> None:
        self._factory = factory or (
            lambda url: Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        )
        self._clients: dict[str, Redis] = {}

    def client(self, url: str) -> Redis:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = self._factory(url)
        return client

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def _secret_value(secret: Mapping[str, Any] | None, key: str) -> str | None:
    if secret is None:
        return None
    raw = (secret.get("data") or {}).get(key)
    if raw is not None:
        return base64.b64decode(raw).decode()
    plain = (secret.get("stringData") or {}).get(key)
    return None if plain is None else str(plain)


async def gateway_redis_url(kube: KubeClient, gateway: Mapping[str, Any]) -> tuple[str | None, str]:
    """The gateway's REDIS_URL as its pods get it, or None and why not."""
    meta = gateway["metadata"]
    secrets = (gateway.get("spec") or {}).get("secrets") or {}
    ref = secrets.get("redisUrl")
    if ref:
        value = _secret_value(await kube.get("Secret", meta["namespace"], ref["name"]), ref["key"])
        if value is None:
            return (
                None,
                f"Secret {ref['name']} (key {ref['key']}), the gateway's spec.secrets.redisUrl, not found",
            )
        return value, ""
    external = secrets.get("externalSecret") or {}
    if any(item.get("secretKey") == "REDIS_URL" for item in external.get("data") or []):
        name = child_name(meta["name"], "secrets")
        value = _secret_value(await kube.get("Secret", meta["namespace"], name), "REDIS_URL")
        if value is None:
            return (
                None,
                f"Secret {name} (key REDIS_URL) has not been synced by the External Secrets Operator yet",
            )
        return value, ""
    return None, (
        f"RouteIQGateway {meta['name']} has no Redis (spec.secrets.redisUrl): an experiment's split and "
        "counters are shared through Redis"
    )


def _previous_p_values(status: Mapping[str, Any]) -> dict[str, float]:
    return {
        str(item["name"]): float(item["pValue"])
        for item in status.get("variants") or []
        if item.get("pValue") is not None
    }


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        features = resolve(
            RouteIQGateway.model_validate(apply_defaults(dict(gateway), _GATEWAY_SCHEMA)).spec
        ).features
    except ValueError:
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


def _pending_status(
    body: Mapping[str, Any], reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    previous = body.get("status") or {}
    return {
        "observedGeneration": generation,
        "phase": "Pending",
        "message": message,
        "conditions": merge_conditions(
            previous.get("conditions") or [],
            [
                condition("Ready", False, reason, message, generation),
                condition("Degraded", False, "AsExpected", "nothing is wrong", generation),
            ],
        ),
    }


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
) -> dict[str, Any]:
    """One pass (see the module docstring); returns the status as written. `force`: analyse now
    even when the interval has not passed (a spec change)."""
    moment = now or datetime.now(UTC)
    meta = body["metadata"]
    generation = meta.get("generation")
    previous = dict(body.get("status") or {})
    document = {key: value for key, value in body.items() if key != "status"}
    violations = validate_custom_resource(document, _CRD)
    if violations:
        message = "; ".join(str(v) for v in violations)
        logger.warning(f"invalid spec: {message}")
        return await _write_status(
            kube,
            body,
            {
                "observedGeneration": generation,
                "phase": "Failed",
                "message": message,
                "conditions": merge_conditions(
                    previous.get("conditions") or [],
                    [
                        condition("Ready", False, "InvalidSpec", message, generation),
                        condition("Degraded", True, "InvalidSpec", message, generation),
                    ],
                ),
            },
        )
    experiment = RoutingExperiment.model_validate(apply_defaults(document, _SCHEMA))
    spec = experiment.spec
    run = fingerprint(spec)
    restarted = previous.get("variantsFingerprint") not in (None, run)
    interval = spec.analysis.interval_seconds
    changed = force or previous.get("observedGeneration") != generation
    uid = str(meta.get("uid"))
    if previous.get("phase") in TERMINAL_PHASES and not restarted:
        checked = _outcome_checked.get(uid)
        if changed or checked is None or (moment - checked).total_seconds() >= interval:
            # once per interval, not on every tick: only a Redis that lost its data needs it
            await _keep_outcome(kube, body, experiment, redis, logger)
            _outcome_checked[uid] = moment
        if previous.get("observedGeneration") != generation:
            return await _write_status(kube, body, {"observedGeneration": generation})
        return previous
    last = _parse_time(previous.get("lastAnalysisTime"))
    if (
        previous.get("phase") == "Running"
        and not changed
        and last is not None
        and (moment - last).total_seconds() < interval
    ):
        return previous  # between two looks a running experiment costs no API or Redis call
    try:
        gateway, url = await _admission(kube, experiment, body)
    except _Pending as pending:
        waiting = [c for c in previous.get("conditions") or [] if c.get("reason") == "WaitingForModels"]
        if pending.reason == "WaitingForModels" and not waiting:
            # once, when the wait starts: the gateway renders the models now; its Deployment's
            # events then bring status.models, so the ticks in between need not reconcile it
            await _touch_gateway(kube, experiment, logger)
        return await _write_status(
            kube, body, _pending_status(body, pending.reason, pending.message, generation)
        )
    admin = StateAdmin(redis.client(url), f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}")
    desired = variant_specs(spec)
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
        previous.update(startedAt=_stamp(moment), variantsFingerprint=run)
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
    started = _parse_time(previous.get("startedAt")) or moment
    look = analyze(
        spec,
        counters,
        elapsed_seconds=(moment - started).total_seconds(),
        previous_p_values=_previous_p_values(previous),
        latency_threshold=previous.get("latencyThresholdMs"),
    )
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "variantsFingerprint": run,
        "startedAt": _stamp(started),
        "lastAnalysisTime": _stamp(moment),
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
    return await _write_status(kube, body, {k: v for k, v in status.items() if v is not None}, replace=True)


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
        await _serve_only(body, admin, spec, spec.control, "rolling back")
        status.update(phase="RolledBack", servingVariant=spec.control, finishedAt=status["lastAnalysisTime"])
        status["variants"] = _weights_after(status["variants"], spec.control)
        logger.warning(f"rolled back to {spec.control}: {look.message}")
        return [
            condition("Ready", True, "RolledBack", f"all traffic back to {spec.control}", generation),
            condition("Degraded", True, reason, look.message, generation),
        ]
    status["verdict"] = "inconclusive"
    await _serve_only(body, admin, spec, spec.control, "ending an inconclusive run")
    status.update(phase="Inconclusive", servingVariant=spec.control, finishedAt=status["lastAnalysisTime"])
    status["variants"] = _weights_after(status["variants"], spec.control)
    logger.info(f"inconclusive: {look.message}")
    return [
        condition("Ready", True, "Inconclusive", f"no winner; {spec.control} keeps all traffic", generation),
        condition("Degraded", False, "AsExpected", "nothing is wrong", generation),
    ]


def _weights_after(variants: list[dict[str, Any]], serving: str) -> list[dict[str, Any]]:
    return [{**item, "weight": 100 if item["name"] == serving else 0} for item in variants]


async def _serve_only(
    body: Mapping[str, Any], admin: StateAdmin, spec: RoutingExperimentSpec, variant: str, what: str
) -> None:
    # the outcome counters stay (reset_counters=False): they are the evidence for the verdict
    await _redis_call(body, what, admin.set_weights(variant_specs(spec, serving=variant)))


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
        await _serve_only(body, admin, spec, winner.name, "promoting")
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
        await _serve_only(body, admin, spec, winner.name, "promoting")
    status.update(
        phase="Promoted",
        servingVariant=winner.name,
        promotion=promotion,
        finishedAt=status["lastAnalysisTime"],
        verdict="promote",
    )
    status["variants"] = _weights_after(status["variants"], winner.name)
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
        await _serve_only(body, admin, experiment.spec, serving, "restoring the outcome")
        logger.warning(f"outcome restored in Redis: {serving} serves everything")


async def release_experiment(
    kube: KubeClient, body: Mapping[str, Any], logger: Logger, redis: RedisPool
) -> None:
    """On delete: end the split and drop the strategy override, when they are still this
    experiment's. The gateway's own routing (its spec) applies again."""
    _outcome_checked.pop(str(body["metadata"].get("uid")), None)
    status = body.get("status") or {}
    if not status.get("variantsFingerprint"):
        return  # it never wrote anything
    document = {key: value for key, value in body.items() if key != "status"}
    if validate_custom_resource(document, _CRD):
        return
    experiment = RoutingExperiment.model_validate(apply_defaults(document, _SCHEMA))
    admin = await _connect(kube, experiment, redis)
    if admin is None:
        return
    live = await _redis_call(body, "reading the split", admin.client.hgetall(admin.keys.ab_weights))
    try:
        current = sorted(decode_variants(live), key=lambda v: v.name)
    except StateError:
        current = []
    serving = status.get("servingVariant")
    ours = [sorted(variant_specs(experiment.spec), key=lambda v: v.name)]
    if serving:
        ours.append(variant_specs(experiment.spec, serving=serving))
    if current and current in ours:
        await _redis_call(body, "ending the split", admin.set_weights([]))
        logger.info("split ended: the gateway's own routing applies")
    active = (status.get("promotion") or {}).get("activeStrategy")
    if active is not None:
        value = await _redis_call(body, "reading the strategy", admin.client.get(admin.keys.active_strategy))
        if value is not None and as_text(value) == active:
            await _redis_call(body, "dropping the strategy override", admin.set_active_strategy(None))
            logger.info(f"strategy override {active} dropped")
    await _touch_gateway(kube, experiment, logger)


async def _touch_gateway(kube: KubeClient, experiment: RoutingExperiment, logger: Logger) -> None:
    """Reconcile the experiment's gateway now (its pods' variant models follow the experiments)."""
    from routeiq_operator.gateway.controller import reconcile_gateway

    gateway = await kube.get(
        "RouteIQGateway", experiment.metadata.namespace, experiment.spec.gateway_ref.name
    )
    if gateway is not None and not gateway["metadata"].get("deletionTimestamp"):
        await reconcile_gateway(kube, gateway, logger)
