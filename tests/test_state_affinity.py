"""Conversation affinity: pins shared through Redis, expiring by themselves."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from routeiq_router.state import GatewayKeys, MemoryAffinity, RedisAffinity
from tests.redis_server import RedisServer


async def test_pins_are_shared_by_workers_and_expire(redis_server: RedisServer) -> None:
    keys = GatewayKeys(f"test/{uuid.uuid4().hex[:8]}")
    first, second = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    try:
        one, other = RedisAffinity(first, keys, ttl_seconds=1.0), RedisAffinity(second, keys, ttl_seconds=1.0)
        assert await other.get("conv-1") is None
        await one.pin("conv-1", "gpt-a")
        assert await other.get("conv-1") == "gpt-a"
        await other.pin("conv-1", "gpt-b")  # re-pinned elsewhere, e.g. after its breaker opened
        assert await one.get("conv-1") == "gpt-b"
        assert 0 < await first.pttl(keys.affinity("conv-1")) <= 1000
        await asyncio.sleep(1.2)
        assert await one.get("conv-1") is None
    finally:
        await first.aclose()
        await second.aclose()


async def test_memory_pins_expire() -> None:
    now = [0.0]
    affinity = MemoryAffinity(ttl_seconds=10, clock=lambda: now[0])
    await affinity.pin("conv", "gpt-a")
    now[0] = 9.9
    assert await affinity.get("conv") == "gpt-a"
    now[0] = 10.0
    assert await affinity.get("conv") is None


@pytest.mark.parametrize("ttl", [0, -5])
def test_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(ValueError, match="affinity ttl must be positive"):
        MemoryAffinity(ttl)
