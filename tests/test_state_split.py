"""The A/B traffic split: exact shares across concurrent workers, sticky keys, bad weights."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from routeiq_router.state import GatewayKeys, MemoryTrafficSplit, RedisTrafficSplit, TrafficSplit, Variant
from tests.redis_server import RedisServer

SEVENTY_THIRTY = [Variant("control", 70), Variant("candidate", 30)]


@pytest.fixture(params=["memory", "redis"])
async def make_split(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[Callable[[list[Variant]], TrafficSplit]]:
    clients: list[Redis] = []
    keys = GatewayKeys(f"test/{uuid.uuid4().hex[:8]}")

    def make(variants: list[Variant]) -> TrafficSplit:
        if request.param == "memory":
            return MemoryTrafficSplit(variants)
        client = Redis.from_url(redis_server.url)
        clients.append(client)
        return RedisTrafficSplit(client, keys, variants)

    yield make
    for client in clients:
        await client.aclose()


async def test_shares_are_exact_after_every_request(
    make_split: Callable[[list[Variant]], TrafficSplit],
) -> None:
    split = make_split(SEVENTY_THIRTY)
    for assigned in range(1, 201):
        await split.assign()
        counts = await split.counts()
        assert abs(counts["control"] - 0.7 * assigned) <= 1
    assert await split.counts() == {"control": 140, "candidate": 60}


async def test_sticky_keys_keep_their_variant(make_split: Callable[[list[Variant]], TrafficSplit]) -> None:
    split = make_split(SEVENTY_THIRTY)
    first = {f"user-{i}": await split.assign(f"user-{i}") for i in range(20)}
    again = {key: await split.assign(key) for key in first}
    assert again == first
    assert set(first.values()) == {"control", "candidate"}


async def test_10000_requests_from_four_workers_split_70_30(redis_server: RedisServer) -> None:
    keys = GatewayKeys(f"test/{uuid.uuid4().hex[:8]}")
    clients = [Redis.from_url(redis_server.url) for _ in range(4)]
    workers = [RedisTrafficSplit(client, keys, SEVENTY_THIRTY) for client in clients]
    try:

        async def worker_load(split: RedisTrafficSplit) -> None:
            for _ in range(2500):
                await split.assign()

        await asyncio.gather(*(worker_load(split) for split in workers))
        counts = await workers[0].counts()
    finally:
        for client in clients:
            await client.aclose()
    assert sum(counts.values()) == 10_000
    assert abs(counts["control"] / 10_000 - 0.70) <= 0.005  # within 0.5 percentage points
    assert counts == {"control": 7000, "candidate": 3000}, "the deficit rule is exact, not just close"


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([], "at least one variant with a positive weight"),
        ([Variant("a", 0)], "at least one variant with a positive weight"),
        ([Variant("a", 50), Variant("a", 50)], "variant names must be unique"),
    ],
)
def test_bad_variants_are_refused(variants: list[Variant], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MemoryTrafficSplit(variants)


def test_negative_weight_names_the_variant() -> None:
    with pytest.raises(ValueError, match="variant 'b': weight must not be negative"):
        Variant("b", -1)


async def test_assignment_with_an_affinity_lookup_is_one_round_trip_and_survives_a_script_flush(
    redis_server: RedisServer,
) -> None:
    keys = GatewayKeys(f"test/{uuid.uuid4().hex[:8]}")
    client = Redis.from_url(redis_server.url)
    try:
        split = RedisTrafficSplit(client, keys, SEVENTY_THIRTY)
        await client.set(keys.affinity("c1"), "deployment-b")
        await client.script_flush()  # as after a Redis restart: the script must be loaded again
        assert await split.assign_and_get(None, keys.affinity("c1")) == ("control", b"deployment-b")
        await client.config_resetstat()
        for _ in range(10):
            await split.assign_and_get("user:1", keys.affinity("c2"))
        stats = await client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 10
        assert "cmdstat_script|exists" not in stats, "no SCRIPT EXISTS round trip per request"
        # the first request went to control; user:1 was assigned candidate and kept it, each counted
        assert await split.counts() == {"control": 1, "candidate": 10}
    finally:
        await client.aclose()
