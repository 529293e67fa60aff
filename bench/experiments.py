"""RoutingExperiment statistics: samples to a verdict, RouteIQ's sequential test against fixed horizons.

Part `verdicts`. Two variants with Bernoulli outcomes (an error or not): the
control's error rate is p (default 5 %), the candidate's p * (1 + effect) for each effect (relative
change, default -40 %, -30 %, -20 %, -10 %, 0 %, +20 %). Every seeded run (`--runs`, default 300
per effect) draws, per arm, the binomial number of errors in each block of `--look` requests
(default 100 per arm), so the data of a run is its errors per look, from which every method reads;
all methods see the same runs. Per effect and method the table gives the share of runs ending in
promote / rollback / inconclusive / none (no verdict by the cap, `--max-samples` per arm) and the
median and p90 samples per arm at the verdict (a run without one counts as the cap; a percentile that
falls on such a run prints as ">cap").

  * RouteIQ sequential: `routeiq_operator.experiment.analysis.evaluate` on the error rate at every look, with
    `--alpha`, `--mde` (relative) and `--min-samples`, the previous look's always-valid p-value passed
    back as `previous_p_value` (as the controller does), until it returns anything but `continue`
    (promote / rollback on an always-valid p <= alpha, inconclusive by futility), or the cap.
  * z-test, fixed horizon (the baseline): the two-sided pooled two-proportion z-test, sized in advance
    for `--power` (80 %) to detect a drop of the error rate by the MDE,
        n = (z_{1-alpha/2} sqrt(2 pbar (1 - pbar)) + z_{power} sqrt(p1 q1 + p2 q2))^2 / (p1 - p2)^2
    per arm (p1 = p, p2 = p (1 - MDE), pbar their mean; printed), analysed once with exactly n
    samples per arm (the errors among the samples of the block that straddles n, up to n, are drawn
    hypergeometrically from that block's count): promote or rollback if |z| >= z_{1-alpha/2}, else inconclusive.
  * z-test peeked, to the horizon: the same z-test at every look from `--min-samples` on, stopping at
    the first |z| >= z_{1-alpha/2}, inconclusive at the horizon otherwise (what a dashboard that
    shows a p-value every interval leads to);
  * z-test peeked, to the cap: the same, looking until the cap (the sequential test's budget).

At 0 % effect every promote or rollback is a false positive: the sequential test keeps their rate
under alpha however often it looks; the peeked z-test does not. Normal quantiles are scipy.stats.norm.

Run it from the repository root:

    .venv/bin/python bench/experiments.py
    .venv/bin/python bench/experiments.py --runs 100 --effects=-30,0 --max-samples 20000   # quick (note the =)

Part 2, `--part cost`: the operator's analysis cost with `--experiments` (100) running experiments.
A redis-server is started; each experiment's gateway gets a two-variant split (`StateAdmin`) and
counters as a busy gateway's workers leave them (requests, errors, latency buckets, tokens, cost and
its squares, feedback). One analysis pass does, per experiment, what `reconcile_experiment` does
between its Kubernetes reads and its status write: read `ab:weights` and `ab:counters`, parse them,
and `analyze` (Wilson intervals, the mSPRT per candidate, the verdict). The passes run the 100
experiments concurrently on one event loop, as kopf's timers do. Reported: the median pass, the cost
per experiment, how it splits between Redis and statistics, and the share of one core the operator
spends on analysis at the default interval (60 s). There is no third-party baseline for this part;
the yardstick is the analysis interval.

`--part all` (the default) runs both parts. The script exits 0 whatever the results (it is a
benchmark, not a test); only bad options exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _src in (ROOT / "router", ROOT / "operator"):  # runnable without installing the packages
    if str(_src) not in sys.path:
        sys.path.insert(0, str(_src))

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
from scipy.stats import norm  # noqa: E402

from local_redis import LocalRedis, redis_version  # noqa: E402
from routeiq_operator.experiment.analysis import ArmData, Decision, evaluate  # noqa: E402
from routeiq_operator.experiment.api import Metric  # noqa: E402

SEQUENTIAL = "RouteIQ sequential"
FIXED = "z-test fixed horizon"
PEEK_HORIZON = "z-test peeked to horizon"
PEEK_CAP = "z-test peeked to cap"
METHODS: tuple[str, ...] = (SEQUENTIAL, FIXED, PEEK_HORIZON, PEEK_CAP)
NONE = "none"  # no verdict by the cap
OUTCOMES: tuple[str, ...] = (
    Decision.PROMOTE.value,
    Decision.ROLLBACK.value,
    Decision.INCONCLUSIVE.value,
    NONE,
)

Counts = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Settings:
    """What one verdicts measurement runs with (picklable, sent to the worker processes)."""

    control_rate: float
    alpha: float
    mde: float  # relative
    power: float
    min_samples: int
    look: int  # samples per arm between looks
    max_samples: int  # the cap per arm, a multiple of `look`
    runs: int
    seed: int

    @property
    def z_critical(self) -> float:
        return float(norm.ppf(1 - self.alpha / 2))

    @property
    def horizon(self) -> int:
        return fixed_horizon(self.control_rate, self.mde, self.alpha, self.power)

    @property
    def simulated_looks(self) -> int:
        """Looks drawn per run: up to the cap, or to the horizon if that lies beyond it."""
        return max(self.max_samples, self.horizon + self.look - 1) // self.look


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one method ended one run: its decision (or NONE) and the samples per arm then."""

    decision: str
    samples: int


@dataclass(frozen=True, slots=True)
class Row:
    effect: float
    method: str
    shares: dict[str, float]  # outcome -> fraction of runs
    by_horizon: dict[str, float]  # outcome -> fraction of runs that ended so by the fixed horizon
    median: str
    p90: str


def fixed_horizon(control_rate: float, mde: float, alpha: float, power: float) -> int:
    """Per-arm sample size of a two-sided two-proportion z-test with `power` at a drop by `mde`."""
    p1, p2 = control_rate, control_rate * (1 - mde)
    pbar = (p1 + p2) / 2
    z_alpha, z_beta = float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))
    numerator = z_alpha * math.sqrt(2 * pbar * (1 - pbar)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(numerator**2 / (p1 - p2) ** 2)


def candidate_rate(settings: Settings, effect: float) -> float:
    return settings.control_rate * (1 + effect)


def run_rng(settings: Settings, effect: float, run: int) -> np.random.Generator:
    """A run's generator depends on the seed, the effect's value and the run index only."""
    return np.random.default_rng([settings.seed, round(effect * 10_000) + 1_000_000, run])


def draw_run(settings: Settings, effect: float, run: int) -> tuple[Counts, Counts]:
    """Cumulative errors per arm at every look (shape looks x 2: control, candidate), and the
    errors per arm among the first `horizon` samples."""
    rng = run_rng(settings, effect, run)
    rates = np.array([settings.control_rate, candidate_rate(settings, effect)])
    per_look = rng.binomial(settings.look, rates, size=(settings.simulated_looks, 2)).astype(np.int64)
    cumulative = np.cumsum(per_look, axis=0)
    full, partial = divmod(settings.horizon, settings.look)
    before = cumulative[full - 1] if full else np.zeros(2, dtype=np.int64)
    at_horizon = before.copy()
    if partial:  # errors among the first `partial` of the block's `look` samples, per arm
        block = per_look[full]
        at_horizon += rng.hypergeometric(block, settings.look - block, partial).astype(np.int64)
    return cumulative, at_horizon


def z_statistics(errors: Counts, samples: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Pooled two-proportion z (candidate - control) for equal arms; `errors` is (k, 2), `samples` (k,)."""
    n = samples.astype(np.float64)
    control, candidate = errors[:, 0].astype(np.float64), errors[:, 1].astype(np.float64)
    pooled = (control + candidate) / (2 * n)
    se = np.sqrt(pooled * (1 - pooled) * 2 / n)
    diff = (candidate - control) / n
    return np.divide(diff, se, out=np.zeros_like(diff), where=se > 0)


def z_decision(z: float) -> str:
    """Lower error rate is better: a significantly negative z promotes the candidate."""
    return Decision.PROMOTE.value if z < 0 else Decision.ROLLBACK.value


def sequential(settings: Settings, cumulative: Counts) -> Outcome:
    """`evaluate` at every look up to the cap, as the controller calls it."""
    previous: float | None = None
    for index in range(settings.max_samples // settings.look):
        n = (index + 1) * settings.look
        verdict = evaluate(
            ArmData(requests=n, errors=int(cumulative[index, 0])),
            ArmData(requests=n, errors=int(cumulative[index, 1])),
            metric=Metric.ERROR_RATE,
            significance_level=settings.alpha,
            minimum_detectable_effect=settings.mde,
            min_samples_per_variant=settings.min_samples,
            elapsed_seconds=0.0,
            max_duration_seconds=math.inf,  # the cap is counted in samples, below
            previous_p_value=previous,
        )
        if verdict.verdict is not Decision.CONTINUE:
            return Outcome(verdict.verdict.value, n)
        previous = verdict.p_value
    return Outcome(NONE, settings.max_samples)


def peeked(settings: Settings, cumulative: Counts, last_look: int, end: Outcome) -> Outcome:
    """The z-test at every look from `min_samples` to `last_look` (exclusive); `end` otherwise."""
    samples = np.arange(1, last_look + 1, dtype=np.int64) * settings.look
    eligible = samples >= settings.min_samples
    z = z_statistics(cumulative[:last_look], samples)
    hits = np.flatnonzero(eligible & (np.abs(z) >= settings.z_critical))
    if hits.size:
        first = int(hits[0])
        return Outcome(z_decision(float(z[first])), int(samples[first]))
    return end


def simulate(settings: Settings, effect: float, run: int) -> dict[str, Outcome]:
    """One run, every method on the same data."""
    cumulative, at_horizon = draw_run(settings, effect, run)
    horizon = settings.horizon
    z_fixed = float(z_statistics(at_horizon.reshape(1, 2), np.array([horizon], dtype=np.int64))[0])
    if abs(z_fixed) >= settings.z_critical:
        fixed = Outcome(z_decision(z_fixed), horizon)
    else:
        fixed = Outcome(Decision.INCONCLUSIVE.value, horizon)
    looks_before_horizon = (horizon - 1) // settings.look  # looks strictly before the horizon
    return {
        SEQUENTIAL: sequential(settings, cumulative),
        FIXED: fixed,
        PEEK_HORIZON: peeked(settings, cumulative, looks_before_horizon, fixed),
        PEEK_CAP: peeked(
            settings, cumulative, settings.max_samples // settings.look, Outcome(NONE, settings.max_samples)
        ),
    }


def simulate_chunk(task: tuple[Settings, float, int, int]) -> tuple[float, list[dict[str, Outcome]]]:
    """Runs [start, stop) of one effect (a unit of work for a worker process)."""
    settings, effect, start, stop = task
    return effect, [simulate(settings, effect, run) for run in range(start, stop)]


def percentile_label(outcomes: Sequence[Outcome], q: float, cap: int) -> str:
    """Nearest-rank percentile of the samples per arm; runs without a verdict sort last at the cap."""
    ordered = sorted(outcomes, key=lambda outcome: (outcome.samples, outcome.decision == NONE))
    chosen = ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1]
    return f">{cap}" if chosen.decision == NONE else str(chosen.samples)


def summarise(effect: float, method: str, outcomes: Sequence[Outcome], settings: Settings) -> Row:
    cap, horizon = settings.max_samples, settings.horizon
    tally = Counter(outcome.decision for outcome in outcomes)
    early = Counter(outcome.decision for outcome in outcomes if outcome.samples <= horizon)
    return Row(
        effect,
        method,
        {name: tally.get(name, 0) / len(outcomes) for name in OUTCOMES},
        {name: early.get(name, 0) / len(outcomes) for name in OUTCOMES},
        percentile_label(outcomes, 50, cap),
        percentile_label(outcomes, 90, cap),
    )


def measure(settings: Settings, effects: Sequence[float], jobs: int) -> list[Row]:
    chunk = max(1, math.ceil(settings.runs / (4 * jobs)))  # several chunks per worker: balanced load
    tasks = [
        (settings, effect, start, min(start + chunk, settings.runs))
        for effect in effects
        for start in range(0, settings.runs, chunk)
    ]
    results: dict[float, list[dict[str, Outcome]]] = {effect: [] for effect in effects}
    if jobs == 1:
        chunks = map(simulate_chunk, tasks)
        for effect, runs in chunks:
            results[effect].extend(runs)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for effect, runs in pool.map(simulate_chunk, tasks):  # in task order: reproducible
                results[effect].extend(runs)
    return [
        summarise(effect, method, [run[method] for run in results[effect]], settings)
        for effect in effects
        for method in METHODS
    ]


# ---- output -------------------------------------------------------------------------------------


def effect_label(effect: float) -> str:
    return f"{effect * 100:+.0f}%" if effect else "0%"


def print_table(rows: Sequence[Row]) -> None:
    header = (
        f"{'effect':>6}  {'method':<24}  {'promote %':>9}  {'rollback %':>10}  {'inconclusive %':>14}  "
        f"{'none %':>6}  {'median samples/arm':>18}  {'p90 samples/arm':>15}"
    )
    print(header)
    print("-" * len(header))
    previous: float | None = None
    for row in rows:
        if previous is not None and row.effect != previous:
            print()
        previous = row.effect
        shares = row.shares
        print(
            f"{effect_label(row.effect):>6}  {row.method:<24}  {100 * shares['promote']:>9.1f}  "
            f"{100 * shares['rollback']:>10.1f}  {100 * shares['inconclusive']:>14.1f}  "
            f"{100 * shares[NONE]:>6.1f}  {row.median:>18}  {row.p90:>15}"
        )


def print_summary(settings: Settings, rows: Sequence[Row]) -> None:
    by_key = {(row.effect, row.method): row for row in rows}
    nulls = [row for row in rows if row.effect == 0]
    if nulls:
        se = 100 * math.sqrt(settings.alpha * (1 - settings.alpha) / settings.runs)
        parts = [
            f"{row.method} {100 * (row.shares['promote'] + row.shares['rollback']):.1f}%" for row in nulls
        ]
        print(
            f"false positives at 0% (promote + rollback, alpha {100 * settings.alpha:g}%, "
            f"+-{se:.1f} pp standard error at alpha with {settings.runs} runs): " + "; ".join(parts)
        )
    for effect in sorted({row.effect for row in rows}):
        seq, fixed = by_key.get((effect, SEQUENTIAL)), by_key.get((effect, FIXED))
        if seq is None or fixed is None or effect == 0:
            continue
        good = "promote" if effect < 0 else "rollback"
        print(
            f"effect {effect_label(effect)}: correct verdict ({good}) sequential "
            f"{100 * seq.shares[good]:.1f}% at median {seq.median} / p90 {seq.p90} samples per arm "
            f"({100 * seq.by_horizon[good]:.1f}% by {settings.horizon}); fixed horizon "
            f"{100 * fixed.shares[good]:.1f}% at {fixed.median}"
        )


def sequential_vs_fixed(args: argparse.Namespace) -> None:
    """Part `verdicts`: decision rates and samples to a verdict, sequential vs fixed horizon."""
    settings = Settings(
        control_rate=args.control_rate,
        alpha=args.alpha,
        mde=args.mde,
        power=args.power,
        min_samples=args.min_samples,
        look=args.look,
        max_samples=args.max_samples,
        runs=args.runs,
        seed=args.seed,
    )
    horizon = settings.horizon
    print(
        f"error rate: control {100 * settings.control_rate:g}%, alpha {settings.alpha:g}, MDE "
        f"{100 * settings.mde:g}% relative ({100 * settings.control_rate:g}% -> "
        f"{100 * settings.control_rate * (1 - settings.mde):g}%), min samples per variant "
        f"{settings.min_samples}, a look every {settings.look} samples per arm, cap {settings.max_samples} "
        f"per arm, {settings.runs} runs per effect, seed {settings.seed}, {args.jobs} processes"
    )
    print(
        f"fixed horizon: {horizon} samples per arm for {100 * settings.power:g}% power at the MDE "
        f"(two-sided z-test, z_crit {settings.z_critical:.3f}); peeking to it = "
        f"{(horizon - 1) // settings.look} looks + the horizon, to the cap = "
        f"{settings.max_samples // settings.look} looks"
    )
    started = time.perf_counter()
    rows = measure(settings, args.effects, args.jobs)
    elapsed = time.perf_counter() - started
    print()
    print_table(rows)
    print()
    print(
        "  samples/arm: at the verdict; a run without one counts as the cap, and a percentile that falls "
        f"on such a run prints as >{settings.max_samples}"
    )
    print_summary(settings, rows)
    print(f"verdicts measured in {elapsed:.1f} s")


# ---- part 2: the operator's analysis cost ----------------------------------------------------------


def _seed_counters(rng: np.random.Generator, variant: str, requests: int) -> dict[str, int]:
    errors = int(rng.binomial(requests, 0.04))
    buckets = rng.multinomial(requests, [0.05, 0.15, 0.3, 0.3, 0.12, 0.05, 0.02, 0.01, 0, 0, 0, 0, 0])
    labels = [
        "25",
        "50",
        "100",
        "250",
        "500",
        "1000",
        "2500",
        "5000",
        "10000",
        "30000",
        "60000",
        "120000",
        "inf",
    ]
    costs = rng.gamma(2.0, 400.0, requests).round().astype(np.int64)  # micro-dollars per request
    scores = rng.integers(0, 2, requests // 10) * 1000  # thumbs up/down, in thousandths
    fields = {
        f"{variant}:requests": requests,
        f"{variant}:errors": errors,
        f"{variant}:latency_ms_sum": requests * 180,
        f"{variant}:prompt_tokens": requests * 300,
        f"{variant}:completion_tokens": requests * 120,
        f"{variant}:cost_microusd": int(costs.sum()),
        f"{variant}:cost_microusd_sq": int((costs * costs).sum()),
        f"{variant}:feedback_count": len(scores),
        f"{variant}:feedback_milli_sum": int(scores.sum()),
        f"{variant}:feedback_milli_sq": int((scores * scores).sum()),
    }
    fields.update(
        {f"{variant}:latency_bucket:{le}": int(n) for le, n in zip(labels, buckets, strict=True) if n}
    )
    return fields


async def _analysis_cost(args: argparse.Namespace) -> None:
    from redis.asyncio import Redis

    from routeiq_operator.experiment.api import RoutingExperiment
    from routeiq_operator.experiment.selection import analyze, variant_specs
    from routeiq_router.state.admin import StateAdmin
    from routeiq_router.state.counters import parse_counters
    from routeiq_router.state.keys import as_text
    from routeiq_router.state.store import decode_variants

    experiment = RoutingExperiment.model_validate(
        {
            "apiVersion": "routeiq.io/v1alpha1",
            "kind": "RoutingExperiment",
            "metadata": {"name": "bench", "namespace": "bench"},
            "spec": {
                "gatewayRef": {"name": "gw"},
                "control": "control",
                "variants": [
                    {"name": "control", "strategy": "round-robin", "weight": 50},
                    {"name": "candidate", "strategy": "least-busy", "weight": 50},
                ],
                "primaryMetric": {"type": args.metric},
                "guardrails": [{"metric": "errorRate", "max": 0.2}, {"metric": "p95Latency", "max": 5000}],
            },
        }
    )
    spec = experiment.spec
    rng = np.random.default_rng(args.seed)
    with LocalRedis() as server:
        client = Redis.from_url(server.url)
        try:
            admins = [StateAdmin(client, f"bench/gw-{index}") for index in range(args.experiments)]
            for admin in admins:
                await admin.set_weights(variant_specs(experiment), reset_counters=True)
                fields: dict[str, int] = {}
                for variant in ("control", "candidate"):
                    fields.update(_seed_counters(rng, variant, int(rng.integers(20_000, 80_000))))
                await client.hset(admin.keys.ab_counters, mapping=fields)  # type: ignore[arg-type]
            redis_seconds: list[float] = []
            stats_seconds: list[float] = []

            async def one(admin: StateAdmin, previous: dict[str, float]) -> str:
                started = time.perf_counter()
                weights = await client.hgetall(admin.keys.ab_weights)
                raw = await client.hgetall(admin.keys.ab_counters)
                fetched = time.perf_counter()
                decode_variants(weights)
                counters = parse_counters({as_text(k): int(v) for k, v in raw.items()})
                look = analyze(spec, counters, elapsed_seconds=3600.0, previous_p_values=previous)
                redis_seconds.append(fetched - started)
                stats_seconds.append(time.perf_counter() - fetched)
                return look.decision.value

            passes: list[float] = []
            cpu: list[float] = []  # this process's CPU time per pass (the operator's side, not Redis')
            decisions: dict[str, int] = {}
            for _ in range(args.passes):
                started, cpu_started = time.perf_counter(), time.process_time()
                results = await asyncio.gather(*(one(admin, {}) for admin in admins))
                passes.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
                for decision in results:
                    decisions[decision] = decisions.get(decision, 0) + 1
        finally:
            await client.aclose()
    median = statistics.median(passes)
    per_experiment = median / args.experiments
    print(
        f"redis-server {redis_version()}; {args.experiments} experiments, primary metric {args.metric}, {args.passes} passes"
    )
    print(
        f"  pass (all experiments, concurrently): median {1000 * median:.1f} ms, max {1000 * max(passes):.1f} ms"
    )
    print(f"  per experiment: {1000 * per_experiment:.2f} ms")
    print(
        f"    waiting for Redis (2 HGETALL, queued behind the other experiments): median "
        f"{1000 * statistics.median(redis_seconds):.2f} ms; "
        f"statistics (CPU): median {1000 * statistics.median(stats_seconds):.2f} ms"
    )
    cpu_median = statistics.median(cpu)
    print(f"  operator CPU per pass: median {1000 * cpu_median:.1f} ms")
    print(
        f"  one core's share at the default 60 s interval (CPU per pass / 60 s): {100 * cpu_median / 60:.3f} %"
    )
    print(f"  decisions seen: {dict(sorted(decisions.items()))}")


def analysis_cost(args: argparse.Namespace) -> None:
    asyncio.run(_analysis_cost(args))


PARTS: dict[str, Callable[[argparse.Namespace], None]] = {
    "verdicts": sequential_vs_fixed,
    "cost": analysis_cost,
}


# ---- command line -------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be within (0, 1), got {value}")
    return value


def effect_list(text: str) -> list[float]:
    """Comma-separated relative effects in percent, e.g. -40,-10,0,20."""
    try:
        effects = [float(part) / 100 for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated percentages: {text!r}") from error
    if not effects:
        raise argparse.ArgumentTypeError("no effects given")
    return list(dict.fromkeys(effects))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--part",
        choices=["all", *PARTS],
        default="all",
        help="which measurement: verdicts (sequential vs fixed horizon), cost (the operator's analysis "
        "cost with --experiments running experiments) or all (default: %(default)s)",
    )
    parser.add_argument(
        "--control-rate", type=fraction, default=0.05, help="control error rate (default: %(default)s)"
    )
    parser.add_argument(
        "--effects",
        type=effect_list,
        default=[-0.4, -0.3, -0.2, -0.1, 0.0, 0.2],
        help="relative changes of the candidate's error rate, percent, comma-separated "
        "(default: -40,-30,-20,-10,0,20; write --effects=-30,0 when the first is negative)",
    )
    parser.add_argument(
        "--alpha", type=fraction, default=0.05, help="significance level (default: %(default)s)"
    )
    parser.add_argument(
        "--mde",
        type=fraction,
        default=0.2,
        help="minimum detectable effect, relative to the control (default: %(default)s)",
    )
    parser.add_argument(
        "--power",
        type=fraction,
        default=0.8,
        help="power the fixed horizon is sized for (default: %(default)s)",
    )
    parser.add_argument(
        "--min-samples",
        type=positive_int,
        default=100,
        help="minimum samples per variant before any test (default: %(default)s)",
    )
    parser.add_argument(
        "--look", type=positive_int, default=100, help="samples per arm between looks (default: %(default)s)"
    )
    parser.add_argument(
        "--max-samples",
        type=positive_int,
        default=40_000,
        help="cap per arm for the sequential test and the peeked z-test, a multiple of --look "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--runs", type=positive_int, default=300, help="seeded runs per effect (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation (default: %(default)s)")
    parser.add_argument(
        "--experiments",
        type=positive_int,
        default=100,
        help="part cost: running experiments (default: %(default)s)",
    )
    parser.add_argument(
        "--passes",
        type=positive_int,
        default=20,
        help="part cost: analysis passes timed (default: %(default)s)",
    )
    parser.add_argument(
        "--metric",
        choices=["errorRate", "p95Latency", "costPerRequest", "feedbackScore"],
        default="errorRate",
        help="part cost: the primary metric (default: %(default)s)",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="worker processes (default: the number of CPUs, %(default)s)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=600.0,
        help="seconds after which a hung run prints its stacks and exits (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed: must be at least 0")
    if args.max_samples % args.look:
        parser.error(f"--max-samples ({args.max_samples}) must be a multiple of --look ({args.look})")
    if args.max_samples < args.min_samples:
        parser.error("--max-samples must be at least --min-samples")
    for effect in args.effects:
        rate = args.control_rate * (1 + effect)
        if not 0 <= rate <= 1 or effect <= -1:
            parser.error(
                f"--effects: {100 * effect:g}% gives a candidate error rate of {rate:g}, not in (0, 1]"
            )
    return args


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    faulthandler.dump_traceback_later(args.deadline, exit=True)
    print("RouteIQ experiments: samples to a verdict (sequential vs fixed horizon); the analysis cost")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), numpy "
        f"{_version('numpy')}, scipy {_version('scipy')}, routeiq {_version('routeiq')}; "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    started = time.perf_counter()
    for name, part in PARTS.items():
        if args.part in ("all", name):
            print()
            print(f"== {name} ==")
            part(args)
    print(f"measured in {time.perf_counter() - started:.1f} s")
    faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    try:
        main()
    except Exception:  # a benchmark never fails the caller, but says what broke
        traceback.print_exc()
    sys.exit(0)
