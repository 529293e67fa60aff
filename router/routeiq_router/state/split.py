"""A/B traffic split between variants, exact across every worker and replica.

Each request goes to the variant furthest below its target share ("largest deficit": target
share x (assigned so far + 1) - assigned to it), so after any number of requests every variant
is within one request of its share, however many processes assign. In Redis the choice and the
counter increment are one Lua script over `ab:counters` (field `<variant>:assigned`). A
request that carries a sticky key (user, conversation) keeps its variant for `sticky_seconds`.
`routeiq_router.state.local_copy` builds a split from the current weights;
`routeiq_router.state.store` falls back to the in-memory split while Redis is unreachable.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from routeiq_router.state.keys import GatewayKeys, as_text

__all__ = ["MemoryTrafficSplit", "RedisTrafficSplit", "TrafficSplit", "Variant"]


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float  # relative; the split normalises

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"variant {self.name!r}: weight must not be negative (got {self.weight})")


def _check(variants: Sequence[Variant]) -> None:
    if not variants or sum(variant.weight for variant in variants) <= 0:
        raise ValueError("a traffic split needs at least one variant with a positive weight")
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {', '.join(names)}")


def _largest_deficit(variants: Sequence[Variant], counts: Sequence[int]) -> str:
    total_weight = sum(variant.weight for variant in variants)
    assigned = sum(counts)
    deficits = [
        variant.weight / total_weight * (assigned + 1) - count
        for variant, count in zip(variants, counts, strict=True)
    ]
    return variants[max(range(len(variants)), key=deficits.__getitem__)].name


class TrafficSplit(Protocol):
    async def assign(self, sticky_key: str | None = None) -> str:
        """The variant for one request (and count it)."""
        ...

    async def counts(self) -> dict[str, int]: ...


class MemoryTrafficSplit:
    """One worker's split (tier 1, or while Redis is unreachable)."""

    def __init__(self, variants: Sequence[Variant]) -> None:
        _check(variants)
        self.variants = list(variants)
        self._counts = {variant.name: 0 for variant in variants}
        self._sticky: dict[str, str] = {}
        self._lock = threading.Lock()

    async def assign(self, sticky_key: str | None = None) -> str:
        with self._lock:
            chosen = self._sticky.get(sticky_key) if sticky_key is not None else None
            if chosen is None or chosen not in self._counts:
                chosen = _largest_deficit(self.variants, [self._counts[v.name] for v in self.variants])
            self._counts[chosen] += 1
            if sticky_key is not None:
                self._sticky[sticky_key] = chosen
            return chosen

    async def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


# KEYS[1] counters hash, KEYS[2] sticky key; ARGV: sticky ms, 1 when sticky, then name, weight pairs.
# (KEYS[2] is always a key of the gateway, so both share one Redis Cluster slot.)
_ASSIGN = """
local chosen = false
local weights = {}
local total_weight = 0
local sticky = ARGV[2] == '1'
for i = 3, #ARGV, 2 do
  weights[ARGV[i]] = tonumber(ARGV[i + 1])
  total_weight = total_weight + tonumber(ARGV[i + 1])
end
if sticky then
  local kept = redis.call('GET', KEYS[2])
  if kept and weights[kept] and weights[kept] > 0 then chosen = kept end
end
if not chosen then
  local assigned = 0
  local counts = {}
  for i = 3, #ARGV, 2 do
    counts[ARGV[i]] = tonumber(redis.call('HGET', KEYS[1], ARGV[i] .. ':assigned') or 0)
    assigned = assigned + counts[ARGV[i]]
  end
  local best = nil
  for i = 3, #ARGV, 2 do
    local deficit = weights[ARGV[i]] / total_weight * (assigned + 1) - counts[ARGV[i]]
    if best == nil or deficit > best then best = deficit; chosen = ARGV[i] end
  end
end
redis.call('HINCRBY', KEYS[1], chosen .. ':assigned', 1)
if sticky then redis.call('SET', KEYS[2], chosen, 'PX', ARGV[1]) end
return chosen
"""


class RedisTrafficSplit:
    """The split shared by every worker and replica of one gateway."""

    def __init__(
        self, client: Redis, keys: GatewayKeys, variants: Sequence[Variant], sticky_seconds: float = 86_400
    ) -> None:
        _check(variants)
        self.client = client
        self.keys = keys
        self.variants = list(variants)
        self.sticky_ms = int(sticky_seconds * 1000)
        self._assign = client.register_script(_ASSIGN)

    def _call(self, sticky_key: str | None) -> tuple[list[str], list[str | int | float]]:
        args: list[str | int | float] = [self.sticky_ms, 1 if sticky_key is not None else 0]
        for variant in self.variants:
            args += [variant.name, variant.weight]
        return [self.keys.ab_counters, self.keys.sticky(sticky_key or "")], args

    async def assign(self, sticky_key: str | None = None) -> str:
        keys, args = self._call(sticky_key)
        return as_text(await self._assign(keys=keys, args=args))

    async def assign_and_get(self, sticky_key: str | None, key: str) -> tuple[str, bytes | None]:
        """The assignment plus a GET of `key` (the conversation's affinity) in one round trip.

        EVALSHA is pipelined directly: a Script object on a pipeline makes redis-py send SCRIPT
        EXISTS first, a second round trip on every request. A NOSCRIPT (Redis restarted, or
        SCRIPT FLUSH) loads the script and retries once.
        """
        keys, args = self._call(sticky_key)
        for attempt in range(2):
            async with self.client.pipeline(transaction=False) as pipeline:
                pipeline.evalsha(self._assign.sha, len(keys), *keys, *args)
                pipeline.get(key)
                chosen, value = await pipeline.execute(raise_on_error=False)
            if isinstance(chosen, NoScriptError) and attempt == 0:
                await self.client.script_load(_ASSIGN)
                continue
            if isinstance(chosen, Exception):
                raise chosen
            if isinstance(value, Exception):
                raise value
            return as_text(chosen), value
        raise AssertionError("unreachable")

    async def counts(self) -> dict[str, int]:
        stored = await self.client.hgetall(self.keys.ab_counters)
        raw = {as_text(k): int(v) for k, v in stored.items()}
        return {variant.name: raw.get(f"{variant.name}:assigned", 0) for variant in self.variants}
