"""The outcome counters one gateway worker records for the A/B variants, and how they reach Redis.

Each `record_*` adds to this worker's totals and, with Redis, to a pending batch. `flush`
applies the batch to the gateway's `ab:counters` hash (its fields: `routeiq_router.state.counters`)
with a per-worker sequence number in one Lua script, so a batch is applied exactly once even when
a reply is lost and the batch is sent again. `RoutingState` (`routeiq_router.state.store`) flushes
every 200 ms while Redis answers; while it does not, the counts accumulate here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from routeiq_router.state.counters import bucket_label
from routeiq_router.state.keys import GatewayKeys
from routeiq_router.state.variants import StateError

__all__ = ["COST_SQ_CAP_MICROUSD", "FEEDBACK_RANGE", "OutcomeCounters"]

# feedback scores clients may report (thumbs 0/1, stars 1-5, NPS 0-10, ...); bounded so the squares
# of thousandths summed in a Redis integer cannot overflow before ~10^10 scores
FEEDBACK_RANGE = (-10.0, 10.0)
# the cost of one call counted into the squares (`cost_microusd_sq`): at most $10, so the sum of
# squares of micro-dollars holds ~46,000 such calls, and ~4.6e12 calls of a cent
COST_SQ_CAP_MICROUSD = 10_000_000

# KEYS[1] ab:counters, KEYS[2] this worker's ab:flushed marker; ARGV: seq, ttl seconds, then
# field/delta pairs. Applies the batch only if its sequence number is new: exactly once.
# A counter near the 64-bit limit stops growing instead of failing the script half-way (Redis does
# not undo the increments already made, and a retry would apply them again).
_APPLY_BATCH = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local seq = tonumber(ARGV[1])
if seq <= last then return 0 end
for i = 3, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if current + tonumber(ARGV[i + 1]) < 4.6e18 then
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('SET', KEYS[2], seq, 'EX', ARGV[2])
return 1
"""

_FLUSHED_MARKER_TTL_SECONDS = 7 * 86400


class OutcomeCounters:
    """One worker's outcome counters: everything it recorded, and the batches it flushes."""

    def __init__(self, keys: GatewayKeys, worker_id: str, *, shared: bool) -> None:
        self.keys = keys
        self.worker_id = worker_id
        self.shared = shared  # with Redis: counts also wait in `pending` for a flush
        self.pending: Counter[str] = Counter()
        self.unacked: tuple[int, dict[str, int]] | None = None  # (sequence, batch) sent, not applied yet
        self.sequence = 0
        self._totals: Counter[str] = Counter()  # what this worker recorded (readiness detail, tests)
        self._apply_batch: Any = None

    def connect(self, client: Redis) -> None:
        """Flush to this Redis from now on."""
        self._apply_batch = client.register_script(_APPLY_BATCH)

    def record_request(self, variant: str, latency_seconds: float, error: bool) -> None:
        """One client request the variant served (counted once, at its end)."""
        latency_ms = max(0.0, latency_seconds * 1000.0)
        self._count(
            {
                f"{variant}:requests": 1,
                f"{variant}:errors": 1 if error else 0,
                f"{variant}:latency_ms_sum": round(latency_ms),
                f"{variant}:latency_bucket:{bucket_label(latency_ms)}": 1,
            }
        )

    def record_usage(
        self, variant: str, prompt_tokens: int, completion_tokens: int, cost_usd: float | None
    ) -> None:
        """Tokens and cost of one successful provider call made for the variant."""
        cost = round((cost_usd or 0.0) * 1_000_000)
        self._count(
            {
                f"{variant}:prompt_tokens": prompt_tokens,
                f"{variant}:completion_tokens": completion_tokens,
                f"{variant}:cost_microusd": cost,
                # the cost test needs the variance of the cost per request
                f"{variant}:cost_microusd_sq": min(cost, COST_SQ_CAP_MICROUSD) ** 2,
            }
        )

    def record_feedback(self, variant: str, score: float) -> None:
        """A score a client reported for a request the variant served (see `FEEDBACK_RANGE`)."""
        low, high = FEEDBACK_RANGE
        if not low <= score <= high:
            raise StateError(f"feedback score must be within {low:g}..{high:g} (got {score:g})")
        milli = round(score * 1000)
        # _count skips zero deltas: the count carries the events whose score is 0
        self._count(
            {
                f"{variant}:feedback_count": 1,
                f"{variant}:feedback_milli_sum": milli,
                f"{variant}:feedback_milli_sq": milli * milli,
            }
        )

    def _count(self, deltas: Mapping[str, int]) -> None:
        for name, delta in deltas.items():
            if delta:
                self._totals[name] += delta
                if self.shared:
                    self.pending[name] += delta

    def recorded(self) -> dict[str, int]:
        """Everything this worker counted since it started (flushed or not)."""
        return dict(self._totals)

    async def flush(self) -> bool:
        """Apply pending counters to `ab:counters` exactly once; True when nothing is left."""
        if self._apply_batch is None:
            return not self.pending
        if self.unacked is None:
            if not self.pending:
                return True
            self.sequence += 1
            self.unacked = (self.sequence, dict(self.pending))
            self.pending.clear()
        sequence, batch = self.unacked
        args: list[str | int] = [sequence, _FLUSHED_MARKER_TTL_SECONDS]
        for name, delta in batch.items():
            args += [name, delta]
        await self._apply_batch(keys=[self.keys.ab_counters, self.keys.flushed(self.worker_id)], args=args)
        self.unacked = None  # applied now, or found applied already (a lost reply): never twice
        return not self.pending

    def unflushed_requests(self) -> int:
        """Requests counted here and not yet applied in Redis."""
        batches = [self.pending] + ([Counter(self.unacked[1])] if self.unacked else [])
        return sum(v for batch in batches for k, v in batch.items() if k.endswith(":requests"))
