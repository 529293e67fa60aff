"""The routing state one gateway worker reads on every request, shared through Redis.

`RoutingState` is what the routing strategy talks to. With `REDIS_URL` it keeps a local copy
of the slowly changing state (A/B weights, the active strategy override, which breakers are
open) current through the gateway's pub/sub channel plus a periodic full resync, so a request
costs at most one Redis round trip: the atomic variant assignment (pipelined with the
conversation's affinity lookup). Outcome counters are batched and flushed every 200 ms with a
per-worker sequence number, so a batch is applied exactly once even when a reply is lost.

When Redis is unreachable the worker keeps serving on its last known state: weights and the
active strategy as last seen, the variant chosen by the in-memory largest-deficit split, its
own in-memory circuit breakers and affinity. Readiness reports `redis: degraded`; counters
accumulate locally and are flushed when Redis answers again.

Without `REDIS_URL` (tier 1) the same object runs entirely in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from routeiq_router.state.affinity import MemoryAffinity
from routeiq_router.state.breakers import (
    BreakerPolicy,
    BreakerState,
    MemoryCircuitBreakers,
    RedisCircuitBreakers,
)
from routeiq_router.state.counters import bucket_label
from routeiq_router.state.keys import GatewayKeys, as_text
from routeiq_router.state.split import MemoryTrafficSplit, RedisTrafficSplit, Variant
from routeiq_router.strategies.base import MODEL_KEY_PATTERN

__all__ = [
    "FEEDBACK_RANGE",
    "Assignment",
    "RedisStatus",
    "RoutingState",
    "StateError",
    "StateOptions",
    "VariantSpec",
    "decode_variants",
    "parse_variant_argument",
    "validate_variants",
]

logger = logging.getLogger("routeiq.state")

VARIANT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")
MODEL_KEY = re.compile(MODEL_KEY_PATTERN)
FLUSH_INTERVAL_SECONDS = 0.2
# feedback scores clients may report (thumbs 0/1, stars 1-5, NPS 0-10, ...); bounded so the squares
# of thousandths summed in a Redis integer cannot overflow before ~10^10 scores
FEEDBACK_RANGE = (-10.0, 10.0)
# the cost of one call counted into the squares (`cost_microusd_sq`): at most $10, so the sum of
# squares of micro-dollars holds ~46,000 such calls, and ~4.6e12 calls of a cent
COST_SQ_CAP_MICROUSD = 10_000_000
_REDIS_ERRORS = (RedisError, OSError)


class StateError(ValueError):
    """Shared state that cannot be used; the message names the key or field and the problem."""


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One arm of an A/B split: a strategy, its share, optionally its own model group, and
    optionally the key of the trained model it routes with (`ROUTEIQ_VARIANT_MODELS`)."""

    name: str
    strategy: str
    weight: float
    model_group: str | None = None
    model: str | None = None

    def to_json(self) -> str:
        document: dict[str, Any] = {"strategy": self.strategy, "weight": self.weight}
        if self.model_group is not None:
            document["modelGroup"] = self.model_group
        if self.model is not None:
            document["model"] = self.model
        return json.dumps(document, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, name: str, raw: str) -> VariantSpec:
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as error:
            raise StateError(f"variant {name!r}: value is not JSON ({error.msg})") from None
        if not isinstance(document, dict):
            raise StateError(f"variant {name!r}: value must be a JSON object")
        strategy, weight = document.get("strategy"), document.get("weight")
        model_group = document.get("modelGroup")
        model = document.get("model")
        if not isinstance(strategy, str) or not strategy:
            raise StateError(f"variant {name!r}: 'strategy' must be a non-empty string")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise StateError(f"variant {name!r}: 'weight' must be a number")
        if model_group is not None and (not isinstance(model_group, str) or not model_group):
            raise StateError(f"variant {name!r}: 'modelGroup' must be a non-empty string")
        _check_model(name, model)
        return cls(name=name, strategy=strategy, weight=float(weight), model_group=model_group, model=model)


def _check_model(variant: str, model: object) -> None:
    """StateError unless `model` is None or a model key (a Kubernetes object name)."""
    if model is not None and (not isinstance(model, str) or not MODEL_KEY.fullmatch(model)):
        raise StateError(
            f"variant {variant!r}: 'model' must be a model key: 1-253 lowercase letters, digits, '-' or '.', "
            f"starting and ending with a letter or digit (got {model!r})"
        )


def validate_variants(
    variants: Sequence[VariantSpec], strategy_known: Callable[[str], bool] | None = None
) -> None:
    """Raise StateError naming the first bad variant (name, strategy, weight, model, duplicates)."""
    names: set[str] = set()
    for variant in variants:
        if not VARIANT_NAME.match(variant.name):
            raise StateError(
                f"variant {variant.name!r}: name must be 1-63 lowercase letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit"
            )
        if variant.name in names:
            raise StateError(f"variant {variant.name!r} appears twice")
        names.add(variant.name)
        if not (0 <= variant.weight <= 100):
            raise StateError(
                f"variant {variant.name!r}: weight must be within 0-100 (got {variant.weight:g})"
            )
        if strategy_known is not None and not strategy_known(variant.strategy):
            raise StateError(f"variant {variant.name!r}: unknown strategy {variant.strategy!r}")
        _check_model(variant.name, variant.model)
    if variants and sum(variant.weight for variant in variants) <= 0:
        raise StateError("at least one variant needs a positive weight")


def parse_variant_argument(argument: str) -> VariantSpec:
    """`NAME=STRATEGY:WEIGHT` (the CLI's form), e.g. `control=round-robin:70`."""
    name, equals, rest = argument.partition("=")
    strategy, colon, weight = rest.rpartition(":")
    if not equals or not colon or not name or not strategy:
        raise StateError(f"{argument!r}: expected VARIANT=STRATEGY:WEIGHT, e.g. control=round-robin:70")
    try:
        value = float(weight)
    except ValueError:
        raise StateError(f"{argument!r}: weight {weight!r} is not a number") from None
    return VariantSpec(name=name, strategy=strategy, weight=value)


def decode_variants(
    raw: Mapping[bytes | str, bytes | str], strategy_known: Callable[[str], bool] | None = None
) -> tuple[VariantSpec, ...]:
    """The `ab:weights` hash as variants (sorted by name); StateError on the first bad field."""
    variants = tuple(
        VariantSpec.from_json(as_text(name), as_text(value))
        for name, value in sorted(raw.items(), key=lambda item: as_text(item[0]))
    )
    validate_variants(variants, strategy_known)
    return variants


class RedisStatus(StrEnum):
    DISABLED = "disabled"  # no REDIS_URL: in-memory state (tier 1)
    CONNECTING = "connecting"
    OK = "ok"
    DEGRADED = "degraded"  # configured but unreachable: serving on the last known state


@dataclass(frozen=True, slots=True)
class StateOptions:
    gateway: str = "default/routeiq"
    redis_url: str | None = None
    ab_enabled: bool = True
    breakers_enabled: bool = True
    breaker_policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    affinity_ttl_seconds: float = 3600.0
    sticky_ttl_seconds: float = 86400.0
    redis_timeout_seconds: float = 0.25
    resync_seconds: float = 5.0

    @classmethod
    def from_settings(cls, settings: Any) -> StateOptions:
        """From a `RouteIQSettings` (typed loosely to keep this module free of pydantic-settings)."""
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
        return cls(
            gateway=settings.gateway,
            redis_url=redis_url,
            ab_enabled=settings.ab_testing_enabled,
            breakers_enabled=settings.cb_enabled,
            breaker_policy=BreakerPolicy(
                failure_threshold=settings.cb_failure_threshold,
                window_seconds=settings.cb_window_seconds,
                open_seconds=settings.cb_timeout_seconds,
                half_open_probes=settings.cb_half_open_probes,
            ),
            affinity_ttl_seconds=settings.affinity_ttl_seconds,
            sticky_ttl_seconds=settings.ab_sticky_ttl_seconds,
            redis_timeout_seconds=settings.redis_timeout_ms / 1000.0,
            resync_seconds=settings.state_resync_seconds,
        )


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the shared state says about one request before a deployment is chosen."""

    variant: VariantSpec | None  # the A/B variant, when a split is active
    strategy: str | None  # the strategy to use: the variant's, the active override, or None (configured)
    pinned: str | None  # the deployment the conversation is pinned to, if any


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


class RoutingState:
    """One worker's view of its gateway's shared routing state (see the module docstring)."""

    def __init__(
        self,
        options: StateOptions,
        *,
        strategy_known: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        worker_id: str | None = None,
    ) -> None:
        self.options = options
        self.keys = GatewayKeys(options.gateway)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._strategy_known = strategy_known
        self._clock = clock
        self._variants: tuple[VariantSpec, ...] = ()
        self._active: str | None = None
        self._memory_split: MemoryTrafficSplit | None = None
        self._redis_split: RedisTrafficSplit | None = None
        self._open: dict[str, float] = {}  # deployment -> when (clock) its open period ends
        policy = options.breaker_policy
        self._memory_breakers = MemoryCircuitBreakers(policy, clock)
        ttl = options.affinity_ttl_seconds
        self._memory_affinity = MemoryAffinity(ttl, clock) if ttl > 0 else None
        self._pending: Counter[str] = Counter()
        self._unacked: tuple[int, dict[str, int]] | None = None
        self._sequence = 0
        self._totals: Counter[str] = Counter()  # what this worker recorded (readiness detail, tests)
        self._client: Redis | None = None
        self._breakers: RedisCircuitBreakers | None = None
        self._apply_batch: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._degraded_since: float | None = None
        self.status = RedisStatus.DISABLED if options.redis_url is None else RedisStatus.CONNECTING
        self.redis_errors = 0
        self.degraded_transitions = 0
        self.last_error: str | None = None
        self.last_state_error: str | None = None
        self.on_change: list[Callable[[str], None]] = []  # called with the event type after a change

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self, first_sync_timeout: float = 2.0) -> None:
        """Connect (if Redis is configured) and load the shared state; never raises for an
        unreachable Redis: the worker then starts degraded and keeps trying."""
        if self.options.redis_url is None:
            return
        timeout = self.options.redis_timeout_seconds
        self._client = Redis.from_url(
            self.options.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            client_name=f"routeiq:{self.worker_id}",
            # fail fast: the caller falls back to local state; the sync loop does the reconnecting
            retry=Retry(NoBackoff(), 0),
        )
        self._breakers = RedisCircuitBreakers(self._client, self.keys, self.options.breaker_policy)
        self._apply_batch = self._client.register_script(_APPLY_BATCH)
        synced = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._sync_loop(synced), name="routeiq-state-sync"),
            asyncio.create_task(self._flush_loop(), name="routeiq-state-flush"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(synced.wait(), first_sync_timeout)

    async def close(self) -> None:
        """Stop the background tasks and flush what is still pending (best effort)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            with contextlib.suppress(*_REDIS_ERRORS):
                if self.status is RedisStatus.OK:
                    await self.flush()
            await self._client.aclose()
            self._client = None

    # ---- what the request path reads ------------------------------------------------------------

    @property
    def variants(self) -> tuple[VariantSpec, ...]:
        return self._variants if self.options.ab_enabled else ()

    @property
    def active_strategy(self) -> str | None:
        return self._active

    def _redis_usable(self) -> bool:
        return self._client is not None and self.status is RedisStatus.OK

    async def assign(
        self, sticky_key: str | None = None, conversation: str | None = None, keep_variant: str | None = None
    ) -> Assignment:
        """The variant (if a split is active) and the conversation's pinned deployment.

        `keep_variant`: the variant a retry of the same request was already assigned (kept,
        not counted again)."""
        variants = self.variants
        affinity = conversation if conversation is not None and self._memory_affinity is not None else None
        kept = next((v for v in variants if v.name == keep_variant), None) if keep_variant else None
        want_split = bool(variants) and kept is None
        chosen: str | None = kept.name if kept else None
        pinned: str | None = None
        redis_split = self._redis_split
        if (want_split or affinity is not None) and self._redis_usable() and self._client is not None:
            try:  # one round trip in every case
                if want_split and redis_split is not None and affinity is not None:
                    chosen, raw_pin = await redis_split.assign_and_get(
                        sticky_key, self.keys.affinity(affinity)
                    )
                    pinned = _optional_text(raw_pin)
                elif want_split and redis_split is not None:
                    chosen = await redis_split.assign(sticky_key)
                elif affinity is not None:
                    pinned = _optional_text(await self._client.get(self.keys.affinity(affinity)))
                want_split, affinity = False, None  # answered by Redis
            except _REDIS_ERRORS as error:
                self._degrade(error)
        if want_split and self._memory_split is not None:
            chosen = await self._memory_split.assign(sticky_key)
        if affinity is not None and self._memory_affinity is not None:
            pinned = await self._memory_affinity.get(affinity)
        variant = next((v for v in variants if v.name == chosen), None)
        strategy = variant.strategy if variant is not None else self._active
        return Assignment(variant=variant, strategy=strategy, pinned=pinned)

    def pin(self, conversation: str, deployment: str) -> None:
        """Pin the conversation to the deployment (refreshing its TTL); never waits for Redis."""
        if self._memory_affinity is None:
            return
        self._memory_affinity.put(conversation, deployment)
        if self._redis_usable() and self._client is not None:
            ttl_ms = int(self.options.affinity_ttl_seconds * 1000)
            self._spawn(self._client.set(self.keys.affinity(conversation), deployment, px=ttl_ms))

    def breaker_view(self, deployments: Sequence[str]) -> tuple[list[str], list[str]]:
        """Split deployments into (closed, probing): closed ones may be chosen freely; a probing
        one (its open period is over) only after `admit_probe` says yes. Open ones are left out."""
        if not self.options.breakers_enabled:
            return list(deployments), []
        now = self._clock()
        closed: list[str] = []
        probing: list[str] = []
        local = not self._redis_usable()
        for deployment in deployments:
            until = self._open.get(deployment)
            if until is not None and now < until:
                continue
            if local:
                state = self._memory_breakers.peek(deployment)
                if state is BreakerState.CLOSED and until is None:
                    closed.append(deployment)
                elif state is not BreakerState.OPEN:
                    probing.append(deployment)
            elif until is None:
                closed.append(deployment)
            else:
                probing.append(deployment)
        return closed, probing

    async def admit_probe(self, deployment: str) -> bool:
        """Ask whether a request may probe a deployment whose breaker is no longer open."""
        if self._redis_usable() and self._breakers is not None:
            try:
                verdict = await self._breakers.admit(deployment)
            except _REDIS_ERRORS as error:
                self._degrade(error)
            else:
                if verdict is BreakerState.CLOSED:
                    self._open.pop(deployment, None)  # closed meanwhile; the event may still be on its way
                return verdict is not BreakerState.OPEN
        if await self._memory_breakers.allow(deployment):
            self._open.pop(deployment, None)
            return True
        return False

    def open_breakers(self) -> dict[str, float]:
        """Deployments known to be open here, with the seconds left of their open period."""
        now = self._clock()
        known = {deployment: max(0.0, until - now) for deployment, until in self._open.items()}
        if not self._redis_usable():  # this worker's own breakers decide (no Redis, or degraded)
            known.update(self._memory_breakers.open_remaining())
        return known

    # ---- outcomes -----------------------------------------------------------------------------

    async def record_failure(self, deployment: str) -> BreakerState:
        """A provider call to the deployment failed in a way that is the deployment's fault."""
        if not self.options.breakers_enabled:
            return BreakerState.CLOSED
        if self._redis_usable() and self._breakers is not None:
            try:
                state = await self._breakers.record_failure(deployment)
            except _REDIS_ERRORS as error:
                self._degrade(error)
            else:
                now = self._clock()
                if state is BreakerState.OPEN and self._open.get(deployment, now) <= now:
                    # it opened just now (not an extra failure of a breaker already open, whose
                    # period runs from its first opening, as in Redis)
                    self._open[deployment] = now + self.options.breaker_policy.open_seconds
                return state
        return await self._memory_breakers.record_failure(deployment)

    async def record_success(self, deployment: str) -> None:
        """A provider call succeeded; only a probing deployment needs telling anyone."""
        if not self.options.breakers_enabled:
            return
        if self._redis_usable() and self._breakers is not None:
            if deployment not in self._open:
                return
            try:
                if await self._breakers.record_success(deployment) is BreakerState.CLOSED:
                    self._open.pop(deployment, None)
            except _REDIS_ERRORS as error:
                self._degrade(error)
            return
        if await self._memory_breakers.record_success(deployment) is BreakerState.CLOSED:
            self._open.pop(deployment, None)

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
                if self.options.redis_url is not None:
                    self._pending[name] += delta

    def recorded(self) -> dict[str, int]:
        """Everything this worker counted since it started (flushed or not)."""
        return dict(self._totals)

    async def flush(self) -> bool:
        """Apply pending counters to `ab:counters` exactly once; True when nothing is left."""
        if self._apply_batch is None or self._client is None:
            return not self._pending
        if self._unacked is None:
            if not self._pending:
                return True
            self._sequence += 1
            self._unacked = (self._sequence, dict(self._pending))
            self._pending.clear()
        sequence, batch = self._unacked
        args: list[str | int] = [sequence, _FLUSHED_MARKER_TTL_SECONDS]
        for name, delta in batch.items():
            args += [name, delta]
        await self._apply_batch(keys=[self.keys.ab_counters, self.keys.flushed(self.worker_id)], args=args)
        self._unacked = None  # applied now, or found applied already (a lost reply): never twice
        return not self._pending

    # ---- keeping the local copy current -------------------------------------------------------

    async def _sync_loop(self, synced: asyncio.Event) -> None:
        assert self._client is not None
        backoff = 0.05
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.keys.events)  # before the resync: no change slips between
                await self.resync()
                self._recovered()
                synced.set()
                backoff = 0.05
                next_resync = self._clock() + self.options.resync_seconds
                while True:
                    # short waits: a request that saw Redis fail is noticed within a quarter second
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
                    if message is not None and message.get("type") == "message":
                        await self._apply_event(message.get("data"))
                    if self.status is not RedisStatus.OK:  # a request saw an error; the channel lives
                        await self._client.ping()
                        await self.resync()
                        self._recovered()
                    if self._clock() >= next_resync:
                        await self.resync()
                        next_resync = self._clock() + self.options.resync_seconds
            except asyncio.CancelledError:
                raise
            except _REDIS_ERRORS as error:
                self._degrade(error)
                synced.set()  # start-up goes on, degraded
            except Exception as error:  # never let the loop die: it is how the worker recovers
                logger.exception("shared-state sync failed", extra={"error": str(error)})
                self._degrade(error)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            if not self._redis_usable():
                continue
            try:
                await self.flush()
            except _REDIS_ERRORS as error:
                self._degrade(error)

    async def resync(self) -> None:
        """Reload weights, the active strategy and the open breakers from Redis."""
        assert self._client is not None
        assert self._breakers is not None
        await self._reload_config()
        snapshot = await self._breakers.snapshot()
        now = self._clock()
        self._open = {
            deployment: now + remaining if state is BreakerState.OPEN else now
            for deployment, (state, remaining) in snapshot.items()
        }

    async def _reload_config(self) -> None:
        assert self._client is not None
        async with self._client.pipeline(transaction=True) as pipeline:
            pipeline.hgetall(self.keys.ab_weights)
            pipeline.get(self.keys.active_strategy)
            raw_weights, raw_active = await pipeline.execute()
        try:
            variants = decode_variants(raw_weights, self._strategy_known)
            active = _optional_text(raw_active)
            if active is not None and self._strategy_known is not None and not self._strategy_known(active):
                raise StateError(f"{self.keys.active_strategy}: unknown strategy {active!r}")
        except StateError as error:
            if str(error) != self.last_state_error:
                logger.error(
                    "shared state refused; keeping the last valid state",
                    extra={"gateway": self.options.gateway, "error": str(error)},
                )
            self.last_state_error = str(error)
            return
        self.last_state_error = None
        self._apply_config(variants, active)

    def _apply_config(self, variants: tuple[VariantSpec, ...], active: str | None) -> None:
        if variants != self._variants:
            self._variants = variants
            if variants:
                split = [Variant(v.name, v.weight) for v in variants]
                self._memory_split = MemoryTrafficSplit(split)
                assert self._client is not None
                self._redis_split = RedisTrafficSplit(
                    self._client, self.keys, split, sticky_seconds=self.options.sticky_ttl_seconds
                )
            else:
                self._memory_split = self._redis_split = None
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
        if active != self._active:
            self._active = active
            logger.info("active strategy applied", extra={"strategy": active or "(configured)"})
            self._changed("strategy")

    async def _apply_event(self, data: object) -> None:
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
                self._open[deployment] = self._clock() + float(event.get("open_ms", 0)) / 1000.0
            else:
                self._open.pop(deployment, None)
            self._changed("breaker")
        else:  # weights or strategy: read the current values (events may arrive out of order)
            await self._reload_config()

    def _changed(self, kind: str) -> None:
        for listener in self.on_change:
            listener(kind)

    # ---- degraded mode ------------------------------------------------------------------------

    def _degrade(self, error: BaseException) -> None:
        self.redis_errors += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if self.status is RedisStatus.DEGRADED:
            return
        previous = self.status
        self.status = RedisStatus.DEGRADED
        self._degraded_since = self._clock()
        self.degraded_transitions += 1
        self._memory_breakers = MemoryCircuitBreakers(self.options.breaker_policy, self._clock)
        logger.warning(
            "Redis unreachable: serving on the last known routing state",
            extra={"gateway": self.options.gateway, "error": self.last_error, "was": str(previous)},
        )

    def _recovered(self) -> None:
        if self.status is RedisStatus.OK:
            return
        if self._degraded_since is not None:
            logger.info(
                "Redis reachable again: shared routing state resynced",
                extra={
                    "gateway": self.options.gateway,
                    "degraded_seconds": round(self._clock() - self._degraded_since, 3),
                    "unflushed_requests": self._unflushed_requests(),
                },
            )
        self.status = RedisStatus.OK
        self._degraded_since = None

    def _spawn(self, awaitable: Any) -> None:
        async def guarded() -> None:
            try:
                await awaitable
            except _REDIS_ERRORS as error:
                self._degrade(error)

        task = asyncio.get_running_loop().create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _unflushed_requests(self) -> int:
        batches = [self._pending] + ([Counter(self._unacked[1])] if self._unacked else [])
        return sum(v for batch in batches for k, v in batch.items() if k.endswith(":requests"))

    def health(self) -> dict[str, Any]:
        """The readiness detail: where the state comes from and how fresh it is."""
        detail: dict[str, Any] = {
            "gateway": self.options.gateway,
            "redis": str(self.status),
            "variants": {
                v.name: {"strategy": v.strategy, "weight": v.weight, "model": v.model} for v in self.variants
            },
            "active_strategy": self._active,
            "open_breakers": sorted(self.open_breakers()),
            "redis_errors": self.redis_errors,
            "degraded_episodes": self.degraded_transitions,
            "unflushed_requests": self._unflushed_requests(),
        }
        if self._degraded_since is not None:
            detail["degraded_seconds"] = round(self._clock() - self._degraded_since, 3)
        if self.last_error is not None:
            detail["last_redis_error"] = self.last_error
        if self.last_state_error is not None:
            detail["state_error"] = self.last_state_error
        if self.options.ab_enabled is False and self._variants:
            detail["ab_weights_ignored"] = "ROUTEIQ_AB_TESTING_ENABLED is false"
        return detail


def _optional_text(value: object) -> str | None:
    return None if value is None else as_text(value)
