"""Conversation affinity: a conversation stays on its deployment for a while (prompt caches).

The routing path honours a pin unless that deployment's breaker is open or LiteLLM cooled it
down. In Redis a mapping is one key with a TTL, so it
holds across workers and replicas and disappears by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis

from routeiq_router.state.keys import GatewayKeys

__all__ = ["ConversationAffinity", "MemoryAffinity", "RedisAffinity"]


class ConversationAffinity(Protocol):
    async def get(self, conversation: str) -> str | None:
        """The deployment the conversation is pinned to, if any."""
        ...

    async def pin(self, conversation: str, deployment: str) -> None:
        """Pin (or re-pin) the conversation; the pin lasts `ttl_seconds` from now."""
        ...


class MemoryAffinity:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"affinity ttl must be positive (got {ttl_seconds})")
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._pins: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    async def get(self, conversation: str) -> str | None:
        with self._lock:
            pinned = self._pins.get(conversation)
            if pinned is None:
                return None
            if pinned[1] <= self._clock():
                del self._pins[conversation]
                return None
            return pinned[0]

    async def pin(self, conversation: str, deployment: str) -> None:
        self.put(conversation, deployment)

    def put(self, conversation: str, deployment: str) -> None:
        """`pin` without awaiting (the memory store never blocks)."""
        with self._lock:
            now = self._clock()
            if len(self._pins) > 100_000:  # bound the memory of a worker without Redis
                self._pins = {k: v for k, v in self._pins.items() if v[1] > now}
            self._pins[conversation] = (deployment, now + self.ttl_seconds)


class RedisAffinity:
    def __init__(self, client: Redis, keys: GatewayKeys, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"affinity ttl must be positive (got {ttl_seconds})")
        self.client = client
        self.keys = keys
        self.ttl_ms = int(ttl_seconds * 1000)

    async def get(self, conversation: str) -> str | None:
        value = await self.client.get(self.keys.affinity(conversation))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def pin(self, conversation: str, deployment: str) -> None:
        await self.client.set(self.keys.affinity(conversation), deployment, px=self.ttl_ms)
