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

Its parts live beside it: the local copy and how events and resyncs update it in
`state.local_copy`, the outcome counters and their exactly-once flush in `state.outcomes`,
the A/B variants' format and checks in `state.variants` (re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from routeiq_router import metrics
from routeiq_router.state.affinity import MemoryAffinity
from routeiq_router.state.breakers import (
    BreakerPolicy,
    BreakerState,
    MemoryCircuitBreakers,
    RedisCircuitBreakers,
)
from routeiq_router.state.keys import GatewayKeys, optional_text
from routeiq_router.state.local_copy import LocalCopy
from routeiq_router.state.outcomes import FEEDBACK_RANGE, OutcomeCounters
from routeiq_router.state.variants import (
    StateError,
    VariantSpec,
    decode_variants,
    parse_variant_argument,
    validate_variants,
)

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
# how long RoutingState.close may take in all: a gateway worker exits within its drain timeout
# plus a little, whatever Redis does
CLOSE_TIMEOUT_SECONDS = 3.0


async def _settle(
    tasks: Sequence[asyncio.Task[Any]] | set[asyncio.Task[Any]], within: float, what: str
) -> None:
    """Wait up to `within` seconds for `tasks` to end; cancel and abandon those that do not, saying so."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=within)
    for task in pending:
        task.cancel()
    if pending:
        logger.warning(
            f"{what} did not stop within the close deadline; abandoned", extra={"tasks": len(pending)}
        )


FLUSH_INTERVAL_SECONDS = 0.2
_REDIS_ERRORS = (RedisError, OSError)


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
        self._clock = clock
        self._copy = LocalCopy(
            self.keys,
            sticky_seconds=options.sticky_ttl_seconds,
            changed=self._changed,
            strategy_known=strategy_known,
            clock=clock,
        )
        policy = options.breaker_policy
        self._memory_breakers = MemoryCircuitBreakers(policy, clock)
        ttl = options.affinity_ttl_seconds
        self._memory_affinity = MemoryAffinity(ttl, clock) if ttl > 0 else None
        self._counters = OutcomeCounters(self.keys, self.worker_id, shared=options.redis_url is not None)
        self._client: Redis | None = None
        self._breakers: RedisCircuitBreakers | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._degraded_since: float | None = None
        self.status = RedisStatus.DISABLED if options.redis_url is None else RedisStatus.CONNECTING
        self.redis_errors = 0
        self.degraded_transitions = 0
        self.last_error: str | None = None
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
            # one immediate retry on a broken connection, on a fresh one: after a Redis restart
            # every pooled connection is stale, and the first command on each would otherwise
            # degrade the worker although Redis answers. Timeouts are not retried (a hung Redis
            # costs a request one timeout, not two); beyond that the caller falls back to local
            # state and the sync loop does the reconnecting.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._breakers = RedisCircuitBreakers(self._client, self.keys, self.options.breaker_policy)
        self._counters.connect(self._client)
        synced = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._sync_loop(synced), name="routeiq-state-sync"),
            asyncio.create_task(self._flush_loop(), name="routeiq-state-flush"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(synced.wait(), first_sync_timeout)

    async def close(self, within: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Stop the background tasks and flush what is still pending (best effort), within
        `within` seconds whatever Redis does: a step that has not finished by then is abandoned
        (cancelled) with a warning naming it, and the rest goes on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within

        def left() -> float:
            return max(0.05, deadline - loop.time())

        for task in self._tasks:
            task.cancel()
        await _settle(self._tasks, left(), "shared-state sync and flush loops")
        self._tasks = []
        await _settle(set(self._background), left(), "shared-state writes in flight")
        if self._client is not None:
            try:
                if self.status is RedisStatus.OK:
                    await asyncio.wait_for(self.flush(), left())
            except (TimeoutError, *_REDIS_ERRORS) as error:
                logger.warning(
                    "shared-state counters not flushed at close",
                    extra={
                        "error": f"{type(error).__name__}: {error}",
                        "unflushed_requests": self._unflushed_requests(),
                    },
                )
            with contextlib.suppress(TimeoutError, *_REDIS_ERRORS):
                await asyncio.wait_for(self._client.aclose(), left())
            self._client = None

    # ---- what the request path reads ------------------------------------------------------------

    @property
    def variants(self) -> tuple[VariantSpec, ...]:
        return self._copy.variants if self.options.ab_enabled else ()

    @property
    def active_strategy(self) -> str | None:
        return self._copy.active

    @property
    def last_state_error(self) -> str | None:
        """Why the state in Redis was last refused (the worker keeps its last valid state); None
        when the last reload was applied."""
        return self._copy.last_state_error

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
        redis_split = self._copy.redis_split
        if (want_split or affinity is not None) and self._redis_usable() and self._client is not None:
            try:  # one round trip in every case
                if want_split and redis_split is not None and affinity is not None:
                    chosen, raw_pin = await redis_split.assign_and_get(
                        sticky_key, self.keys.affinity(affinity)
                    )
                    pinned = optional_text(raw_pin)
                elif want_split and redis_split is not None:
                    chosen = await redis_split.assign(sticky_key)
                elif affinity is not None:
                    pinned = optional_text(await self._client.get(self.keys.affinity(affinity)))
                want_split, affinity = False, None  # answered by Redis
            except _REDIS_ERRORS as error:
                self._degrade(error)
        if want_split and self._copy.memory_split is not None:
            chosen = await self._copy.memory_split.assign(sticky_key)
        if affinity is not None and self._memory_affinity is not None:
            pinned = await self._memory_affinity.get(affinity)
        variant = next((v for v in variants if v.name == chosen), None)
        if variant is not None and kept is None:
            metrics.ab_assigned(variant.experiment, variant.name)
        strategy = variant.strategy if variant is not None else self._copy.active
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
            until = self._copy.open.get(deployment)
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
                if verdict is BreakerState.CLOSED:  # closed meanwhile; the event may still be on its way
                    self._copy.open.pop(deployment, None)
                metrics.breaker_state(deployment, verdict.value)
                return verdict is not BreakerState.OPEN
        if await self._memory_breakers.allow(deployment):
            self._copy.open.pop(deployment, None)
            metrics.breaker_state(deployment, self._memory_breakers.peek(deployment).value)
            return True
        return False

    def open_breakers(self) -> dict[str, float]:
        """Deployments known to be open here, with the seconds left of their open period."""
        now = self._clock()
        known = {deployment: max(0.0, until - now) for deployment, until in self._copy.open.items()}
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
                if state is BreakerState.OPEN and self._copy.open.get(deployment, now) <= now:
                    # it opened just now (not an extra failure of a breaker already open, whose
                    # period runs from its first opening, as in Redis)
                    self._copy.open[deployment] = now + self.options.breaker_policy.open_seconds
                    metrics.breaker_state(deployment, state.value)
                return state
        state = await self._memory_breakers.record_failure(deployment)
        if state is BreakerState.OPEN:
            metrics.breaker_state(deployment, state.value)
        return state

    async def record_success(self, deployment: str) -> None:
        """A provider call succeeded; only a probing deployment needs telling anyone."""
        if not self.options.breakers_enabled:
            return
        if self._redis_usable() and self._breakers is not None:
            if deployment not in self._copy.open:
                return
            try:
                if await self._breakers.record_success(deployment) is BreakerState.CLOSED:
                    self._copy.open.pop(deployment, None)
                    metrics.breaker_state(deployment, BreakerState.CLOSED.value)
            except _REDIS_ERRORS as error:
                self._degrade(error)
            return
        was = self._memory_breakers.peek(deployment)
        if await self._memory_breakers.record_success(deployment) is BreakerState.CLOSED:
            self._copy.open.pop(deployment, None)
            if was is not BreakerState.CLOSED:
                metrics.breaker_state(deployment, BreakerState.CLOSED.value)

    def record_request(self, variant: str, latency_seconds: float, error: bool) -> None:
        """One client request the variant served (counted once, at its end)."""
        self._counters.record_request(variant, latency_seconds, error)

    def record_usage(
        self, variant: str, prompt_tokens: int, completion_tokens: int, cost_usd: float | None
    ) -> None:
        """Tokens and cost of one successful provider call made for the variant."""
        self._counters.record_usage(variant, prompt_tokens, completion_tokens, cost_usd)

    def record_feedback(self, variant: str, score: float) -> None:
        """A score a client reported for a request the variant served (see `FEEDBACK_RANGE`)."""
        self._counters.record_feedback(variant, score)

    def recorded(self) -> dict[str, int]:
        """Everything this worker counted since it started (flushed or not)."""
        return self._counters.recorded()

    async def flush(self) -> bool:
        """Apply pending counters to `ab:counters` exactly once; True when nothing is left."""
        if self._client is None:
            return not self._counters.pending
        return await self._counters.flush()

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
                        await self._copy.apply_event(self._client, message.get("data"))
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
                # bounded: closing a subscription whose read was just cancelled can wait on the
                # connection it held, and a cancelled loop must end so that close() does
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
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
        await self._copy.resync(self._client, self._breakers)

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
        metrics.redis_up(False)
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
        metrics.redis_up(True)
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
        return self._counters.unflushed_requests()

    def health(self) -> dict[str, Any]:
        """The readiness detail: where the state comes from and how fresh it is."""
        detail: dict[str, Any] = {
            "gateway": self.options.gateway,
            "redis": str(self.status),
            "variants": {
                v.name: {"strategy": v.strategy, "weight": v.weight, "model": v.model} for v in self.variants
            },
            "active_strategy": self._copy.active,
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
        if self.options.ab_enabled is False and self._copy.variants:
            detail["ab_weights_ignored"] = "ROUTEIQ_AB_TESTING_ENABLED is false"
        return detail
