"""A/B split accuracy: RouteIQ's cluster-wide split in Redis against per-worker splits.

A 70/30 split (control / candidate) is asked for N requests (1k, 10k, 100k) by W simulated gateway
workers (default 4) at once. The error is how far control's share of the N assignments ends up
from 70 %, in percentage points (pp); with two variants the candidate is off by the same amount.

  * RouteIQ (Redis): W `RoutingState`s of one gateway, each with its own Redis client, started on
    a redis-server this script runs; `StateAdmin.set_weights` sets the split (and resets its
    counters before each count). Each worker runs `--concurrency` asyncio tasks that call
    `await state.assign()` until N assignments are made: one Lua script per request picks the
    variant furthest below its share over every worker's assignments. The Redis counters are read
    back and must equal what the workers saw. Throughput is assignments per second of wall time,
    with all W workers in this one Python process (one core for the client side).
  * weighted random (the baseline): what LiteLLM's simple-shuffle does with deployment weights:
    every request an independent `random.choices(variants, weights=...)` in whichever worker
    serves it; seeded (`--seeds`, default 20): mean, p95 and worst error over the seeds.
  * per-worker deficit: each worker runs its own in-memory largest-deficit split
    (`MemoryTrafficSplit`, what a RouteIQ worker falls back to while Redis is unreachable).

For both per-worker schemes the N requests are spread over the W workers at random (seeded), as a
load balancer does; the split only sees the requests of its worker.

    .venv/bin/python bench/ab_split.py
    .venv/bin/python bench/ab_split.py --counts 1000,10000 --workers 8 --seeds 50

It exits 0 whatever the results (it is a benchmark, not a test); only bad options exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import math
import os
import platform
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_ROUTER_SRC = Path(__file__).resolve().parent.parent / "router"
if str(_ROUTER_SRC) not in sys.path:  # runnable without installing the package
    sys.path.insert(0, str(_ROUTER_SRC))

from redis.asyncio import Redis  # noqa: E402

from local_redis import LocalRedis, redis_version  # noqa: E402
from routeiq_router.state import GatewayKeys, MemoryTrafficSplit, RedisTrafficSplit, Variant  # noqa: E402
from routeiq_router.state.admin import StateAdmin  # noqa: E402
from routeiq_router.state.store import RedisStatus, RoutingState, StateOptions, VariantSpec  # noqa: E402

GATEWAY = "bench/gw"
VARIANTS: tuple[VariantSpec, ...] = (  # sorted by name, as RoutingState.variants are
    VariantSpec("candidate", "least-busy", 30.0),
    VariantSpec("control", "round-robin", 70.0),
)
TOTAL_WEIGHT = sum(v.weight for v in VARIANTS)
BASELINE = "weighted random"


def strategy_known(name: str) -> bool:
    return True


def error_pp(counts: Mapping[str, int], total: int) -> float:
    """The largest distance of a variant's share from its target, in percentage points."""
    if total == 0:
        return float("nan")
    return 100.0 * max(abs(counts.get(v.name, 0) / total - v.weight / TOTAL_WEIGHT) for v in VARIANTS)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1]


# ---- RouteIQ: the split in Redis ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisRun:
    requests: int
    counts: dict[str, int]  # what the workers were told
    stored: dict[str, int]  # what ab:counters says afterwards
    elapsed: float
    redis_errors: int  # requests that fell back to the worker's memory split

    @property
    def error(self) -> float:
        return error_pp(self.counts, self.requests)

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed


async def wait_for_variants(states: Sequence[RoutingState], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while any(state.variants != VARIANTS or state.status is not RedisStatus.OK for state in states):
        if time.monotonic() > deadline:
            detail = [(state.status.value, state.variants) for state in states]
            raise RuntimeError(f"workers did not pick up the split: {detail}")
        await asyncio.sleep(0.01)


async def redis_run(
    states: Sequence[RoutingState], admin: StateAdmin, client: Redis, requests: int, concurrency: int
) -> RedisRun:
    await admin.set_weights(VARIANTS, reset_counters=True)  # the split starts from zero
    await wait_for_variants(states)
    errors_before = sum(state.redis_errors for state in states)
    tallies = [Counter[str]() for _ in states]
    remaining = requests

    async def serve(index: int) -> None:
        nonlocal remaining
        state, tally = states[index], tallies[index]
        while remaining > 0:
            remaining -= 1  # one event loop: no other task runs between the test and this
            assignment = await state.assign()
            tally[assignment.variant.name if assignment.variant is not None else "(none)"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(serve(index) for index in range(len(states)) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    counts: Counter[str] = Counter()
    for tally in tallies:
        counts.update(tally)
    split = RedisTrafficSplit(client, GatewayKeys(GATEWAY), [Variant(v.name, v.weight) for v in VARIANTS])
    stored = await split.counts()
    return RedisRun(
        requests=requests,
        counts=dict(counts),
        stored=stored,
        elapsed=elapsed,
        redis_errors=sum(state.redis_errors for state in states) - errors_before,
    )


async def measure_redis(
    url: str, counts: Sequence[int], workers: int, concurrency: int, warmup: int
) -> list[RedisRun]:
    client = Redis.from_url(url)
    admin = StateAdmin(client, GATEWAY, strategy_known)
    await admin.set_weights(VARIANTS, reset_counters=True)
    options = StateOptions(gateway=GATEWAY, redis_url=url, ab_enabled=True)
    states = [
        RoutingState(options, strategy_known=strategy_known, worker_id=f"bench-{index}")
        for index in range(workers)
    ]
    try:
        await asyncio.gather(*(state.start() for state in states))
        await wait_for_variants(states)
        if warmup:
            await redis_run(states, admin, client, warmup, concurrency)  # scripts loaded, pools filled
        return [await redis_run(states, admin, client, count, concurrency) for count in counts]
    finally:
        await asyncio.gather(*(state.close() for state in states), return_exceptions=True)
        await client.aclose()


# ---- per-worker schemes -------------------------------------------------------------------------


def spread(requests: int, workers: int, seed: int) -> list[int]:
    """How many of the requests each worker serves when a load balancer picks one at random."""
    rng = random.Random(f"spread/{seed}")
    loads = Counter(rng.choices(range(workers), k=requests))
    return [loads.get(worker, 0) for worker in range(workers)]


def weighted_random(loads: Sequence[int], seed: int) -> dict[str, int]:
    """LiteLLM's simple-shuffle pick, once per request, in the worker that serves it."""
    names = [v.name for v in VARIANTS]
    largest = max(v.weight for v in VARIANTS)
    weights = [v.weight / largest for v in VARIANTS]  # simple-shuffle normalises by the largest
    counts: Counter[str] = Counter()
    for worker, load in enumerate(loads):
        rng = random.Random(f"worker/{seed}/{worker}")
        choices = rng.choices
        for _ in range(load):
            counts[choices(names, weights=weights)[0]] += 1
    return dict(counts)


async def per_worker_deficit(loads: Sequence[int]) -> dict[str, int]:
    """Each worker's own in-memory largest-deficit split, over the requests it serves."""
    counts: Counter[str] = Counter()
    for load in loads:
        split = MemoryTrafficSplit([Variant(v.name, v.weight) for v in VARIANTS])
        for _ in range(load):
            await split.assign()
        counts.update(await split.counts())
    return dict(counts)


@dataclass(frozen=True, slots=True)
class SeededErrors:
    values: list[float]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def p95(self) -> float:
        return percentile(self.values, 95)

    @property
    def worst(self) -> float:
        return max(self.values)


async def measure_per_worker(requests: int, workers: int, seeds: int) -> tuple[SeededErrors, SeededErrors]:
    random_errors: list[float] = []
    deficit_errors: list[float] = []
    for seed in range(seeds):
        loads = spread(requests, workers, seed)
        random_errors.append(error_pp(weighted_random(loads, seed), requests))
        deficit_errors.append(error_pp(await per_worker_deficit(loads), requests))
    return SeededErrors(random_errors), SeededErrors(deficit_errors)


# ---- output -------------------------------------------------------------------------------------


def print_table(
    runs: Sequence[RedisRun], per_worker: Mapping[int, tuple[SeededErrors, SeededErrors]]
) -> None:
    header = (
        f"{'requests':>9}  {'RouteIQ pp':>10}  {'deficit/worker mean':>19}  {'worst':>6}  "
        f"{'weighted random mean':>20}  {'p95':>6}  {'worst':>6}  {'RouteIQ assign/s':>16}  "
        f"{'fallbacks':>9}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        weighted, deficit = per_worker[run.requests]
        print(
            f"{run.requests:>9}  {run.error:>10.3f}  {deficit.mean:>19.3f}  {deficit.worst:>6.3f}  "
            f"{weighted.mean:>20.3f}  {weighted.p95:>6.3f}  {weighted.worst:>6.3f}  "
            f"{run.throughput:>16.0f}  {run.redis_errors:>9}"
        )


def print_details(runs: Sequence[RedisRun]) -> None:
    for run in runs:
        told = ", ".join(f"{name} {run.counts.get(name, 0)}" for name in (v.name for v in VARIANTS))
        agree = "agrees" if run.stored == {v.name: run.counts.get(v.name, 0) for v in VARIANTS} else "DIFFERS"
        extra = f" (not assigned a variant: {run.counts['(none)']})" if "(none)" in run.counts else ""
        print(
            f"  RouteIQ at {run.requests}: {told}{extra}; ab:counters {agree} ({run.stored}); "
            f"{run.elapsed:.2f} s"
        )


def summary(runs: Sequence[RedisRun], per_worker: Mapping[int, tuple[SeededErrors, SeededErrors]]) -> str:
    parts = []
    for run in runs:
        weighted, _ = per_worker[run.requests]
        off_by = round(run.error / 100.0 * run.requests)
        parts.append(
            f"{run.requests}: RouteIQ {run.error:.3f} pp ({off_by} requests) vs {BASELINE} "
            f"{weighted.mean:.3f} pp mean / {weighted.worst:.3f} pp worst"
        )
    return "against the baseline (" + BASELINE + ", LiteLLM simple-shuffle): " + "; ".join(parts)


# ---- command line -------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def count_list(text: str) -> list[int]:
    try:
        counts = [positive_int(part.strip().replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers: {text!r}") from error
    if not counts:
        raise argparse.ArgumentTypeError("no counts given")
    return counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--counts",
        type=count_list,
        default=[1000, 10_000, 100_000],
        help="requests per measurement, comma-separated (default: 1000,10000,100000)",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=4, help="simulated gateway workers (default: %(default)s)"
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=4,
        help="requests in flight per worker in the Redis measurement (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=20,
        help="seeds for the per-worker schemes; mean, p95 and worst are over them (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=500,
        help="unmeasured Redis assignments before the first count (default: %(default)s)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=600.0,
        help="seconds after which a hung run prints its stacks and exits (default: %(default)s)",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    with LocalRedis() as server:
        runs = await measure_redis(server.url, args.counts, args.workers, args.concurrency, args.warmup)
    per_worker = {count: await measure_per_worker(count, args.workers, args.seeds) for count in args.counts}
    print()
    print_table(runs, per_worker)
    print()
    print_details(runs)
    print()
    print(summary(runs, per_worker))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    faulthandler.dump_traceback_later(args.deadline, exit=True)
    print("RouteIQ A/B split accuracy: error of a 70/30 split (control share vs 70 %), percentage points")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"redis-server {redis_version()}, {os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(
        f"{args.workers} workers x {args.concurrency} in flight each (Redis), {args.seeds} seeds "
        f"(per-worker schemes), requests spread over the workers at random"
    )
    started = time.perf_counter()
    asyncio.run(run(args))
    print(f"measured in {time.perf_counter() - started:.1f} s")
    faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    try:
        main()
    except Exception:  # a benchmark never fails the caller, but says what broke
        traceback.print_exc()
    sys.exit(0)
