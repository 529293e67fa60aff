"""How fast shared-state changes reach every gateway worker, and what the Redis path costs a request.

Runs its own redis-server and N worker processes (default 8, `multiprocessing` spawn context), each
running a `RoutingState` of one gateway against it, as the workers of several gateway replicas do.
Every worker stamps `time.time()` when its `on_change` listener fires; all processes share the
machine's clock, so a delay is the worker's stamp minus the stamp taken where the change was made.

  (a) weight changes: the parent changes the A/B weights K times (default 200, 20-50 ms apart, seeded)
      with `StateAdmin.set_weights`, stamping `time.time()` just before each write; each change has
      its own weights, so a worker's `on_change("weights")` says which change it applied (the
      worker reloads the weights from Redis when the pub/sub event arrives). Delays over every
      (change, worker) pair; a change a worker had not reported by the end of the run (at least
      a second after the last write) counts as missed.
  (b) breaker opening: worker 0 records failures of a fresh deployment until its shared breaker
      opens (3 failures), stamping `time.time()` before the call that opens it; every other worker
      reports when its `on_change("breaker")` fires and `breaker_view` leaves the deployment out.
      R rounds (default 100), a different deployment each.
  (c) per-request cost: `assign()` + `breaker_view()` + `record_request()` per request in this
      process, for a `RoutingState` without Redis (tier 1, the baseline), with Redis but no split,
      with Redis and a 70/30 split (the assignment goes to Redis), and with a 70/30 split whose
      Redis has been stopped (degraded: the worker's memory split). p50/p99 in microseconds and
      the ratio to the baseline. Run after the worker processes have exited.

Reference point: LiteLLM's cooldowns reached sibling replicas up to 10 s late, before its fix to
a 1 s resync.

    .venv/bin/python bench/propagation.py
    .venv/bin/python bench/propagation.py --workers 4 --changes 50 --rounds 10 --requests 2000

It exits 0 whatever the results (it is a benchmark, not a test); only bad options exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import gc
import logging
import math
import multiprocessing
import os
import platform
import queue
import random
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

_ROUTER_SRC = Path(__file__).resolve().parent.parent / "router"
if str(_ROUTER_SRC) not in sys.path:  # runnable without installing the package
    sys.path.insert(0, str(_ROUTER_SRC))

from redis.asyncio import Redis  # noqa: E402

from local_redis import LocalRedis, redis_version  # noqa: E402
from routeiq_router.state import BreakerPolicy, BreakerState  # noqa: E402
from routeiq_router.state.admin import StateAdmin  # noqa: E402
from routeiq_router.state.store import RedisStatus, RoutingState, StateOptions, VariantSpec  # noqa: E402

GATEWAY = "bench/gw"
POLICY = BreakerPolicy(failure_threshold=3, window_seconds=60, open_seconds=30, half_open_probes=1)
DEPLOYMENTS = ("deployment-a", "deployment-b", "deployment-c", "deployment-d")
SPLIT: tuple[VariantSpec, ...] = (  # sorted by name, as RoutingState.variants are
    VariantSpec("candidate", "least-busy", 30.0),
    VariantSpec("control", "round-robin", 70.0),
)
BASELINE = "memory (tier 1)"
LITELLM_LATE_SECONDS = 10.0  # LiteLLM cooldowns reached sibling replicas this late before its fix
LITELLM_RESYNC_SECONDS = 1.0  # ... and its fix: a 1 s resync
GRACE_SECONDS = 1.0  # how long after the last change the workers get to report it

# Messages between the processes are tuples of builtins (picklable under the spawn context).
#   parent -> worker:  ("fail", deployment) | ("stop",)
#   worker -> parent:  ("ready", worker, status, control weight)
#                      ("opened", worker, deployment, stamp before the opening call, stamp after)
#                      ("report", worker, [(control weight, stamp)], [(deployment, stamp)],
#                                 redis errors, [deployments excluded at the end])
Message = tuple[Any, ...]


def strategy_known(name: str) -> bool:
    return True


def options(url: str | None) -> StateOptions:
    return StateOptions(gateway=GATEWAY, redis_url=url, ab_enabled=True, breaker_policy=POLICY)


def weights_for(control: float) -> tuple[VariantSpec, ...]:
    return (
        VariantSpec("candidate", "least-busy", 100.0 - control),
        VariantSpec("control", "round-robin", control),
    )


def control_weight(state: RoutingState) -> float | None:
    return next((v.weight for v in state.variants if v.name == "control"), None)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1]


# ---- the worker processes -----------------------------------------------------------------------


def worker_main(index: int, url: str, commands: Queue[Message], results: Queue[Message]) -> None:
    """Entry point of a worker process."""
    try:
        asyncio.run(_worker(index, url, commands, results))
    except Exception:
        traceback.print_exc()
        results.put(("failed", index, traceback.format_exc()))


async def _worker(index: int, url: str, commands: Queue[Message], results: Queue[Message]) -> None:
    state = RoutingState(options(url), strategy_known=strategy_known, worker_id=f"bench-{index}")
    weights_seen: list[tuple[float | None, float]] = []
    breakers_seen: list[tuple[str, float]] = []
    known_open: set[str] = set()

    def excluded(deployment: str) -> bool:
        closed, probing = state.breaker_view([deployment])
        return not closed and not probing

    def on_change(kind: str) -> None:
        now = time.time()
        if kind == "weights":
            weights_seen.append((control_weight(state), now))
        elif kind == "breaker":
            for deployment in state.open_breakers():
                if deployment not in known_open and excluded(deployment):
                    known_open.add(deployment)
                    breakers_seen.append((deployment, now))

    state.on_change.append(on_change)
    await state.start()
    results.put(("ready", index, state.status.value, control_weight(state)))
    loop = asyncio.get_running_loop()
    opened: list[str] = []
    while True:
        command: Message = await loop.run_in_executor(None, commands.get)
        if command[0] == "stop":
            break
        if command[0] == "fail":
            deployment = str(command[1])
            opened.append(deployment)
            for _ in range(10 * POLICY.failure_threshold):
                stamp = time.time()
                verdict = await state.record_failure(deployment)
                if verdict is BreakerState.OPEN:
                    break
            results.put(("opened", index, deployment, stamp, time.time()))
    at_end = [deployment for deployment in state.open_breakers() if excluded(deployment)]
    errors = state.redis_errors
    await state.close()
    results.put(("report", index, weights_seen, breakers_seen, errors, at_end))


# ---- the parent ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Fleet:
    processes: list[BaseProcess]
    commands: list[Queue[Message]]
    results: Queue[Message]
    reports: dict[int, Message] = field(default_factory=dict)

    def get(self, timeout: float) -> Message:
        message: Message = self.results.get(timeout=timeout)
        if message[0] == "failed":
            raise RuntimeError(f"worker {message[1]} failed:\n{message[2]}")
        if message[0] == "report":
            self.reports[int(message[1])] = message
        return message

    def stop(self, timeout: float = 30.0) -> None:
        for commands in self.commands:
            with contextlib.suppress(Exception):
                commands.put(("stop",))
        deadline = time.monotonic() + timeout
        while len(self.reports) < len(self.processes) and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                self.get(timeout=max(0.01, deadline - time.monotonic()))
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(5)


def start_fleet(url: str, workers: int) -> tuple[Fleet, list[Message]]:
    context = multiprocessing.get_context("spawn")
    results: Queue[Message] = context.Queue()
    commands: list[Queue[Message]] = [context.Queue() for _ in range(workers)]
    processes: list[BaseProcess] = [
        context.Process(target=worker_main, args=(index, url, commands[index], results), daemon=True)
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    fleet = Fleet(processes, commands, results)
    ready: list[Message] = []
    try:
        while len(ready) < workers:
            message = fleet.get(timeout=60)
            if message[0] == "ready":
                ready.append(message)
    except BaseException:
        fleet.stop(timeout=5)
        raise
    return fleet, ready


@dataclass(frozen=True, slots=True)
class Delays:
    seconds: list[float]
    expected: int  # (event, worker) pairs that should have been reported

    @property
    def missed(self) -> int:
        return self.expected - len(self.seconds)

    def row(self, label: str) -> str:
        ms = [s * 1000.0 for s in self.seconds]
        return (
            f"{label:<18} {len(ms):>7} {percentile(ms, 50):>8.2f} {percentile(ms, 99):>8.2f} "
            f"{max(ms, default=float('nan')):>8.2f} {self.missed:>7}"
        )


async def change_weights(url: str, changes: int, seed: int) -> tuple[dict[float, float], list[float]]:
    """Change the weights `changes` times; returns control weight -> stamp, and the write times."""
    client = Redis.from_url(url)
    admin = StateAdmin(client, GATEWAY, strategy_known)
    rng = random.Random(f"changes/{seed}")
    stamps: dict[float, float] = {}
    writes: list[float] = []
    try:
        for change in range(changes):
            control = 30.0 + 40.0 * change / changes  # every change its own weights, never 70 (initial)
            stamp = time.time()
            await admin.set_weights(weights_for(control), reset_counters=True)
            writes.append(time.time() - stamp)
            stamps[control] = stamp
            await asyncio.sleep(rng.uniform(0.020, 0.050))
    finally:
        await client.aclose()
    return stamps, writes


def weight_delays(stamps: dict[float, float], reports: Sequence[Message]) -> Delays:
    seconds: list[float] = []
    for report in reports:
        first_seen: dict[float, float] = {}
        for control, seen in report[2]:
            if control in stamps and control not in first_seen:
                first_seen[control] = seen
        seconds += [seen - stamps[control] for control, seen in first_seen.items()]
    return Delays(seconds, expected=len(stamps) * len(reports))


def open_breakers(fleet: Fleet, rounds: int, seed: int) -> tuple[dict[str, float], list[float]]:
    """Worker 0 opens a fresh deployment's breaker, `rounds` times; deployment -> stamp, and the
    duration of each opening call."""
    rng = random.Random(f"breakers/{seed}")
    stamps: dict[str, float] = {}
    calls: list[float] = []
    for round_index in range(rounds):
        deployment = f"bench-deployment-{round_index}"
        fleet.commands[0].put(("fail", deployment))
        while True:
            message = fleet.get(timeout=30)
            if message[0] == "opened" and message[2] == deployment:
                break
        stamps[deployment] = float(message[3])
        calls.append(float(message[4]) - float(message[3]))
        time.sleep(rng.uniform(0.020, 0.050))
    return stamps, calls


def breaker_delays(stamps: dict[str, float], reports: Sequence[Message]) -> tuple[Delays, int]:
    """Delays at every worker but the one that opened the breakers, and how many of the
    deployments those workers exclude at the end (pub/sub or resync)."""
    seconds: list[float] = []
    excluded_at_end = 0
    others = [report for report in reports if int(report[1]) != 0]
    for report in others:
        seconds += [seen - stamps[deployment] for deployment, seen in report[3] if deployment in stamps]
        excluded_at_end += sum(1 for deployment in report[5] if deployment in stamps)
    return Delays(seconds, expected=len(stamps) * len(others)), excluded_at_end


# ---- (c) per-request cost -----------------------------------------------------------------------


@dataclass(slots=True)
class CostSubject:
    label: str
    state: RoutingState
    samples_ns: list[int] = field(default_factory=list)


async def cost_block(subject: CostSubject, count: int, *, record: bool) -> None:
    state = subject.state
    samples = subject.samples_ns
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for _ in range(count):
            start = clock()
            assignment = await state.assign()
            state.breaker_view(DEPLOYMENTS)
            variant = assignment.variant.name if assignment.variant is not None else "control"
            state.record_request(variant, 0.120, False)
            elapsed = clock() - start
            if record:
                samples.append(elapsed)
            await asyncio.sleep(0)  # let the background tasks run outside the timing
    finally:
        gc.enable()


@dataclass(frozen=True, slots=True)
class CostResult:
    subjects: list[CostSubject]
    ping_ns: list[int]  # one PING round trip on a client of its own, for scale
    per_assign: dict[str, float]  # script commands Redis received per assign() with the split


PROBE_ASSIGNS = 1000


async def probe_round_trips(client: Redis, split: RoutingState) -> tuple[list[int], dict[str, float]]:
    ping: list[int] = []
    for _ in range(2000):
        start = time.perf_counter_ns()
        await client.ping()
        ping.append(time.perf_counter_ns() - start)
    await client.config_resetstat()
    for _ in range(PROBE_ASSIGNS):
        await split.assign()
    stats: dict[str, Any] = await client.info("commandstats")
    per_assign = {
        name.removeprefix("cmdstat_"): int(value["calls"]) / PROBE_ASSIGNS
        for name, value in stats.items()
        if "script" in name or "eval" in name
    }
    return ping, per_assign


async def measure_cost(url: str, requests: int, rounds: int, warmup: int) -> CostResult:
    client = Redis.from_url(url)
    admin = StateAdmin(client, "bench/cost-split", strategy_known)
    await admin.set_weights(SPLIT, reset_counters=True)
    memory = RoutingState(options(None), strategy_known=strategy_known, worker_id="bench-memory")
    no_split = RoutingState(
        StateOptions(gateway="bench/cost-nosplit", redis_url=url, breaker_policy=POLICY),
        strategy_known=strategy_known,
        worker_id="bench-nosplit",
    )
    split = RoutingState(
        StateOptions(gateway="bench/cost-split", redis_url=url, breaker_policy=POLICY),
        strategy_known=strategy_known,
        worker_id="bench-split",
    )
    outage = LocalRedis()  # the degraded subject's own Redis, stopped once it has loaded the split
    outage.start()
    degraded = RoutingState(
        StateOptions(gateway="bench/cost-degraded", redis_url=outage.url, breaker_policy=POLICY),
        strategy_known=strategy_known,
        worker_id="bench-degraded",
    )
    subjects = [
        CostSubject(BASELINE, memory),
        CostSubject("redis, no split", no_split),
        CostSubject("redis, 70/30 split", split),
        CostSubject("redis down, 70/30", degraded),
    ]
    try:
        outage_client = Redis.from_url(outage.url)
        await StateAdmin(outage_client, "bench/cost-degraded", strategy_known).set_weights(SPLIT)
        await outage_client.aclose()
        for subject in subjects:
            await subject.state.start()
        outage.stop()
        await degraded.assign()  # meets the outage: the worker degrades to its memory split
        states = (split, no_split, degraded)
        if split.variants != SPLIT or degraded.variants != SPLIT or split.status is not RedisStatus.OK:
            raise RuntimeError(f"the Redis subjects did not start: {[s.health() for s in states]}")
        if no_split.status is not RedisStatus.OK or degraded.status is not RedisStatus.DEGRADED:
            raise RuntimeError(f"unexpected Redis status: {[s.health() for s in states]}")
        for subject in subjects:
            await cost_block(subject, warmup, record=False)
        per_round, extra = divmod(requests, rounds)
        for round_index in range(rounds):
            shift = round_index % len(subjects)
            for subject in subjects[shift:] + subjects[:shift]:  # rotate who goes first
                await cost_block(subject, per_round + (1 if round_index < extra else 0), record=True)
        errors = split.redis_errors + no_split.redis_errors
        if errors:
            print(f"  note: {errors} Redis errors during the cost measurement (those fell back to memory)")
        ping, per_assign = await probe_round_trips(client, split)
        return CostResult(subjects, ping, per_assign)
    finally:
        for subject in subjects:
            await subject.state.close()
        await client.aclose()
        outage.stop()


def print_cost(subjects: Sequence[CostSubject]) -> None:
    base = sorted(subjects[0].samples_ns)
    base50, base99 = percentile(base, 50), percentile(base, 99)
    header = f"{'state':<20} {'p50 µs':>8} {'p99 µs':>8} {'p50 / base':>10} {'p99 / base':>10} {'samples':>8}"
    print(header)
    print("-" * len(header))
    for subject in subjects:
        ordered = sorted(subject.samples_ns)
        p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
        print(
            f"{subject.label:<20} {p50 / 1000:>8.1f} {p99 / 1000:>8.1f} {p50 / base50:>9.1f}x "
            f"{p99 / base99:>9.1f}x {len(ordered):>8}"
        )


# ---- command line -------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--workers", type=positive_int, default=8, help="worker processes (default: %(default)s)"
    )
    parser.add_argument(
        "--changes", type=positive_int, default=200, help="weight changes in (a) (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=100, help="breakers opened in (b) (default: %(default)s)"
    )
    parser.add_argument(
        "--requests",
        type=positive_int,
        default=20_000,
        help="timed requests per state in (c), over 10 blocks (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the spacing (default: %(default)s)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=600.0,
        help="seconds after which a hung run prints its stacks and exits (default: %(default)s)",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    with LocalRedis() as server:
        # the initial split (control 70) is in Redis before the workers start: they load it
        asyncio.run(_set_initial(server.url))
        started = time.perf_counter()
        fleet, ready = start_fleet(server.url, args.workers)
        statuses = sorted({str(message[2]) for message in ready})
        print(
            f"{args.workers} workers ready in {time.perf_counter() - started:.1f} s (redis: {', '.join(statuses)})"
        )
        try:
            weight_stamps, writes = asyncio.run(change_weights(server.url, args.changes, args.seed))
            time.sleep(GRACE_SECONDS)
            breaker_stamps, calls = open_breakers(fleet, args.rounds, args.seed)
            time.sleep(GRACE_SECONDS)
        finally:
            fleet.stop()
        reports = [fleet.reports[index] for index in sorted(fleet.reports)]
        if len(reports) < args.workers:
            print(f"  note: only {len(reports)} of {args.workers} workers reported")
        cost = asyncio.run(measure_cost(server.url, args.requests, 10, 500))

    weights = weight_delays(weight_stamps, reports)
    breakers, excluded_at_end = breaker_delays(breaker_stamps, reports)
    errors = sum(int(report[4]) for report in reports)
    print()
    print("(a), (b): delay from the change to a worker's on_change, milliseconds")
    header = f"{'event':<18} {'pairs':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'missed':>7}"
    print(header)
    print("-" * len(header))
    print(weights.row("weights"))
    print(breakers.row("breaker opened"))
    print()
    print(
        f"  weights: {args.changes} changes x {len(reports)} workers; the write itself (Lua: HSET + "
        f"PUBLISH) took p50 {percentile(writes, 50) * 1000:.2f} ms, max {max(writes) * 1000:.2f} ms"
    )
    print(
        f"  breakers: {args.rounds} deployments x {len(reports) - 1} other workers; the opening "
        f"record_failure call took p50 {percentile(calls, 50) * 1000:.2f} ms; at the end "
        f"{excluded_at_end} of {breakers.expected} (deployment, worker) pairs were excluded"
    )
    print(f"  Redis errors in the workers: {errors}")
    print()
    print("(c): assign() + breaker_view(4 deployments) + record_request() per request, this process")
    print_cost(cost.subjects)
    commands = ", ".join(f"{name} {calls:.2f}" for name, calls in sorted(cost.per_assign.items()))
    print(
        f"  one PING round trip: p50 {percentile(cost.ping_ns, 50) / 1000:.1f} µs, "
        f"p99 {percentile(cost.ping_ns, 99) / 1000:.1f} µs; "
        f"script commands Redis received per assign() with the split: {commands}"
    )
    print()
    worst = max(max(weights.seconds, default=0.0), max(breakers.seconds, default=0.0))
    p99 = max(percentile(weights.seconds, 99), percentile(breakers.seconds, 99))
    print(
        f"reference: LiteLLM's cooldowns reached sibling replicas up to {LITELLM_LATE_SECONDS:g} s late, "
        f"before its fix to a {LITELLM_RESYNC_SECONDS:g} s resync; here the worse p99 was "
        f"{p99 * 1000:.1f} ms and the worst delay {worst * 1000:.1f} ms "
        f"({LITELLM_RESYNC_SECONDS / p99:.0f}x under the 1 s resync), "
        f"missed: {weights.missed} weight changes, {breakers.missed} breaker openings"
    )


async def _set_initial(url: str) -> None:
    client = Redis.from_url(url)
    try:
        await StateAdmin(client, GATEWAY, strategy_known).set_weights(SPLIT, reset_counters=True)
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # (c) stops a Redis on purpose; the worker's warning about it is expected (errors are counted)
    logging.getLogger("routeiq.state").setLevel(logging.ERROR)
    faulthandler.dump_traceback_later(args.deadline, exit=True)
    print("RouteIQ shared-state propagation: weight changes and breaker openings across worker processes")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"redis-server {redis_version()}, {os.cpu_count()} CPUs, {platform.platform()}"
    )
    print(
        f"{args.workers} worker processes, {args.changes} weight changes, {args.rounds} breaker "
        f"openings (threshold {POLICY.failure_threshold}), changes 20-50 ms apart (seed {args.seed}), "
        f"{args.requests} timed requests per state"
    )
    started = time.perf_counter()
    run(args)
    print(f"measured in {time.perf_counter() - started:.1f} s")
    faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    try:
        main()
    except Exception:  # a benchmark never fails the caller, but says what broke
        traceback.print_exc()
    sys.exit(0)
