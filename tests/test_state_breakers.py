"""Circuit breakers: one contract, in memory and in a real Redis shared by several clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from routeiq_router.state import (
    BreakerPolicy,
    BreakerState,
    CircuitBreakers,
    GatewayKeys,
    MemoryCircuitBreakers,
    RedisCircuitBreakers,
)
from tests.redis_server import RedisServer

POLICY = BreakerPolicy(failure_threshold=3, window_seconds=60, open_seconds=1.0, half_open_probes=1)


@pytest.fixture(params=["memory", "redis"])
async def breakers(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[CircuitBreakers]:
    if request.param == "memory":
        yield MemoryCircuitBreakers(POLICY)
        return
    client = Redis.from_url(redis_server.url)
    yield RedisCircuitBreakers(client, GatewayKeys(f"test/{uuid.uuid4().hex[:8]}"), POLICY)
    await client.aclose()


async def test_opens_after_the_threshold_and_refuses(breakers: CircuitBreakers) -> None:
    assert await breakers.record_failure("a") is BreakerState.CLOSED
    assert await breakers.record_failure("a") is BreakerState.CLOSED
    assert await breakers.allow("a")
    assert await breakers.record_failure("a") is BreakerState.OPEN
    assert not await breakers.allow("a")
    assert await breakers.allow("b"), "breakers are per deployment"


async def test_half_open_admits_one_probe_then_a_success_closes(breakers: CircuitBreakers) -> None:
    for _ in range(3):
        await breakers.record_failure("a")
    await asyncio.sleep(1.1)
    assert await breakers.allow("a"), "the first request after the open period is a probe"
    assert await breakers.state("a") is BreakerState.HALF_OPEN
    assert not await breakers.allow("a"), "one probe at a time"
    assert await breakers.record_success("a") is BreakerState.CLOSED
    assert await breakers.allow("a")
    assert await breakers.record_failure("a") is BreakerState.CLOSED, "the failure count started over"


async def test_a_failed_probe_opens_again(breakers: CircuitBreakers) -> None:
    for _ in range(3):
        await breakers.record_failure("a")
    await asyncio.sleep(1.1)
    assert await breakers.allow("a")
    assert await breakers.record_failure("a") is BreakerState.OPEN
    assert not await breakers.allow("a")


async def test_failures_outside_the_window_do_not_add_up() -> None:
    now = [0.0]
    breakers = MemoryCircuitBreakers(
        BreakerPolicy(failure_threshold=2, window_seconds=10), clock=lambda: now[0]
    )
    await breakers.record_failure("a")
    now[0] = 11.0
    assert await breakers.record_failure("a") is BreakerState.CLOSED
    now[0] = 12.0
    assert await breakers.record_failure("a") is BreakerState.OPEN


async def test_redis_breakers_are_shared_by_every_client(redis_server: RedisServer) -> None:
    keys = GatewayKeys(f"test/{uuid.uuid4().hex[:8]}")
    clients = [Redis.from_url(redis_server.url) for _ in range(3)]
    workers = [RedisCircuitBreakers(client, keys, POLICY) for client in clients]
    try:
        # three workers fail once each, concurrently: together they reach the threshold exactly
        states = await asyncio.gather(*(worker.record_failure("a") for worker in workers))
        assert sorted(states) == sorted([BreakerState.CLOSED, BreakerState.CLOSED, BreakerState.OPEN])
        assert [await worker.allow("a") for worker in workers] == [False, False, False]
        await asyncio.sleep(1.1)
        admitted = await asyncio.gather(*(worker.allow("a") for worker in workers))
        assert sorted(admitted) == [False, False, True], "exactly one probe across all workers"
        ttl = await clients[0].pttl(keys.breaker("a"))
        assert ttl > 0, "breaker keys expire by themselves"
    finally:
        for client in clients:
            await client.aclose()


def test_keys_share_the_gateway_hash_tag() -> None:
    keys = GatewayKeys("routeiq/prod")
    assert keys.breaker("gpt-a") == "routeiq:{routeiq/prod}:cb:gpt-a"
    assert keys.affinity("conv-1") == "routeiq:{routeiq/prod}:affinity:conv-1"
    assert keys.ab_weights == "routeiq:{routeiq/prod}:ab:weights"
    assert keys.ab_counters == "routeiq:{routeiq/prod}:ab:counters"
    assert keys.active_strategy == "routeiq:{routeiq/prod}:strategy:active"
    assert keys.events == "routeiq:{routeiq/prod}:events"
