"""RoutingState, the per-worker view of the shared state, against real redis-servers.

Several RoutingState objects on one Redis stand for the workers of several gateway processes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from routeiq_router.state import BreakerPolicy, BreakerState, GatewayKeys
from routeiq_router.state.admin import StateAdmin
from routeiq_router.state.counters import parse_counters
from routeiq_router.state.store import (
    RedisStatus,
    RoutingState,
    StateError,
    StateOptions,
    VariantSpec,
    parse_variant_argument,
)
from routeiq_router.strategies import names
from tests.redis_server import RedisServer

POLICY = BreakerPolicy(failure_threshold=3, window_seconds=60, open_seconds=30, half_open_probes=1)
SEVENTY_THIRTY = [VariantSpec("control", "round-robin", 70), VariantSpec("candidate", "least-busy", 30)]


def known(name: str) -> bool:
    return name in names()


def options(url: str | None, gateway: str, **overrides: object) -> StateOptions:
    values: dict[str, object] = {
        "gateway": gateway,
        "redis_url": url,
        "breaker_policy": POLICY,
        "resync_seconds": 5.0,
    }
    values.update(overrides)
    return StateOptions(**values)  # type: ignore[arg-type]


async def eventually(check: Callable[[], bool], within: float, what: str) -> float:
    """Seconds until `check()` holds; fails after `within` seconds."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


Workers = Callable[..., Awaitable[list[RoutingState]]]


@pytest.fixture
async def workers(redis_server: RedisServer) -> AsyncIterator[Workers]:
    """Start n RoutingStates of one fresh gateway on the session's redis-server."""
    started: list[RoutingState] = []
    gateway = f"test/{uuid.uuid4().hex[:10]}"

    async def start(n: int, url: str | None = redis_server.url, **overrides: object) -> list[RoutingState]:
        states = [RoutingState(options(url, gateway, **overrides), strategy_known=known) for _ in range(n)]
        for state in states:
            await state.start()
            started.append(state)
        return states

    yield start
    for state in started:
        await state.close()


@pytest.fixture
async def admin_for(redis_server: RedisServer) -> AsyncIterator[Callable[[RoutingState], StateAdmin]]:
    client = Redis.from_url(redis_server.url)

    def make(state: RoutingState) -> StateAdmin:
        return StateAdmin(client, state.options.gateway, known)

    yield make
    await client.aclose()


async def test_a_weight_change_reaches_every_worker_well_within_a_second(
    workers: Workers, admin_for: Callable[[RoutingState], StateAdmin]
) -> None:
    states = await workers(4)
    assert all(state.status is RedisStatus.OK for state in states)
    assert all(state.variants == () for state in states)
    admin = admin_for(states[0])
    await admin.set_weights(SEVENTY_THIRTY)
    delay = await eventually(
        lambda: all(
            state.variants == tuple(sorted(SEVENTY_THIRTY, key=lambda v: v.name)) for state in states
        ),
        1.0,
        "every worker applies the weights",
    )
    assert delay < 1.0
    await admin.set_active_strategy("least-busy")
    await eventually(lambda: all(s.active_strategy == "least-busy" for s in states), 1.0, "override applied")
    await admin.set_active_strategy(None)
    await eventually(lambda: all(s.active_strategy is None for s in states), 1.0, "override removed")


async def test_the_split_is_exact_across_workers_and_sticky_keys_keep_their_variant(
    workers: Workers, admin_for: Callable[[RoutingState], StateAdmin]
) -> None:
    states = await workers(3)
    await admin_for(states[0]).set_weights(SEVENTY_THIRTY)
    await eventually(lambda: all(len(s.variants) == 2 for s in states), 1.0, "weights applied")

    async def load(state: RoutingState) -> list[str]:
        chosen = []
        for _ in range(400):
            assignment = await state.assign()
            assert assignment.variant is not None
            assert assignment.strategy == assignment.variant.strategy
            chosen.append(assignment.variant.name)
        return chosen

    results = await asyncio.gather(*(load(state) for state in states))
    total = sum(len(r) for r in results)
    control = sum(r.count("control") for r in results)
    assert total == 1200
    assert control == 840, "largest deficit over the whole cluster: exactly 70%"
    first = {f"user:{i}": (await states[i % 3].assign(f"user:{i}")).variant for i in range(30)}
    again = {key: (await states[(i + 1) % 3].assign(key)).variant for i, key in enumerate(first)}
    assert again == first, "a sticky key keeps its variant on every worker"


async def test_retries_keep_their_variant_without_counting_again(
    workers: Workers, admin_for: Callable[[RoutingState], StateAdmin], redis_server: RedisServer
) -> None:
    (state,) = await workers(1)
    await admin_for(state).set_weights(SEVENTY_THIRTY)
    await eventually(lambda: len(state.variants) == 2, 1.0, "weights applied")
    first = await state.assign()
    assert first.variant is not None
    for _ in range(5):
        retry = await state.assign(keep_variant=first.variant.name)
        assert retry.variant == first.variant
    client = Redis.from_url(redis_server.url)
    raw = await client.hgetall(GatewayKeys(state.options.gateway).ab_counters)
    await client.aclose()
    assert sum(int(v) for k, v in raw.items() if _text(k).endswith(":assigned")) == 1


async def test_a_breaker_opened_by_one_worker_excludes_the_deployment_everywhere(workers: Workers) -> None:
    states = await workers(3)
    failing, others = states[0], states[1:]
    for state in states:
        assert state.breaker_view(["a", "b"]) == (["a", "b"], [])
    for _ in range(POLICY.failure_threshold - 1):
        assert await failing.record_failure("a") is BreakerState.CLOSED
    assert all(state.breaker_view(["a", "b"])[0] == ["a", "b"] for state in others)
    assert await failing.record_failure("a") is BreakerState.OPEN
    assert failing.breaker_view(["a", "b"]) == (["b"], []), "the worker that saw it open, at once"
    delay = await eventually(
        lambda: all(state.breaker_view(["a", "b"]) == (["b"], []) for state in others),
        1.0,
        "the other workers exclude the open deployment",
    )
    assert delay < 1.0
    assert all(0 < seconds <= 30 for seconds in others[0].open_breakers().values())


async def test_half_open_admits_one_probe_across_workers_and_its_success_closes_for_all(
    workers: Workers,
) -> None:
    states = await workers(3, breaker_policy=BreakerPolicy(3, 60, 0.3, 1))
    for _ in range(3):
        await states[0].record_failure("a")
    await eventually(lambda: all("a" in s.open_breakers() for s in states), 1.0, "open everywhere")
    await asyncio.sleep(0.35)  # the open period is over: "a" is a probe candidate everywhere
    assert all(state.breaker_view(["a"]) == ([], ["a"]) for state in states)
    admitted = [await state.admit_probe("a") for state in states]
    assert admitted.count(True) == 1, "one probe for the whole cluster"
    prober = states[admitted.index(True)]
    await prober.record_success("a")
    await eventually(
        lambda: all(s.breaker_view(["a"]) == (["a"], []) for s in states), 1.0, "closed everywhere"
    )


async def test_a_failed_probe_opens_the_breaker_again(workers: Workers) -> None:
    (state, other) = await workers(2, breaker_policy=BreakerPolicy(1, 60, 0.3, 1))
    assert await state.record_failure("a") is BreakerState.OPEN
    await asyncio.sleep(0.35)
    assert await state.admit_probe("a")
    assert await state.record_failure("a") is BreakerState.OPEN
    assert state.breaker_view(["a"]) == ([], [])
    await eventually(lambda: other.breaker_view(["a"]) == ([], []), 1.0, "re-opened everywhere")


async def test_affinity_is_shared_and_expires(workers: Workers) -> None:
    (one, two) = await workers(2, affinity_ttl_seconds=0.5)
    assert (await one.assign(conversation="c1")).pinned is None
    one.pin("c1", "deployment-b")
    await asyncio.sleep(0.05)  # the pin is written in the background
    assert (await two.assign(conversation="c1")).pinned == "deployment-b"
    await asyncio.sleep(0.6)
    assert (await two.assign(conversation="c1")).pinned is None


async def test_counters_are_flushed_exactly_once_even_when_a_batch_is_sent_again(
    workers: Workers, redis_server: RedisServer
) -> None:
    (state,) = await workers(1)
    for i in range(10):
        state.record_request("control", 0.03 * i, error=i == 9)
    state.record_usage("control", 12, 30, 0.000123)
    batch_is_pending = state._counters.pending.copy()
    assert await state.flush()
    # the reply to a flush was lost: the same batch (same sequence number) goes out again
    state._counters.unacked = (state._counters.sequence, dict(batch_is_pending))
    assert await state.flush()
    client = Redis.from_url(redis_server.url)
    raw = await client.hgetall(GatewayKeys(state.options.gateway).ab_counters)
    await client.aclose()
    counters = parse_counters({_text(k): int(v) for k, v in raw.items()})["control"]
    assert counters.requests == 10
    assert counters.errors == 1
    assert counters.prompt_tokens == 12
    assert counters.completion_tokens == 30
    assert counters.cost_microusd == 123
    assert sum(counters.latency_buckets.values()) == 10
    # latencies 0, 30, 60, ..., 270 ms in non-cumulative buckets
    assert counters.latency_buckets == {25: 1, 50: 1, 100: 2, 250: 5, 500: 1}
    assert counters.quantile(0.5) == pytest.approx(130.0)  # rank 5: the first of the (100, 250] bucket
    assert counters.cost_microusd_sq == 123 * 123


async def test_a_counter_at_the_64_bit_limit_stops_growing_and_the_rest_is_counted_once(
    workers: Workers, redis_server: RedisServer
) -> None:
    (state,) = await workers(1)
    client = Redis.from_url(redis_server.url)
    counters_key = GatewayKeys(state.options.gateway).ab_counters
    await client.hset(counters_key, "control:cost_microusd_sq", 9_000_000_000_000_000_000)
    state.record_request("control", 0.01, error=False)
    state.record_usage("control", 1, 1, 5.0)  # $5: its square would overflow the field
    assert await state.flush()
    assert await state.flush()  # nothing left, nothing applied twice
    raw = await client.hgetall(counters_key)
    await client.aclose()
    counters = parse_counters({_text(k): int(v) for k, v in raw.items()})["control"]
    assert counters.cost_microusd_sq == 9_000_000_000_000_000_000
    assert (counters.requests, counters.cost_microusd) == (1, 5_000_000)


async def test_invalid_state_in_redis_is_refused_and_the_last_valid_state_kept(
    workers: Workers, admin_for: Callable[[RoutingState], StateAdmin], redis_server: RedisServer
) -> None:
    (state,) = await workers(1)
    admin = admin_for(state)
    await admin.set_weights(SEVENTY_THIRTY)
    await eventually(lambda: len(state.variants) == 2, 1.0, "weights applied")
    keys = GatewayKeys(state.options.gateway)
    client = Redis.from_url(redis_server.url)
    await client.hset(keys.ab_weights, "control", '{"strategy": "no-such-strategy", "weight": 50}')
    await client.publish(keys.events, '{"type": "weights"}')
    await eventually(lambda: state.last_state_error is not None, 1.0, "the bad weights are noticed")
    assert state.last_state_error == "variant 'control': unknown strategy 'no-such-strategy'"
    assert len(state.variants) == 2
    assert state.variants[1].strategy == "round-robin", "the last valid weights stay in force"
    assert state.health()["state_error"] == state.last_state_error
    await client.publish(keys.events, "not json")  # ignored, the loop carries on
    await admin.set_weights(SEVENTY_THIRTY[:1])
    await eventually(lambda: len(state.variants) == 1 and state.last_state_error is None, 1.0, "recovered")
    await client.aclose()


async def test_without_redis_everything_runs_in_memory(workers: Workers) -> None:
    (state,) = await workers(1, url=None)
    assert state.status is RedisStatus.DISABLED
    assert (await state.assign(sticky_key="user:1", conversation="c")).variant is None
    state.pin("c", "b")
    assert (await state.assign(conversation="c")).pinned == "b"
    for _ in range(3):
        await state.record_failure("a")
    assert state.breaker_view(["a", "b"]) == (["b"], [])
    state.record_request("control", 0.01, error=False)
    assert state.recorded()["control:requests"] == 1
    assert await state.flush()
    assert state.health()["redis"] == "disabled"


async def test_breakers_can_be_left_to_litellm(workers: Workers) -> None:
    (state,) = await workers(1, breakers_enabled=False)
    for _ in range(5):
        assert await state.record_failure("a") is BreakerState.CLOSED
    assert state.breaker_view(["a"]) == (["a"], [])


async def test_a_redis_outage_degrades_then_resyncs_without_double_counting(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    gateway = f"test/{uuid.uuid4().hex[:10]}"
    states = [
        RoutingState(options(server.url, gateway, redis_timeout_seconds=0.2), strategy_known=known)
        for _ in range(2)
    ]
    admin_client = Redis.from_url(server.url)
    try:
        for state in states:
            await state.start()
        await StateAdmin(admin_client, gateway, known).set_weights(SEVENTY_THIRTY)
        await eventually(lambda: all(len(s.variants) == 2 for s in states), 1.0, "weights applied")

        async def serve(n: int) -> None:
            for i in range(n):
                state = states[i % 2]
                assignment = await state.assign(sticky_key=None)
                assert assignment.variant is not None, "a variant even while Redis is down"
                state.record_request(assignment.variant.name, 0.01, error=False)

        await serve(100)
        server.stop()
        await serve(100)  # Redis is gone: the last known weights, per worker
        assert all(s.status is RedisStatus.DEGRADED for s in states)
        health = states[0].health()
        assert health["redis"] == "degraded"
        assert "Connection" in health["last_redis_error"]
        assert health["variants"]["control"]["weight"] == 70
        await serve(100)
        server.start()
        await eventually(lambda: all(s.status is RedisStatus.OK for s in states), 5.0, "recovered")
        await serve(100)
        for state in states:
            await eventually(lambda c=state._counters: not c.pending and c.unacked is None, 3.0, "flushed")  # type: ignore[misc]
        await admin_client.aclose()
        admin_client = Redis.from_url(server.url)  # its connection died with the server
        raw = await admin_client.hgetall(GatewayKeys(gateway).ab_counters)
        counters = parse_counters({_text(k): int(v) for k, v in raw.items()})
        assert counters["control"].requests + counters["candidate"].requests == 400, "each request once"
        assert sum(s.recorded()["control:requests"] for s in states) == counters["control"].requests
    finally:
        for state in states:
            await state.close()
        await admin_client.aclose()
        server.stop()


async def test_stale_connections_after_a_redis_restart_are_retried_not_degraded(tmp_path: Path) -> None:
    """A Redis restarted between two bursts of requests: every pooled connection of the worker is
    stale, yet the first burst after it answers again is served by Redis, with no degraded episode
    (each broken connection is retried once on a fresh one)."""
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    gateway = f"test/{uuid.uuid4().hex[:10]}"
    state = RoutingState(options(server.url, gateway, redis_timeout_seconds=0.5), strategy_known=known)
    admin_client = Redis.from_url(server.url)
    try:
        await state.start()
        await StateAdmin(admin_client, gateway, known).set_weights(SEVENTY_THIRTY)
        await eventually(lambda: len(state.variants) == 2, 1.0, "weights applied")

        async def burst() -> None:  # 16 at once: 16 pooled connections
            assignments = await asyncio.gather(*(state.assign(sticky_key=None) for _ in range(16)))
            for assignment in assignments:
                assert assignment.variant is not None
                state.record_request(assignment.variant.name, 0.01, error=False)

        for _ in range(5):
            await burst()
        assert state.degraded_transitions == 0
        pooled = len(state._client.connection_pool._available_connections)  # type: ignore[union-attr]
        assert pooled >= 2, "several connections pooled before the restart"
        for _ in range(3):  # the subscription may notice a restart (that is an outage, while it lasts)
            server.stop()
            server.start()
            await eventually(lambda: state.status is RedisStatus.OK, 10.0, "the subscription is back")
            episodes = state.degraded_transitions
            for _ in range(5):
                await burst()
            assert state.degraded_transitions == episodes, state.health()
            assert state.status is RedisStatus.OK
        await eventually(
            lambda: not state._counters.pending and state._counters.unacked is None, 3.0, "flushed"
        )
        await admin_client.aclose()
        admin_client = Redis.from_url(server.url)
        raw = await admin_client.hgetall(GatewayKeys(gateway).ab_counters)
        counters = parse_counters({_text(k): int(v) for k, v in raw.items()})
        assert counters["control"].requests + counters["candidate"].requests == 20 * 16, "each request once"
    finally:
        await state.close()
        await admin_client.aclose()
        server.stop()


async def test_a_password_protected_redis_and_no_password_in_errors(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret-pass-word")
    server.start()
    try:
        good = RoutingState(options(server.url, "test/auth"), strategy_known=known)
        await good.start()
        assert good.status is RedisStatus.OK
        await good.close()
        wrong = server.url.replace("s3cret-pass-word", "wrong-pass-word")
        bad = RoutingState(options(wrong, "test/auth"), strategy_known=known)
        await bad.start(first_sync_timeout=1.0)
        assert bad.status is RedisStatus.DEGRADED
        assert "wrong-pass-word" not in str(bad.health())
        await bad.close()
    finally:
        server.stop()


async def test_tls_with_a_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="tls-pass-word", tls=True)
    server.start()
    assert server.url.startswith("rediss://")
    try:
        (one, two) = [RoutingState(options(server.url, "test/tls"), strategy_known=known) for _ in range(2)]
        for state in (one, two):
            await state.start()
            assert state.status is RedisStatus.OK
        assert await one.record_failure("a") is BreakerState.CLOSED
        one.pin("c", "b")
        await asyncio.sleep(0.05)
        assert (await two.assign(conversation="c")).pinned == "b"
        for state in (one, two):
            await state.close()
        plain = RoutingState(options(server.url.replace("rediss://", "redis://"), "test/tls"))
        await plain.start(first_sync_timeout=1.0)
        assert plain.status is RedisStatus.DEGRADED, "a plain connection to a TLS port does not pass"
        await plain.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("control", "expected VARIANT=STRATEGY:WEIGHT"),
        ("control=round-robin", "expected VARIANT=STRATEGY:WEIGHT"),
        ("control=round-robin:seventy", "weight 'seventy' is not a number"),
    ],
)
def test_bad_variant_arguments_say_what_is_wrong(argument: str, message: str) -> None:
    with pytest.raises(StateError, match=message):
        parse_variant_argument(argument)


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([VariantSpec("Control", "round-robin", 50)], "variant 'Control': name must be"),
        (
            [VariantSpec("a", "round-robin", 50), VariantSpec("a", "least-busy", 50)],
            "variant 'a' appears twice",
        ),
        ([VariantSpec("a", "nope", 50)], "variant 'a': unknown strategy 'nope'"),
        ([VariantSpec("a", "round-robin", 150)], "variant 'a': weight must be within 0-100"),
        ([VariantSpec("a", "round-robin", 0)], "at least one variant needs a positive weight"),
    ],
)
async def test_admin_refuses_bad_weights_and_writes_nothing(
    variants: list[VariantSpec], message: str, redis_server: RedisServer
) -> None:
    client = Redis.from_url(redis_server.url)
    gateway = f"test/{uuid.uuid4().hex[:10]}"
    try:
        with pytest.raises(StateError, match=message):
            await StateAdmin(client, gateway, known).set_weights(variants)
        assert await client.exists(GatewayKeys(gateway).ab_weights) == 0
        with pytest.raises(StateError, match="unknown strategy 'nope'"):
            await StateAdmin(client, gateway, known).set_active_strategy("nope")
    finally:
        await client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
