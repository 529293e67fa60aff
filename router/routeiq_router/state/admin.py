"""Writing and reading a gateway's shared state from outside the gateway (CLI, operator).

Every write changes the keys and announces the change on the gateway's pub/sub channel in
one Lua script, so no worker can miss it between the write and the notification.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from routeiq_router.state.breakers import BreakerPolicy, RedisCircuitBreakers
from routeiq_router.state.counters import parse_counters
from routeiq_router.state.keys import GatewayKeys, as_text
from routeiq_router.state.variants import StateError, VariantSpec, decode_variants, validate_variants

__all__ = ["StateAdmin"]

# KEYS[1] ab:weights, KEYS[2] ab:counters; ARGV: channel, reset ('1': drop every counter, else
# only the split's `:assigned` fields), then name/value pairs. The split restarts from the new
# weights; the outcome counters carry on unless reset.
_SET_WEIGHTS = """
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[2])
else
  for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
    if string.sub(field, -9) == ':assigned' then redis.call('HDEL', KEYS[2], field) end
  end
end
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('PUBLISH', ARGV[1], cjson.encode({type = 'weights', at_ms = at}))
return 1
"""

# KEYS[1] strategy:active; ARGV: channel, name ('' clears).
_SET_ACTIVE = """
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('PUBLISH', ARGV[1], cjson.encode({type = 'strategy', at_ms = at}))
return 1
"""


class StateAdmin:
    """Operations on one gateway's shared state (`routeiq state ...`)."""

    def __init__(
        self, client: Redis, gateway: str, strategy_known: Callable[[str], bool] | None = None
    ) -> None:
        self.client = client
        self.keys = GatewayKeys(gateway)
        self.strategy_known = strategy_known
        self._set_weights = client.register_script(_SET_WEIGHTS)
        self._set_active = client.register_script(_SET_ACTIVE)

    async def set_weights(self, variants: Sequence[VariantSpec], *, reset_counters: bool = False) -> None:
        """Replace the A/B variants (an empty list ends the split). StateError names a bad one."""
        validate_variants(variants, self.strategy_known)
        args: list[str] = [self.keys.events, "1" if reset_counters else "0"]
        for variant in variants:
            args += [variant.name, variant.to_json()]
        await self._set_weights(keys=[self.keys.ab_weights, self.keys.ab_counters], args=args)

    async def set_active_strategy(self, name: str | None) -> None:
        """Override the gateway's configured strategy (None: back to the configured one)."""
        if name is not None and self.strategy_known is not None and not self.strategy_known(name):
            raise StateError(f"unknown strategy {name!r}")
        await self._set_active(keys=[self.keys.active_strategy], args=[self.keys.events, name or ""])

    async def show(self, policy: BreakerPolicy | None = None) -> dict[str, Any]:
        """Everything shared about the gateway: variants, override, counters, breakers."""
        async with self.client.pipeline(transaction=True) as pipeline:
            pipeline.hgetall(self.keys.ab_weights)
            pipeline.get(self.keys.active_strategy)
            pipeline.hgetall(self.keys.ab_counters)
            raw_weights, raw_active, raw_counters = await pipeline.execute()
        try:
            variants: Any = [
                {
                    "name": v.name,
                    "strategy": v.strategy,
                    "weight": v.weight,
                    "modelGroup": v.model_group,
                    "model": v.model,
                }
                for v in decode_variants(raw_weights)
            ]
        except StateError as error:
            variants = {"error": str(error), "raw": {as_text(k): as_text(v) for k, v in raw_weights.items()}}
        counters = parse_counters({as_text(k): int(v) for k, v in raw_counters.items()})
        breakers = RedisCircuitBreakers(self.client, self.keys, policy or BreakerPolicy())
        open_breakers = {
            deployment: {"state": str(state), "seconds_left_open": round(left, 3)}
            for deployment, (state, left) in (await breakers.snapshot()).items()
        }
        return {
            "gateway": self.keys.gateway,
            "keyPrefix": self.keys.prefix,
            "activeStrategy": None if raw_active is None else as_text(raw_active),
            "variants": variants,
            "counters": {name: c.as_dict() for name, c in sorted(counters.items())},
            "breakers": open_breakers,
        }
