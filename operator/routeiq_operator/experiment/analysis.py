"""The statistics of a `RoutingExperiment`: an always-valid sequential test and the verdict.

The controller reads every variant's counters once per `analysis.intervalSeconds` and calls
`evaluate` for each candidate against the control. Because it looks at the data again and again,
a fixed-horizon test (a z-test compared with alpha at every look) would declare a winner far more
often than alpha. The test here is the mixture sequential probability ratio test (mSPRT) of
Johari, Pekelis & Walsh, "Always valid inference: continuous monitoring of A/B tests" (2017/2022),
the method behind Optimizely's "always valid p-values": its p-value may be looked at after every
request and still has P(p_n <= alpha at any n | no difference) <= alpha.

Pure functions without I/O; docs/experiments-statistics.md explains the method for newcomers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from scipy.stats import norm

from routeiq_operator.experiment.api import Metric
from routeiq_router.state.counters import LATENCY_BUCKETS_MS, VariantCounters

__all__ = [
    "HIGHER_IS_BETTER",
    "ArmData",
    "Decision",
    "GuardrailLimit",
    "SequentialTest",
    "Verdict",
    "evaluate",
    "latency_threshold_ms",
    "mean_test",
    "metric_value",
    "msprt",
    "proportion_test",
    "sample_variance",
]

HIGHER_IS_BETTER: frozenset[Metric] = frozenset({Metric.FEEDBACK_SCORE})
"""Metrics where a larger value is an improvement; for all others lower is better."""


class Decision(StrEnum):
    """The three verdicts of Argo Rollouts' analysis, and "look again at the next interval"."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"
    INCONCLUSIVE = "inconclusive"
    CONTINUE = "continue"


@dataclass(frozen=True, slots=True)
class ArmData:
    """What one variant has seen so far. Sums are over requests (or feedback events for feedback).

    `latency_buckets` maps an upper bound in ms (one of `LATENCY_BUCKETS_MS`) to the number of
    requests in that bucket (not cumulative), as in `ab:counters`. Cost and feedback need either a
    sum of squares or a variance estimate for the test; without one their test cannot run.
    """

    requests: int
    errors: int = 0
    latency_buckets: Mapping[float, int] = field(default_factory=dict)
    cost_usd_sum: float = 0.0
    cost_usd_sum_sq: float | None = None
    cost_usd_variance: float | None = None
    feedback_count: int = 0
    feedback_sum: float = 0.0
    feedback_sum_sq: float | None = None
    feedback_variance: float | None = None

    @classmethod
    def from_counters(cls, counters: VariantCounters) -> ArmData:
        """The fields `ab:counters` carries. A cost sum without its sum of squares (a gateway older
        than the `cost_microusd_sq` counter) leaves the cost test without a variance."""
        return cls(
            requests=counters.requests,
            errors=counters.errors,
            latency_buckets=dict(counters.latency_buckets),
            cost_usd_sum=counters.cost_usd,
            # squares of micro-dollars: the variance of the cost per request
            cost_usd_sum_sq=(
                counters.cost_microusd_sq / 1e12
                if counters.cost_microusd_sq or not counters.cost_microusd
                else None
            ),
            feedback_count=counters.feedback_count,
            feedback_sum=counters.feedback_milli_sum / 1e3,
            feedback_sum_sq=counters.feedback_milli_sq / 1e6,
        )

    @property
    def latency_count(self) -> int:
        return sum(self.latency_buckets.values())

    def slower_than(self, threshold_ms: float) -> int:
        """Requests whose latency bucket lies wholly above `threshold_ms` (a bucket bound)."""
        return sum(count for bound, count in self.latency_buckets.items() if bound > threshold_ms)

    def p95_latency_ms(self) -> float | None:
        return VariantCounters(latency_buckets=dict(self.latency_buckets)).quantile(0.95)


@dataclass(frozen=True, slots=True)
class GuardrailLimit:
    """`spec.guardrails[]`: the candidate's value of `metric` must not exceed `max`."""

    metric: Metric
    max: float


@dataclass(frozen=True, slots=True)
class SequentialTest:
    """One look of an mSPRT on the difference `estimate` = candidate - control."""

    estimate: float
    variance: float  # of the estimate, used in the likelihood ratio
    tau: float  # standard deviation of the normal mixing distribution
    log_likelihood_ratio: float  # log Lambda_n
    p_value: float  # always-valid, monotone if the previous one was passed in
    ci_low: float  # always-valid (1 - alpha) confidence interval for the difference
    ci_high: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `evaluate` decided, with the numbers for the experiment's status."""

    verdict: Decision
    message: str
    metric: Metric
    samples: dict[str, int]
    statistic: float | None = None  # log Lambda_n of the mSPRT
    p_value: float | None = None  # always-valid p-value, the sequential equivalent of a p-value
    control_value: float | None = None
    candidate_value: float | None = None
    effect: float | None = None  # candidate - control, in the tested quantity's units
    effect_low: float | None = None  # always-valid confidence interval for `effect`
    effect_high: float | None = None
    relative_effect: float | None = None  # effect / control_value
    guardrail: Metric | None = None  # the breached guardrail, for a rollback on one


def msprt(
    estimate: float,
    variance: float,
    tau: float,
    alpha: float,
    *,
    previous_p_value: float | None = None,
    ci_variance: float | None = None,
) -> SequentialTest:
    """The normal-mixture mSPRT of H0: theta = 0 for an asymptotically normal estimate of theta.

    With theta_hat ~ N(theta, V) and the mixing distribution theta ~ N(0, tau^2) under the
    alternative (Johari, Pekelis & Walsh 2017, eq. 11; Robbins 1970), the mixture likelihood
    ratio is the ratio of the two marginal densities of theta_hat:

        Lambda_n = N(theta_hat; 0, V + tau^2) / N(theta_hat; 0, V)
                 = sqrt(V / (V + tau^2)) * exp(tau^2 * theta_hat^2 / (2 V (V + tau^2))),

    computed here as a difference of `scipy.stats.norm.logpdf`. Lambda_n is a martingale under H0,
    so by Ville's inequality P(sup_n Lambda_n >= 1/alpha) <= alpha, and the always-valid p-value

        p_n = min(p_{n-1}, 1 / Lambda_n),  p_0 = 1

    may be compared with alpha at every look. Inverting the test at every theta_0 gives the
    always-valid confidence interval theta_hat +- sqrt(V (V + tau^2) / tau^2 * (log((V + tau^2) / V)
    - 2 log alpha)), with `ci_variance` (default `variance`) as V.

    A variance of zero (no variation seen yet) is no evidence: log Lambda = 0, p unchanged.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be within (0, 1) (got {alpha})")
    if tau <= 0:
        raise ValueError(f"tau must be positive (got {tau})")
    previous = 1.0 if previous_p_value is None else previous_p_value
    if variance <= 0 or not math.isfinite(variance):
        return SequentialTest(estimate, variance, tau, 0.0, previous, -math.inf, math.inf)
    log_lr = float(
        norm.logpdf(estimate, loc=0.0, scale=math.sqrt(variance + tau**2))
        - norm.logpdf(estimate, loc=0.0, scale=math.sqrt(variance))
    )
    p_value = min(previous, 1.0, math.exp(-log_lr) if log_lr > -700 else 1.0)
    v = variance if ci_variance is None or ci_variance <= 0 else ci_variance
    half_width = math.sqrt(v * (v + tau**2) / tau**2 * (math.log((v + tau**2) / v) - 2 * math.log(alpha)))
    return SequentialTest(
        estimate, variance, tau, log_lr, p_value, estimate - half_width, estimate + half_width
    )


def proportion_test(
    successes_control: int,
    n_control: int,
    successes_candidate: int,
    n_candidate: int,
    *,
    tau: float,
    alpha: float,
    previous_p_value: float | None = None,
) -> SequentialTest:
    """mSPRT for the difference of two proportions (candidate - control), e.g. error rates.

    The test's variance is the pooled Bernoulli estimate p(1 - p)(1/n_A + 1/n_B), p = all events over
    all trials (the variance under H0); the confidence interval uses the unpooled
    p_A(1 - p_A)/n_A + p_B(1 - p_B)/n_B, which is right away from H0 as well.
    """
    if n_control <= 0 or n_candidate <= 0:
        raise ValueError("both arms need at least one sample")
    p_a = successes_control / n_control
    p_b = successes_candidate / n_candidate
    pooled = (successes_control + successes_candidate) / (n_control + n_candidate)
    variance = pooled * (1 - pooled) * (1 / n_control + 1 / n_candidate)
    unpooled = p_a * (1 - p_a) / n_control + p_b * (1 - p_b) / n_candidate
    return msprt(
        p_b - p_a,
        variance,
        tau,
        alpha,
        previous_p_value=previous_p_value,
        ci_variance=unpooled if unpooled > 0 else None,
    )


def sample_variance(n: int, total: float, total_sq: float) -> float:
    """The unbiased sample variance from a count, a sum and a sum of squares (0 below two samples)."""
    if n < 2:
        return 0.0
    return max(0.0, (total_sq - total * total / n) / (n - 1))


def mean_test(
    n_control: int,
    mean_control: float,
    variance_control: float,
    n_candidate: int,
    mean_candidate: float,
    variance_candidate: float,
    *,
    tau: float,
    alpha: float,
    previous_p_value: float | None = None,
) -> SequentialTest:
    """mSPRT for the difference of two means (candidate - control) with per-arm variances:
    V = s_A^2 / n_A + s_B^2 / n_B (unpooled, as in Welch's test and Optimizely's stats engine)."""
    if n_control <= 0 or n_candidate <= 0:
        raise ValueError("both arms need at least one sample")
    variance = variance_control / n_control + variance_candidate / n_candidate
    return msprt(mean_candidate - mean_control, variance, tau, alpha, previous_p_value=previous_p_value)


def latency_threshold_ms(buckets: Mapping[float, int], q: float = 0.95) -> float | None:
    """The smallest finite bucket bound at or above the q-quantile of `buckets`, or None.

    The p95 latency is tested as the share of requests slower than this bound (see
    docs/experiments-statistics.md): compute it once from the control and keep it for the run.
    """
    quantile = VariantCounters(latency_buckets=dict(buckets)).quantile(q)
    if quantile is None:
        return None
    finite = [bound for bound in LATENCY_BUCKETS_MS if not math.isinf(bound)]
    for bound in finite:
        if quantile <= bound:
            return bound
    return finite[-1]


def metric_value(metric: Metric, arm: ArmData) -> float | None:
    """The arm's point estimate of `metric` (the p95 in ms for p95 latency), None without data."""
    if metric is Metric.ERROR_RATE:
        return arm.errors / arm.requests if arm.requests else None
    if metric is Metric.P95_LATENCY:
        return arm.p95_latency_ms()
    if metric is Metric.COST_PER_REQUEST:
        return arm.cost_usd_sum / arm.requests if arm.requests else None
    return arm.feedback_sum / arm.feedback_count if arm.feedback_count else None


def _samples(metric: Metric, arm: ArmData) -> int:
    if metric is Metric.P95_LATENCY:
        return arm.latency_count
    if metric is Metric.FEEDBACK_SCORE:
        return arm.feedback_count
    return arm.requests


def _variance(n: int, total: float, total_sq: float | None, variance: float | None) -> float | None:
    if variance is not None:
        return variance
    if total_sq is not None:
        return sample_variance(n, total, total_sq)
    return None


@dataclass(frozen=True, slots=True)
class _Tested:
    """The quantity the test runs on: the per-arm estimates and both arms together."""

    control: float
    candidate: float
    pooled: float
    description: str


def _prepare(
    metric: Metric, control: ArmData, candidate: ArmData, threshold_ms: float | None
) -> tuple[_Tested, tuple[int, int, int, int] | None, tuple[float, float] | None] | str:
    """(estimates, proportion counts or None, per-arm variances or None), or why it cannot run."""
    if metric is Metric.ERROR_RATE:
        counts = (control.errors, control.requests, candidate.errors, candidate.requests)
        what = "error rate"
    elif metric is Metric.P95_LATENCY:
        if threshold_ms is None:
            return "no latency observed in the control yet"
        counts = (
            control.slower_than(threshold_ms),
            control.latency_count,
            candidate.slower_than(threshold_ms),
            candidate.latency_count,
        )
        what = f"share of requests slower than {threshold_ms:g} ms"
    else:
        if metric is Metric.COST_PER_REQUEST:
            n_a, n_b = control.requests, candidate.requests
            sums = (control.cost_usd_sum, candidate.cost_usd_sum)
            var_a = _variance(n_a, sums[0], control.cost_usd_sum_sq, control.cost_usd_variance)
            var_b = _variance(n_b, sums[1], candidate.cost_usd_sum_sq, candidate.cost_usd_variance)
            what = "cost per request (USD)"
        else:
            n_a, n_b = control.feedback_count, candidate.feedback_count
            sums = (control.feedback_sum, candidate.feedback_sum)
            var_a = _variance(n_a, sums[0], control.feedback_sum_sq, control.feedback_variance)
            var_b = _variance(n_b, sums[1], candidate.feedback_sum_sq, candidate.feedback_variance)
            what = "feedback score"
        if var_a is None or var_b is None:
            return f"no variance estimate for the {what} (needs a sum of squares or a variance)"
        tested = _Tested(sums[0] / n_a, sums[1] / n_b, (sums[0] + sums[1]) / (n_a + n_b), what)
        return tested, None, (var_a, var_b)
    e_a, n_a, e_b, n_b = counts
    tested = _Tested(e_a / n_a, e_b / n_b, (e_a + e_b) / (n_a + n_b), what)
    return tested, counts, None


def _guardrail_breach(
    guardrails: Sequence[GuardrailLimit], candidate: ArmData, min_samples: int
) -> tuple[GuardrailLimit, float] | None:
    for guardrail in guardrails:
        if _samples(guardrail.metric, candidate) < min_samples:
            continue
        value = metric_value(guardrail.metric, candidate)
        if value is not None and value > guardrail.max:
            return guardrail, value
    return None


def evaluate(
    control: ArmData,
    candidate: ArmData,
    *,
    metric: Metric = Metric.ERROR_RATE,
    significance_level: float = 0.05,
    minimum_detectable_effect: float = 0.05,
    min_samples_per_variant: int = 1000,
    elapsed_seconds: float = 0.0,
    max_duration_seconds: float = 604800.0,
    guardrails: Sequence[GuardrailLimit] = (),
    guardrail_min_samples: int = 100,
    previous_p_value: float | None = None,
    latency_threshold: float | None = None,
    tau: float | None = None,
    control_name: str = "control",
    candidate_name: str = "candidate",
) -> Verdict:
    """The verdict on one candidate against the control at one look. In this order:

    1. a guardrail of the candidate beyond its `max`, once the candidate has `guardrail_min_samples`
       samples of that metric: ROLLBACK at once, naming the guardrail;
    2. fewer than `min_samples_per_variant` samples in either arm: CONTINUE (INCONCLUSIVE at the
       maximum duration);
    3. the mSPRT on `metric` (always-valid p-value, monotone through `previous_p_value`): if
       p <= alpha, PROMOTE when the candidate is better in the metric's direction (lower error rate,
       latency and cost; higher feedback), ROLLBACK when it is worse;
    4. futility: the always-valid confidence interval lies inside (-MDE, +MDE), the MDE being
       |control value| * `minimum_detectable_effect` (which is relative): a change as large as the
       MDE is ruled out in both directions, so neither a promotion nor a rollback for a worthwhile
       effect can come: INCONCLUSIVE. Under a true effect of at least the MDE this happens with
       probability at most alpha, however often it is looked at. (Ruling out only the improvement
       would stop a clearly worse candidate as inconclusive before its rollback is significant.);
    5. at `max_duration_seconds`: INCONCLUSIVE; otherwise CONTINUE.

    `tau`, the mixing standard deviation, defaults to the absolute MDE (the effect size the test is
    most sensitive to). For p95 latency the tested quantity is the share of requests slower than
    `latency_threshold` (a bucket bound; by default `latency_threshold_ms` of the control).
    """
    samples = {control_name: _samples(metric, control), candidate_name: _samples(metric, candidate)}
    breach = _guardrail_breach(guardrails, candidate, guardrail_min_samples)
    if breach is not None:
        guardrail, value = breach
        return Verdict(
            Decision.ROLLBACK,
            f"guardrail {guardrail.metric.value} breached: {candidate_name} at {value:.6g} "
            f"exceeds the maximum {guardrail.max:g}; all traffic back to {control_name}",
            metric,
            samples,
            p_value=previous_p_value,
            guardrail=guardrail.metric,
        )
    out_of_time = elapsed_seconds >= max_duration_seconds
    if min(samples.values()) < min_samples_per_variant:
        if out_of_time:
            return Verdict(
                Decision.INCONCLUSIVE,
                f"maximum duration reached before {min_samples_per_variant} samples per variant",
                metric,
                samples,
                p_value=previous_p_value,
            )
        return Verdict(
            Decision.CONTINUE,
            f"waiting for {min_samples_per_variant} samples per variant",
            metric,
            samples,
            p_value=previous_p_value,
        )
    threshold = latency_threshold
    if metric is Metric.P95_LATENCY and threshold is None:
        threshold = latency_threshold_ms(control.latency_buckets)
    prepared = _prepare(metric, control, candidate, threshold)
    if isinstance(prepared, str):
        decision = Decision.INCONCLUSIVE if out_of_time else Decision.CONTINUE
        return Verdict(decision, prepared, metric, samples, p_value=previous_p_value)
    tested, counts, variances = prepared
    baseline = abs(tested.control) if tested.control != 0 else abs(tested.pooled)
    mde = minimum_detectable_effect * baseline
    mixing = tau if tau is not None else mde
    if mixing <= 0:
        decision = Decision.INCONCLUSIVE if out_of_time else Decision.CONTINUE
        return Verdict(
            decision,
            f"no {tested.description} observed yet to size the test",
            metric,
            samples,
            p_value=previous_p_value,
        )
    alpha = significance_level
    if counts is not None:
        test = proportion_test(*counts, tau=mixing, alpha=alpha, previous_p_value=previous_p_value)
    else:
        assert variances is not None
        test = mean_test(
            samples[control_name],
            tested.control,
            variances[0],
            samples[candidate_name],
            tested.candidate,
            variances[1],
            tau=mixing,
            alpha=alpha,
            previous_p_value=previous_p_value,
        )
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0  # improvement = sign * (candidate - control)
    improvement = sign * test.estimate
    largest_change = max(abs(test.ci_low), abs(test.ci_high))
    relative = test.estimate / tested.control if tested.control != 0 else None
    summary = (
        f"{tested.description}: {control_name} {tested.control:.6g}, {candidate_name} "
        f"{tested.candidate:.6g}, difference {test.estimate:+.6g} "
        f"[{test.ci_low:+.6g}, {test.ci_high:+.6g}], always-valid p {test.p_value:.4g}"
    )
    if test.p_value <= alpha and improvement > 0:
        decision, why = Decision.PROMOTE, f"{candidate_name} is significantly better"
    elif test.p_value <= alpha and improvement < 0:
        decision, why = Decision.ROLLBACK, f"{candidate_name} is significantly worse"
    elif largest_change < mde:
        decision, why = Decision.INCONCLUSIVE, f"a change as large as the MDE ({mde:.6g}) is ruled out"
    elif out_of_time:
        decision, why = Decision.INCONCLUSIVE, "maximum duration reached without a significant difference"
    else:
        decision, why = Decision.CONTINUE, "no significant difference yet"
    return Verdict(
        decision,
        f"{why}; {summary}",
        metric,
        samples,
        statistic=test.log_likelihood_ratio,
        p_value=test.p_value,
        control_value=tested.control,
        candidate_value=tested.candidate,
        effect=test.estimate,
        effect_low=test.ci_low,
        effect_high=test.ci_high,
        relative_effect=relative,
    )
