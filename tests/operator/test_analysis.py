"""The experiment statistics: always-valid error rates under peeking, power, futility, guardrails."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from scipy.stats import norm

from routeiq_operator.experiment.analysis import (
    ArmData,
    Decision,
    GuardrailLimit,
    evaluate,
    latency_threshold_ms,
    msprt,
    proportion_test,
)
from routeiq_operator.experiment.api import Metric
from routeiq_router.state.counters import parse_counters

ALPHA = 0.05
RUNS = 500
STEP = 200  # requests per arm between two looks
LOOKS = 50  # up to 10,000 requests per arm
TOLERANCE = 0.07  # alpha + two binomial standard deviations over RUNS experiments (sd ~ 0.0097)


def _simulate(
    p_control: float, p_candidate: float, mde: float, *, seed: int, runs: int = RUNS
) -> list[tuple[Decision, int]]:
    """Experiments on error rates looked at every STEP requests per arm; (verdict, samples per arm)."""
    rng = np.random.default_rng(seed)
    outcomes = []
    for _ in range(runs):
        errors_a = rng.binomial(STEP, p_control, LOOKS).cumsum()
        errors_b = rng.binomial(STEP, p_candidate, LOOKS).cumsum()
        previous: float | None = None
        outcome, n = Decision.CONTINUE, STEP * LOOKS
        for look in range(LOOKS):
            n = (look + 1) * STEP
            verdict = evaluate(
                ArmData(n, int(errors_a[look])),
                ArmData(n, int(errors_b[look])),
                significance_level=ALPHA,
                minimum_detectable_effect=mde,
                min_samples_per_variant=STEP,
                elapsed_seconds=look,
                max_duration_seconds=LOOKS - 1,  # the last look is at the maximum duration
                previous_p_value=previous,
            )
            previous = verdict.p_value
            if verdict.verdict is not Decision.CONTINUE:
                outcome = verdict.verdict
                break
        outcomes.append((outcome, n))
    return outcomes


def test_aa_experiments_stay_within_alpha_although_looked_at_every_interval() -> None:
    outcomes = _simulate(0.05, 0.05, mde=0.2, seed=20260601)
    promoted = sum(verdict is Decision.PROMOTE for verdict, _ in outcomes) / RUNS
    wrong = sum(verdict in (Decision.PROMOTE, Decision.ROLLBACK) for verdict, _ in outcomes) / RUNS
    assert promoted <= TOLERANCE
    assert wrong <= TOLERANCE  # two-sided: a rollback without a difference is an error too
    assert all(verdict is not Decision.CONTINUE for verdict, _ in outcomes)  # every run ends


def test_msprt_stays_within_alpha_where_a_peeked_fixed_horizon_test_does_not() -> None:
    """All 50 looks of every run (no futility stop): the mSPRT rejects at most alpha of the time,
    while a z-test compared with alpha at every look rejects far more often; this is the contrast
    the simulation must be able to see."""
    rng = np.random.default_rng(7)
    msprt_rejections = naive_rejections = 0
    for _ in range(RUNS):
        errors_a = rng.binomial(STEP, 0.05, LOOKS).cumsum()
        errors_b = rng.binomial(STEP, 0.05, LOOKS).cumsum()
        previous: float | None = None
        rejected = naive = False
        for look in range(LOOKS):
            n = (look + 1) * STEP
            test = proportion_test(
                int(errors_a[look]),
                n,
                int(errors_b[look]),
                n,
                tau=0.01,
                alpha=ALPHA,
                previous_p_value=previous,
            )
            previous = test.p_value
            rejected |= test.p_value <= ALPHA
            z = abs(test.estimate) / math.sqrt(test.variance)
            naive |= 2 * float(norm.sf(z)) <= ALPHA
        msprt_rejections += rejected
        naive_rejections += naive
    assert msprt_rejections / RUNS <= TOLERANCE
    assert naive_rejections / RUNS > 0.15


def test_a_clear_winner_is_promoted_in_most_runs_and_soon() -> None:
    p_control, p_candidate = 0.05, 0.03
    outcomes = _simulate(p_control, p_candidate, mde=0.2, seed=11, runs=200)
    promoted = [n for verdict, n in outcomes if verdict is Decision.PROMOTE]
    assert len(promoted) / len(outcomes) >= 0.9
    # a fixed-horizon two-sided test with 80 % power needs this many requests per arm; the
    # always-valid test pays for peeking with more, but not with many times more
    z = float(norm.ppf(1 - ALPHA / 2) + norm.ppf(0.8))
    variance = p_control * (1 - p_control) + p_candidate * (1 - p_candidate)
    fixed_horizon = z**2 * variance / (p_control - p_candidate) ** 2  # ~1,500
    assert fixed_horizon / 2 <= statistics.median(promoted) <= 3 * fixed_horizon


def test_a_clearly_worse_candidate_is_rolled_back_not_called_inconclusive() -> None:
    outcomes = _simulate(0.03, 0.05, mde=0.2, seed=12, runs=100)
    assert sum(verdict is Decision.ROLLBACK for verdict, _ in outcomes) >= 90


def test_a_tiny_effect_with_a_large_mde_ends_inconclusive_before_the_maximum_duration() -> None:
    outcomes = _simulate(0.05, 0.0495, mde=0.5, seed=13, runs=200)
    inconclusive = [n for verdict, n in outcomes if verdict is Decision.INCONCLUSIVE]
    assert len(inconclusive) / len(outcomes) >= 0.9
    assert statistics.median(inconclusive) < STEP * LOOKS / 2  # futility, not the maximum duration


def test_futility_names_the_mde() -> None:
    verdict = evaluate(ArmData(20000, 1000), ArmData(20000, 995), minimum_detectable_effect=0.5)
    assert verdict.verdict is Decision.INCONCLUSIVE
    assert "MDE" in verdict.message
    assert verdict.effect_low is not None
    assert verdict.effect_high is not None
    assert -0.025 < verdict.effect_low < verdict.effect_high < 0.025


def test_a_guardrail_breach_rolls_back_at_once_naming_the_guardrail() -> None:
    guardrails = [GuardrailLimit(Metric.P95_LATENCY, 2000), GuardrailLimit(Metric.ERROR_RATE, 0.1)]
    # far below min_samples_per_variant, and the primary metric (cost) could not even be tested
    verdict = evaluate(
        ArmData(150, 3),
        ArmData(150, 30, latency_buckets={500.0: 150}),
        metric=Metric.COST_PER_REQUEST,
        guardrails=guardrails,
        control_name="baseline",
        candidate_name="mlp",
    )
    assert verdict.verdict is Decision.ROLLBACK
    assert verdict.guardrail is Metric.ERROR_RATE
    assert "errorRate" in verdict.message
    assert "baseline" in verdict.message


def test_a_guardrail_wins_over_a_significant_improvement() -> None:
    slow: dict[float, int] = {100: 900, 5000: 100}  # p95 at 5,000 ms
    verdict = evaluate(
        ArmData(5000, 500),
        ArmData(1000, 10, latency_buckets=slow),
        min_samples_per_variant=1000,
        guardrails=[GuardrailLimit(Metric.P95_LATENCY, 2000)],
    )
    assert verdict.verdict is Decision.ROLLBACK
    assert verdict.guardrail is Metric.P95_LATENCY
    without = evaluate(
        ArmData(5000, 500), ArmData(1000, 10, latency_buckets=slow), min_samples_per_variant=1000
    )
    assert without.verdict is Decision.PROMOTE


def test_a_guardrail_waits_for_its_minimum_sample_count() -> None:
    verdict = evaluate(
        ArmData(50, 0),
        ArmData(50, 10),
        guardrails=[GuardrailLimit(Metric.ERROR_RATE, 0.1)],
        guardrail_min_samples=100,
    )
    assert verdict.verdict is Decision.CONTINUE
    assert verdict.samples == {"control": 50, "candidate": 50}


def _feedback(mean: float, n: int, rng: np.random.Generator) -> ArmData:
    scores = rng.normal(mean, 1.0, n)
    return ArmData(
        n,
        feedback_count=n,
        feedback_sum=float(scores.sum()),
        feedback_sum_sq=float((scores**2).sum()),
    )


def test_higher_feedback_is_better_and_lower_feedback_is_worse() -> None:
    rng = np.random.default_rng(3)
    low, high = _feedback(4.0, 5000, rng), _feedback(4.2, 5000, rng)
    better = evaluate(low, high, metric=Metric.FEEDBACK_SCORE)
    worse = evaluate(high, low, metric=Metric.FEEDBACK_SCORE)
    assert better.verdict is Decision.PROMOTE
    assert worse.verdict is Decision.ROLLBACK
    assert better.effect is not None
    assert better.effect > 0
    assert better.statistic is not None
    assert better.statistic > math.log(1 / ALPHA)


def test_lower_cost_is_better() -> None:
    rng = np.random.default_rng(4)
    costs_a, costs_b = rng.gamma(2.0, 0.0010, 5000), rng.gamma(2.0, 0.0008, 5000)

    def arm(costs: np.ndarray) -> ArmData:
        return ArmData(len(costs), cost_usd_sum=float(costs.sum()), cost_usd_sum_sq=float((costs**2).sum()))

    assert evaluate(arm(costs_a), arm(costs_b), metric=Metric.COST_PER_REQUEST).verdict is Decision.PROMOTE
    assert evaluate(arm(costs_b), arm(costs_a), metric=Metric.COST_PER_REQUEST).verdict is Decision.ROLLBACK


def test_cost_without_a_variance_estimate_waits_and_says_why() -> None:
    verdict = evaluate(
        ArmData(2000, cost_usd_sum=2.0), ArmData(2000, cost_usd_sum=1.0), metric=Metric.COST_PER_REQUEST
    )
    assert verdict.verdict is Decision.CONTINUE
    assert "variance" in verdict.message


def test_p95_latency_is_tested_as_the_share_of_slow_requests() -> None:
    raw = {"a:requests": 4000, "b:requests": 4000}
    raw |= {"a:latency_bucket:250": 3600, "a:latency_bucket:1000": 400}  # 10 % above 250 ms
    raw |= {"b:latency_bucket:250": 3880, "b:latency_bucket:1000": 120}  # 3 % above 250 ms
    arms = {name: ArmData.from_counters(counters) for name, counters in parse_counters(raw).items()}
    assert latency_threshold_ms(arms["a"].latency_buckets) == 1000  # p95 inside (250, 1000]
    faster = evaluate(arms["a"], arms["b"], metric=Metric.P95_LATENCY, latency_threshold=250)
    assert faster.verdict is Decision.PROMOTE
    assert "slower than 250 ms" in faster.message
    slower = evaluate(arms["b"], arms["a"], metric=Metric.P95_LATENCY, latency_threshold=250)
    assert slower.verdict is Decision.ROLLBACK


def test_p_values_are_monotone_although_the_evidence_fades() -> None:
    """A lucky start followed by equal rates: 1/Lambda goes back up, the p-value must not."""
    previous: float | None = None
    p_values, raw = [], []
    errors_a = errors_b = 0
    for look in range(1, 40):
        errors_a += 10 if look <= 5 else 5  # 5 % then 2.5 % per 200
        errors_b += 2 if look <= 5 else 5
        n = look * STEP
        verdict = evaluate(
            ArmData(n, errors_a),
            ArmData(n, errors_b),
            significance_level=1e-9,  # never decide, only watch the p-value
            minimum_detectable_effect=0.2,
            min_samples_per_variant=10,
            previous_p_value=previous,
        )
        assert verdict.p_value is not None
        assert verdict.statistic is not None
        previous = verdict.p_value
        p_values.append(verdict.p_value)
        raw.append(min(1.0, math.exp(-verdict.statistic)))
    assert all(later <= earlier for earlier, later in itertools.pairwise(p_values))
    assert any(later > earlier for earlier, later in itertools.pairwise(raw))  # it did fade
    assert p_values[-1] < raw[-1]


@pytest.mark.parametrize(
    ("estimate", "variance", "tau"), [(0.01, 1e-5, 0.005), (-0.3, 0.02, 0.1), (0.0, 1.0, 2.0)]
)
def test_msprt_matches_the_closed_form_and_its_interval(estimate: float, variance: float, tau: float) -> None:
    test = msprt(estimate, variance, tau, ALPHA)
    closed = math.sqrt(variance / (variance + tau**2)) * math.exp(
        tau**2 * estimate**2 / (2 * variance * (variance + tau**2))
    )
    assert test.log_likelihood_ratio == pytest.approx(math.log(closed))
    assert test.p_value == pytest.approx(min(1.0, 1 / closed))
    # duality: the interval excludes 0 exactly when the always-valid p-value is below alpha
    assert (test.p_value <= ALPHA) == (not test.ci_low <= 0 <= test.ci_high)
    assert test.ci_low < estimate < test.ci_high


def test_minimum_samples_then_maximum_duration() -> None:
    assert evaluate(ArmData(999, 50), ArmData(5000, 10)).verdict is Decision.CONTINUE
    late = evaluate(ArmData(999, 50), ArmData(5000, 10), elapsed_seconds=604800)
    assert late.verdict is Decision.INCONCLUSIVE
    undecided = evaluate(ArmData(2000, 100), ArmData(2000, 98), elapsed_seconds=604800)
    assert undecided.verdict is Decision.INCONCLUSIVE
    assert "maximum duration" in undecided.message
