"""The pure parts of running a `RoutingExperiment`: the run's identity, the split that goes to
Redis, one look at the counters (`analyze`: every candidate judged against the control by
`routeiq_operator.experiment.analysis`, combined into one decision) and what status reports about
it. No I/O: `routeiq_operator.experiment.controller` reads Redis and the API and writes status.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

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
from routeiq_router.state.counters import VariantCounters
from routeiq_router.state.store import VariantSpec

__all__ = [
    "Analysis",
    "analyze",
    "fingerprint",
    "git_change",
    "parse_time",
    "pending_status",
    "previous_p_values",
    "stamp",
    "unnamed",
    "variant_specs",
    "weights_after",
]


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


def _spec_of(variant: Variant, weight: float, experiment: str) -> VariantSpec:
    return VariantSpec(
        name=variant.name,
        strategy=variant.strategy.value,
        weight=weight,
        model_group=variant.model_group,
        model=variant.model_artifact_ref.name if variant.model_artifact_ref else None,
        experiment=experiment,
    )


def variant_specs(experiment: RoutingExperiment, serving: str | None = None) -> list[VariantSpec]:
    """What goes to `ab:weights`: every variant at its weight, or only `serving` at 100; each
    names the experiment (the gateway's split metrics carry it)."""
    name, spec = experiment.metadata.name, experiment.spec
    if serving is not None:
        return [_spec_of(v, 100, name) for v in spec.variants if v.name == serving]
    return [_spec_of(v, v.weight, name) for v in spec.variants]


def unnamed(specs: Iterable[VariantSpec]) -> list[VariantSpec]:
    """`specs` by name, without the experiment's name: a split written before variants named
    their experiment is still recognised as this experiment's."""
    return sorted((replace(v, experiment=None) for v in specs), key=lambda v: v.name)


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
    """Judge every candidate against the control at alpha / (number of candidates) (Bonferroni);
    a breached guardrail rolls back, the promoted candidate with the largest effect wins."""
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


def weights_after(variants: list[dict[str, Any]], serving: str) -> list[dict[str, Any]]:
    """`status.variants` once a verdict is carried out: `serving` at 100, the others at 0."""
    return [{**item, "weight": 100 if item["name"] == serving else 0} for item in variants]


def git_change(namespace: str, gateway: str, variant: Variant) -> str:
    """`status.promotion.gitChange`: what to change in Git to keep the winner."""
    fields = [f"spec.routing.strategy: {variant.strategy.value}"]
    if variant.model_artifact_ref is not None:
        fields.append(f"spec.routing.modelArtifactRef.name: {variant.model_artifact_ref.name}")
    text = f"in RouteIQGateway {namespace}/{gateway} set " + ", ".join(fields)
    if variant.model_group is not None:
        text += f"; route model group {variant.model_group!r} as this variant did"
    return text + ", then delete this RoutingExperiment"


def previous_p_values(status: Mapping[str, Any]) -> dict[str, float]:
    """Every candidate's last always-valid p-value, as status holds it."""
    return {
        str(item["name"]): float(item["pValue"])
        for item in status.get("variants") or []
        if item.get("pValue") is not None
    }


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pending_status(
    previous: Mapping[str, Any], reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    """The status of an experiment that cannot run yet: a False Ready condition says why."""
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
