"""Per-decision routing overhead: RouteIQ's simple strategies against LiteLLM's own.

Measures the latency of one `await router.async_get_available_deployment(...)` call (p50 and
p99, in microseconds) for LiteLLM simple-shuffle (the baseline), LiteLLM least-busy, and
RouteIQ round-robin, weighted-random and least-busy installed with `routing.install`, on one
model group of 2, 10 and 50 mock deployments. No request is sent anywhere: only the routing
decision is timed.

How it measures:
  * every strategy gets its own fresh `litellm.Router`, built from the same model list;
  * LiteLLM's callback lists are process-global and every Router (and `install`) registers
    into them, while a real gateway worker holds one Router; each Router is therefore built on
    empty lists and its own callbacks are swapped back in while it is measured;
  * each Router is warmed up, then measured in several rounds; each round visits every
    (size, strategy) pair, rotating which strategy goes first, and the samples of all rounds
    are pooled, so machine noise falls on all strategies alike;
  * every decision is timed on its own with `time.perf_counter_ns`, inside a block that runs
    with the garbage collector disabled (collected before each block); background tasks a
    decision schedules are run between decisions, outside the timed region.

Run it from the repository root:

    .venv/bin/python bench/routing_overhead.py
    .venv/bin/python bench/routing_overhead.py --decisions 2000 --sizes 2,10 --rounds 5

It exits 0 whatever the results (it is a benchmark, not a test); only bad options exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: use the bundled cost map

_ROUTER_SRC = Path(__file__).resolve().parent.parent / "router"
if str(_ROUTER_SRC) not in sys.path:  # runnable without installing the package
    sys.path.insert(0, str(_ROUTER_SRC))

import litellm  # noqa: E402
from litellm.router import Router  # noqa: E402

from routeiq_router.routing import install  # noqa: E402

LiteLLMStrategy = Literal["simple-shuffle", "least-busy"]

MODEL_GROUP = "bench"
BASELINE = "litellm simple-shuffle"
TARGET_RATIO = 1.2
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Which deployment serves this?"}]

# LiteLLM's process-global callback lists that a Router or `install` registers into.
_CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "success_callback",
    "failure_callback",
    "service_callback",
    "_async_input_callback",
    "_async_success_callback",
    "_async_failure_callback",
)


@dataclass(frozen=True, slots=True)
class Strategy:
    label: str
    litellm_strategy: LiteLLMStrategy
    routeiq_strategy: str | None = None

    @property
    def is_routeiq(self) -> bool:
        return self.routeiq_strategy is not None


STRATEGIES: tuple[Strategy, ...] = (
    Strategy(BASELINE, "simple-shuffle"),
    Strategy("litellm least-busy", "least-busy"),
    Strategy("routeiq round-robin", "simple-shuffle", "round-robin"),
    Strategy("routeiq weighted-random", "simple-shuffle", "weighted-random"),
    Strategy("routeiq least-busy", "simple-shuffle", "least-busy"),
)


@dataclass(slots=True)
class Subject:
    """One Router under test, with the global callbacks it registered."""

    strategy: Strategy
    size: int
    router: Router
    callbacks: dict[str, list[Any]]
    samples_ns: list[int] = field(default_factory=list)

    def activate(self) -> None:
        for name in _CALLBACK_LISTS:
            setattr(litellm, name, list(self.callbacks[name]))


@dataclass(frozen=True, slots=True)
class Row:
    size: int
    label: str
    p50_us: float
    p99_us: float
    p50_ratio: float
    p99_ratio: float
    samples: int


def model_list(size: int) -> list[dict[str, Any]]:
    return [
        {
            "model_name": MODEL_GROUP,
            "litellm_params": {
                "model": f"openai/bench-{i}",
                "api_key": "sk-bench",
                "mock_response": "ok",
                "weight": i % 3 + 1,
            },
            "model_info": {"id": f"bench-{i}"},
        }
        for i in range(size)
    ]


def build_subject(strategy: Strategy, size: int) -> Subject:
    for name in _CALLBACK_LISTS:
        setattr(litellm, name, [])
    router = Router(model_list=model_list(size), routing_strategy=strategy.litellm_strategy)
    if strategy.routeiq_strategy is not None:
        install(router, strategy.routeiq_strategy)
    callbacks = {name: list(getattr(litellm, name)) for name in _CALLBACK_LISTS}
    return Subject(strategy=strategy, size=size, router=router, callbacks=callbacks)


async def decide(router: Router) -> None:
    deployment = await router.async_get_available_deployment(
        model=MODEL_GROUP, request_kwargs={}, messages=MESSAGES
    )
    if not isinstance(deployment, dict):
        raise TypeError(f"unexpected decision: {deployment!r}")


async def run_block(subject: Subject, count: int, *, record: bool) -> None:
    """`count` decisions, each timed alone, with the garbage collector off."""
    subject.activate()
    router = subject.router
    samples = subject.samples_ns
    clock: Callable[[], int] = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for _ in range(count):
            request_kwargs: dict[str, Any] = {}  # LiteLLM pops keys from it: a fresh one per decision
            start = clock()
            await router.async_get_available_deployment(
                model=MODEL_GROUP, request_kwargs=request_kwargs, messages=MESSAGES
            )
            elapsed = clock() - start
            if record:
                samples.append(elapsed)
            await asyncio.sleep(0)  # run the tasks the decision scheduled, outside the timing
    finally:
        gc.enable()


def percentile(sorted_samples: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_samples)))
    return float(sorted_samples[rank - 1])


def summarize(subjects: Sequence[Subject], sizes: Sequence[int]) -> list[Row]:
    rows: list[Row] = []
    for size in sizes:
        stats: dict[str, tuple[float, float, int]] = {}
        for subject in subjects:
            if subject.size != size:
                continue
            ordered = sorted(subject.samples_ns)
            stats[subject.strategy.label] = (
                percentile(ordered, 50) / 1000.0,
                percentile(ordered, 99) / 1000.0,
                len(ordered),
            )
        base_p50, base_p99, _ = stats[BASELINE]
        for strategy in STRATEGIES:
            p50, p99, count = stats[strategy.label]
            rows.append(Row(size, strategy.label, p50, p99, p50 / base_p50, p99 / base_p99, count))
    return rows


def print_table(rows: Sequence[Row]) -> None:
    header = (
        f"{'deployments':>11}  {'strategy':<24}  {'p50 µs':>9}  {'p99 µs':>9}  "
        f"{'p50 / base':>10}  {'p99 / base':>10}  {'samples':>7}"
    )
    print(header)
    print("-" * len(header))
    previous = None
    for row in rows:
        if previous is not None and row.size != previous:
            print()
        previous = row.size
        print(
            f"{row.size:>11}  {row.label:<24}  {row.p50_us:>9.1f}  {row.p99_us:>9.1f}  "
            f"{row.p50_ratio:>9.2f}x  {row.p99_ratio:>9.2f}x  {row.samples:>7}"
        )


def verdict(rows: Sequence[Row]) -> str:
    routeiq = {s.label for s in STRATEGIES if s.is_routeiq}
    checked = [row for row in rows if row.label in routeiq]
    worst = max(checked, key=lambda row: row.p50_ratio)
    over = [row for row in checked if row.p50_ratio > TARGET_RATIO]
    if not over:
        return (
            f"VERDICT: PASS - RouteIQ's simple strategies stayed within {TARGET_RATIO}x of {BASELINE} (p50) "
            f"at every size (worst: {worst.label} at {worst.size} deployments, {worst.p50_ratio:.2f}x)."
        )
    misses = ", ".join(f"{row.label} at {row.size} ({row.p50_ratio:.2f}x)" for row in over)
    return f"VERDICT: FAIL - above the {TARGET_RATIO}x p50 target of {BASELINE}: {misses}."


async def measure(args: argparse.Namespace) -> list[Subject]:
    sizes: list[int] = args.sizes
    subjects = [build_subject(strategy, size) for size in sizes for strategy in STRATEGIES]
    for subject in subjects:
        await decide(subject.router)  # fails loudly if a strategy does not route at all
        await run_block(subject, args.warmup, record=False)
    # Move everything alive now (LiteLLM's modules, the Routers) out of the collector's reach:
    # the collection before each block then only walks what the decisions left behind.
    gc.collect()
    gc.freeze()
    per_round, extra = divmod(args.decisions, args.rounds)
    for round_index in range(args.rounds):
        count = per_round + (1 if round_index < extra else 0)
        for size in sizes:
            group = [subject for subject in subjects if subject.size == size]
            shift = round_index % len(group)
            for subject in group[shift:] + group[:shift]:  # rotate who goes first
                await run_block(subject, count, record=True)
        print(f"  round {round_index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    return subjects


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def size_list(text: str) -> list[int]:
    try:
        sizes = [positive_int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers: {text!r}") from error
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--decisions",
        type=positive_int,
        default=6000,
        help="measured decisions per strategy and size, pooled over all rounds (default: %(default)s)",
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=30, help="measurement rounds (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=positive_int,
        default=300,
        help="unmeasured decisions per strategy and size before the rounds (default: %(default)s)",
    )
    parser.add_argument(
        "--sizes",
        type=size_list,
        default=[2, 10, 50],
        help="deployments in the model group, comma-separated (default: 2,10,50)",
    )
    args = parser.parse_args(argv)
    if args.rounds > args.decisions:
        parser.error("--rounds cannot exceed --decisions")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    litellm.suppress_debug_info = True
    print("RouteIQ routing overhead: latency of one Router.async_get_available_deployment call")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"litellm {_litellm_version()}, {os.cpu_count()} CPUs ({_usable_cpus()} usable), "
        f"{platform.platform()}"
    )
    print(
        f"{args.decisions} measured decisions per row in {args.rounds} rounds, "
        f"{args.warmup} warm-up decisions, sizes {','.join(map(str, args.sizes))}"
    )
    load_before = _load()
    started = time.perf_counter()
    subjects = asyncio.run(measure(args))
    elapsed = time.perf_counter() - started
    rows = summarize(subjects, args.sizes)
    print()
    print_table(rows)
    print()
    print(
        f"measured in {elapsed:.1f} s (1-minute load average {load_before} before, {_load()} after); "
        f"ratios are against {BASELINE} at the same size"
    )
    print(verdict(rows))
    return 0


def _load() -> str:
    """The 1-minute load average: other work on the machine shows up in the p99 column."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


def _usable_cpus() -> int | None:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count()


def _litellm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("litellm")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    try:
        main()
    except Exception:  # a benchmark never fails the caller, but says what broke
        traceback.print_exc()
    sys.exit(0)
