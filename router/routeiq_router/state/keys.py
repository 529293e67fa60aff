"""The per-gateway Redis keyspace of ARCHITECTURE.md.

Every key of a gateway shares the hash tag `{<namespace>/<name>}`, so in Redis Cluster they
live in one slot and a Lua script may touch several of them.

    >>> GatewayKeys("routeiq/prod").breaker("gpt-4o-a")
    'routeiq:{routeiq/prod}:cb:gpt-4o-a'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GatewayKeys", "as_text", "optional_text"]


@dataclass(frozen=True, slots=True)
class GatewayKeys:
    gateway: str  # "<namespace>/<name>", ROUTEIQ_GATEWAY

    @property
    def prefix(self) -> str:
        return f"routeiq:{{{self.gateway}}}:"

    @property
    def active_strategy(self) -> str:
        return f"{self.prefix}strategy:active"

    @property
    def ab_weights(self) -> str:
        return f"{self.prefix}ab:weights"

    @property
    def ab_counters(self) -> str:
        return f"{self.prefix}ab:counters"

    @property
    def events(self) -> str:
        """The pub/sub channel that announces changes to the gateway's workers."""
        return f"{self.prefix}events"

    def breaker(self, deployment: str) -> str:
        return f"{self.prefix}cb:{deployment}"

    def sticky(self, key: str) -> str:
        """The variant a sticky key (user, conversation) was assigned in the A/B split."""
        return f"{self.prefix}ab:sticky:{key}"

    def flushed(self, worker: str) -> str:
        """The last counter batch of one worker applied to `ab:counters` (exactly-once flushes)."""
        return f"{self.prefix}ab:flushed:{worker}"

    def affinity(self, conversation: str) -> str:
        return f"{self.prefix}affinity:{conversation}"


def as_text(value: object) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def optional_text(value: object) -> str | None:
    """A Redis reply that may be missing (None) as text."""
    return None if value is None else as_text(value)
