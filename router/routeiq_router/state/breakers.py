"""Circuit breakers per deployment: in memory (one worker) or in Redis (every worker and replica).

CLOSED opens after `failure_threshold` failures within `window_seconds`; OPEN refuses for
`open_seconds`, then HALF_OPEN admits up to `half_open_probes` requests; a success there closes
the breaker, a failure opens it again. In Redis every transition is one Lua script (atomic, on
the server's clock), so all workers and replicas see the same state.

In Redis the scripts also announce every transition to OPEN and back to CLOSED on the
gateway's pub/sub channel, so each worker keeps a local copy of the open breakers and the
request path needs no Redis round trip for a deployment whose breaker is closed
(`routeiq_router.state.local_copy`, read by `routeiq_router.state.store`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from redis.asyncio import Redis

from routeiq_router.state.keys import GatewayKeys, as_text

__all__ = [
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreakers",
    "MemoryCircuitBreakers",
    "RedisCircuitBreakers",
]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 5  # ROUTEIQ_CB_FAILURE_THRESHOLD
    window_seconds: float = 60.0
    open_seconds: float = 30.0  # ROUTEIQ_CB_TIMEOUT_SECONDS
    half_open_probes: int = 1


class CircuitBreakers(Protocol):
    async def allow(self, deployment: str) -> bool:
        """Whether a request may go to the deployment now (admitting a probe counts it)."""
        ...

    async def record_failure(self, deployment: str) -> BreakerState: ...

    async def record_success(self, deployment: str) -> BreakerState: ...

    async def state(self, deployment: str) -> BreakerState: ...


@dataclass(slots=True)
class _Breaker:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    window_start: float = 0.0
    opened_at: float = 0.0
    probes: int = 0
    probe_at: float = 0.0


class MemoryCircuitBreakers:
    """One worker's breakers (tier 1, or while Redis is unreachable)."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}
        self._lock = threading.Lock()

    def _get(self, deployment: str) -> _Breaker:
        return self._breakers.setdefault(deployment, _Breaker())

    async def allow(self, deployment: str) -> bool:
        with self._lock:
            breaker = self._get(deployment)
            if (
                breaker.state is BreakerState.OPEN
                and self._clock() - breaker.opened_at >= self.policy.open_seconds
            ):
                breaker.state, breaker.probes = BreakerState.HALF_OPEN, 0
            if breaker.state is BreakerState.CLOSED:
                return True
            now = self._clock()
            if breaker.state is BreakerState.HALF_OPEN and now - breaker.probe_at >= self.policy.open_seconds:
                breaker.probes = 0  # the probes admitted never reported back (cancelled): admit again
            if breaker.state is BreakerState.HALF_OPEN and breaker.probes < self.policy.half_open_probes:
                breaker.probes += 1
                breaker.probe_at = now
                return True
            return False

    def peek(self, deployment: str) -> BreakerState:
        """The state `allow` would act on, without admitting anything (OPEN until the open
        period is over, HALF_OPEN after it)."""
        with self._lock:
            breaker = self._breakers.get(deployment)
            if breaker is None:
                return BreakerState.CLOSED
            if (
                breaker.state is BreakerState.OPEN
                and self._clock() - breaker.opened_at >= self.policy.open_seconds
            ):
                return BreakerState.HALF_OPEN
            return breaker.state

    def open_remaining(self) -> dict[str, float]:
        """Deployments whose breaker is open, with the seconds left of the open period."""
        with self._lock:
            now = self._clock()
            return {
                deployment: self.policy.open_seconds - (now - breaker.opened_at)
                for deployment, breaker in self._breakers.items()
                if breaker.state is BreakerState.OPEN and now - breaker.opened_at < self.policy.open_seconds
            }

    async def record_failure(self, deployment: str) -> BreakerState:
        with self._lock:
            breaker = self._get(deployment)
            now = self._clock()
            if breaker.state is BreakerState.HALF_OPEN:
                breaker.state, breaker.opened_at, breaker.probes = BreakerState.OPEN, now, 0
            elif breaker.state is BreakerState.CLOSED:
                if now - breaker.window_start > self.policy.window_seconds:
                    breaker.window_start, breaker.failures = now, 0
                breaker.failures += 1
                if breaker.failures >= self.policy.failure_threshold:
                    breaker.state, breaker.opened_at = BreakerState.OPEN, now
            return breaker.state

    async def record_success(self, deployment: str) -> BreakerState:
        with self._lock:
            breaker = self._get(deployment)
            if breaker.state is BreakerState.HALF_OPEN:
                self._breakers[deployment] = _Breaker()
            return self._breakers[deployment].state

    async def state(self, deployment: str) -> BreakerState:
        with self._lock:
            return self._get(deployment).state


# KEYS[1] breaker hash; ARGV: threshold, window ms, expiry ms, events channel, deployment, open ms.
# Returns the new state; a transition to OPEN is published (at_ms: Redis time, for the propagation lag).
_RECORD_FAILURE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'probes', 0)
  state = 'open'
  redis.call('PUBLISH', ARGV[4], cjson.encode({type = 'breaker', deployment = ARGV[5], state = 'open',
    open_ms = tonumber(ARGV[6]), at_ms = now}))
elseif state == 'closed' then
  local start = tonumber(redis.call('HGET', KEYS[1], 'window_start') or now)
  local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or 0)
  if now - start > tonumber(ARGV[2]) then start = now; failures = 0 end
  failures = failures + 1
  redis.call('HSET', KEYS[1], 'failures', failures, 'window_start', start)
  if failures >= tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
    state = 'open'
    redis.call('PUBLISH', ARGV[4], cjson.encode({type = 'breaker', deployment = ARGV[5], state = 'open',
      open_ms = tonumber(ARGV[6]), at_ms = now}))
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return state
"""

# KEYS[1] breaker hash; ARGV: open ms, probes. Returns 2 when closed, 1 to admit a probe,
# 0 to refuse. Probes that never report back (a cancelled request) are replaced after open ms.
_ALLOW = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return 2 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if state == 'open' then
  if now - tonumber(redis.call('HGET', KEYS[1], 'opened_at')) < tonumber(ARGV[1]) then return 0 end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probes', 0)
elseif now - tonumber(redis.call('HGET', KEYS[1], 'probe_at') or 0) >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'probes', 0)
end
if tonumber(redis.call('HGET', KEYS[1], 'probes') or 0) < tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
  redis.call('HSET', KEYS[1], 'probe_at', now)
  return 1
end
return 0
"""

# KEYS[1] breaker hash; ARGV: events channel, deployment. A success closes a half-open breaker
# (published). Returns the new state.
_RECORD_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half_open' then
  redis.call('DEL', KEYS[1])
  local t = redis.call('TIME')
  local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('PUBLISH', ARGV[1], cjson.encode({type = 'breaker', deployment = ARGV[2], state = 'closed',
    at_ms = at}))
  return 'closed'
end
return state
"""

# KEYS: breaker hashes. Returns, per key, {state, ms until the open period ends (0 unless open)}.
_SNAPSHOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local state = redis.call('HGET', key, 'state') or 'closed'
  local remaining = 0
  if state == 'open' then
    remaining = math.max(0, tonumber(redis.call('HGET', key, 'opened_at')) + tonumber(ARGV[1]) - now)
  end
  out[i] = {state, remaining}
end
return out
"""


class RedisCircuitBreakers:
    """Breakers shared by every worker and replica of one gateway."""

    def __init__(self, client: Redis, keys: GatewayKeys, policy: BreakerPolicy) -> None:
        self.client = client
        self.keys = keys
        self.policy = policy
        self._allow = client.register_script(_ALLOW)
        self._failure = client.register_script(_RECORD_FAILURE)
        self._success = client.register_script(_RECORD_SUCCESS)
        self._snapshot = client.register_script(_SNAPSHOT)
        # a breaker key outlives any window or open period it tracks, then disappears by itself
        self._expiry_ms = int((policy.window_seconds + policy.open_seconds) * 1000) + 3_600_000

    async def allow(self, deployment: str) -> bool:
        return await self.admit(deployment) is not BreakerState.OPEN

    async def admit(self, deployment: str) -> BreakerState:
        """CLOSED: go ahead; HALF_OPEN: admitted as a probe; OPEN: refused."""
        verdict = int(
            await self._allow(
                keys=[self.keys.breaker(deployment)],
                args=[int(self.policy.open_seconds * 1000), self.policy.half_open_probes],
            )
        )
        return {2: BreakerState.CLOSED, 1: BreakerState.HALF_OPEN}.get(verdict, BreakerState.OPEN)

    async def record_failure(self, deployment: str) -> BreakerState:
        state = await self._failure(
            keys=[self.keys.breaker(deployment)],
            args=[
                self.policy.failure_threshold,
                int(self.policy.window_seconds * 1000),
                self._expiry_ms,
                self.keys.events,
                deployment,
                int(self.policy.open_seconds * 1000),
            ],
        )
        return BreakerState(as_text(state))

    async def record_success(self, deployment: str) -> BreakerState:
        closed = await self._success(
            keys=[self.keys.breaker(deployment)], args=[self.keys.events, deployment]
        )
        return BreakerState(as_text(closed))

    async def snapshot(self) -> dict[str, tuple[BreakerState, float]]:
        """Every breaker that is not closed: deployment -> (state, seconds left open)."""
        prefix = self.keys.breaker("")
        names = [as_text(key) async for key in self.client.scan_iter(match=f"{prefix}*", count=1000)]
        if not names:
            return {}
        rows = await self._snapshot(keys=names, args=[int(self.policy.open_seconds * 1000)])
        result: dict[str, tuple[BreakerState, float]] = {}
        for name, (state, remaining_ms) in zip(names, rows, strict=True):
            parsed = BreakerState(as_text(state))
            if parsed is not BreakerState.CLOSED:
                result[name.removeprefix(prefix)] = (parsed, int(remaining_ms) / 1000.0)
        return result

    async def state(self, deployment: str) -> BreakerState:
        stored = await self.client.hget(self.keys.breaker(deployment), "state")
        return BreakerState(as_text(stored)) if stored is not None else BreakerState.CLOSED
