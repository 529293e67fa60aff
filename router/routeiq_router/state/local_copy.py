"""One worker's local copy of its gateway's slowly changing shared state.

The A/B variants (with the traffic splits built from them), the active strategy override and
when each open circuit breaker's open period ends: `RoutingState` (`routeiq_router.state.store`)
reads them on every request without a Redis round trip, and keeps them current by `resync`
(everything, from Redis: on start-up, after an outage and periodically) and `apply_event` (one
message of the gateway's pub/sub channel). A state in Redis the worker cannot use (a bad variant,
an unknown strategy) is refused whole: the copy keeps its last valid state and
`last_state_error` says why.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis

from routeiq_router import metrics
from routeiq_router.state.breakers import BreakerState, RedisCircuitBreakers
from routeiq_router.state.keys import GatewayKeys, as_text, optional_text
from routeiq_router.state.split import MemoryTrafficSplit, RedisTrafficSplit, Variant
from routeiq_router.state.variants import StateError, VariantSpec, decode_variants

__all__ = ["LocalCopy"]

logger = logging.getLogger("routeiq.state")


class LocalCopy:
    """The variants, active strategy and open breakers one worker routes with (module docstring)."""

    def __init__(
        self,
        keys: GatewayKeys,
        *,
        sticky_seconds: float,
        changed: Callable[[str], None],
        strategy_known: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self._sticky_seconds = sticky_seconds
        self._changed = changed  # called with the event type after a change
        self._strategy_known = strategy_known
        self._clock = clock
        self.variants: tuple[VariantSpec, ...] = ()
        self.active: str | None = None
        self.memory_split: MemoryTrafficSplit | None = None
        self.redis_split: RedisTrafficSplit | None = None
        self.open: dict[str, float] = {}  # deployment -> when (clock) its open period ends
        self.last_state_error: str | None = None

    async def resync(self, client: Redis, breakers: RedisCircuitBreakers) -> None:
        """Reload weights, the active strategy and the open breakers from Redis."""
        await self.reload_config(client)
        snapshot = await breakers.snapshot()
        now = self._clock()
        open_now = {
            deployment: now + remaining if state is BreakerState.OPEN else now
            for deployment, (state, remaining) in snapshot.items()
        }
        for deployment, (state, _) in snapshot.items():
            if deployment not in self.open:  # opened while this worker was not listening
                metrics.breaker_state(deployment, state.value)
        for deployment in self.open.keys() - open_now.keys():  # closed meanwhile
            metrics.breaker_state(deployment, BreakerState.CLOSED.value)
        self.open = open_now

    async def reload_config(self, client: Redis) -> None:
        """Reload the weights and the active strategy from Redis."""
        async with client.pipeline(transaction=True) as pipeline:
            pipeline.hgetall(self.keys.ab_weights)
            pipeline.get(self.keys.active_strategy)
            raw_weights, raw_active = await pipeline.execute()
        try:
            variants = decode_variants(raw_weights, self._strategy_known)
            active = optional_text(raw_active)
            if active is not None and self._strategy_known is not None and not self._strategy_known(active):
                raise StateError(f"{self.keys.active_strategy}: unknown strategy {active!r}")
        except StateError as error:
            if str(error) != self.last_state_error:
                logger.error(
                    "shared state refused; keeping the last valid state",
                    extra={"gateway": self.keys.gateway, "error": str(error)},
                )
            self.last_state_error = str(error)
            return
        self.last_state_error = None
        self._apply_config(client, variants, active)

    def _apply_config(self, client: Redis, variants: tuple[VariantSpec, ...], active: str | None) -> None:
        if variants != self.variants:
            metrics.ab_weights(_weights(variants), _weights(self.variants))
            self.variants = variants
            if variants:
                split = [Variant(v.name, v.weight) for v in variants]
                self.memory_split = MemoryTrafficSplit(split)
                self.redis_split = RedisTrafficSplit(
                    client, self.keys, split, sticky_seconds=self._sticky_seconds
                )
            else:
                self.memory_split = self.redis_split = None
            logger.info(
                "A/B weights applied",
                extra={
                    "variants": {
                        v.name: f"{v.strategy}:{v.weight:g}" + (f" model {v.model}" if v.model else "")
                        for v in variants
                    }
                },
            )
            self._changed("weights")
        if active != self.active:
            self.active = active
            logger.info("active strategy applied", extra={"strategy": active or "(configured)"})
            self._changed("strategy")

    async def apply_event(self, client: Redis, data: object) -> None:
        """Apply one message of the gateway's pub/sub channel."""
        try:
            event = json.loads(as_text(data))
        except (json.JSONDecodeError, UnicodeDecodeError):
            logger.warning("unreadable shared-state event ignored", extra={"event": repr(data)[:200]})
            return
        if not isinstance(event, dict):
            return
        if event.get("type") == "breaker":
            deployment = str(event.get("deployment"))
            if event.get("state") == "open":
                self.open[deployment] = self._clock() + float(event.get("open_ms", 0)) / 1000.0
                metrics.breaker_state(deployment, BreakerState.OPEN.value)
            else:
                self.open.pop(deployment, None)
                metrics.breaker_state(deployment, BreakerState.CLOSED.value)
            self._changed("breaker")
        else:  # weights or strategy: read the current values (events may arrive out of order)
            await self.reload_config(client)
        metrics.propagation_lag(event.get("at_ms"))  # Redis time of the change, in the event


def _weights(variants: tuple[VariantSpec, ...]) -> dict[tuple[str, str], float]:
    """(experiment, variant) -> target weight, in percent of the split."""
    total = sum(v.weight for v in variants)
    return {(v.experiment or "", v.name): (100.0 * v.weight / total if total > 0 else 0.0) for v in variants}
