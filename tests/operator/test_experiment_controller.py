"""The RoutingExperiment controller against a real Redis and the API emulator.

Traffic is simulated with known effects and counted by the router's own `RoutingState` (the code
a gateway worker runs): variants are assigned by the split in Redis, outcomes recorded and flushed
to `ab:counters`, and the controller reads them back from Redis. Time is passed in (`now`), so an
experiment with a 60 s analysis interval runs its looks without waiting.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from routeiq_operator.experiment.analysis import Decision
from routeiq_operator.experiment.api import RoutingExperimentSpec
from routeiq_operator.experiment.controller import reconcile_experiment, release_experiment
from routeiq_operator.experiment.redis import RedisPool
from routeiq_operator.experiment.selection import analyze, fingerprint
from routeiq_operator.kube import KubeClient
from routeiq_operator.references import ObjectRef, PassResult, admitted_experiment, models_wanted
from routeiq_router.state.admin import StateAdmin
from routeiq_router.state.counters import parse_counters
from routeiq_router.state.keys import GatewayKeys, as_text
from routeiq_router.state.store import RoutingState, StateOptions, VariantSpec
from tests.k8s.emulator import KubeEmulator
from tests.operator.scenarios import gateway
from tests.redis_server import RedisServer

LOG = logging.getLogger("test.experiments")
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
async def pool() -> AsyncIterator[RedisPool]:
    redis = RedisPool()
    yield redis
    await redis.close()


@pytest.fixture
def gateway_id(emulator: KubeEmulator, namespace: str, redis_server: RedisServer) -> str:
    """A gateway `gw` whose REDIS_URL Secret points at the test's redis-server."""
    emulator.create_object(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis", "namespace": namespace},
            "stringData": {"url": redis_server.url},
        },
    )
    body = gateway("gw", namespace)
    body["spec"]["secrets"]["redisUrl"] = {"name": "redis", "key": "url"}
    emulator.create_object("routeiqgateways", body)
    return f"{namespace}/gw"


def experiment(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "gatewayRef": {"name": "gw"},
        "control": "control",
        "variants": [
            {"name": "control", "strategy": "round-robin", "weight": 50},
            {"name": "candidate", "strategy": "least-busy", "weight": 50},
        ],
        "analysis": {"minSamplesPerVariant": 200, "minimumDetectableEffect": 0.2, "intervalSeconds": 60},
        "onVerdict": {"promotion": "automatic"},
    }
    body.update(spec)
    return {
        "apiVersion": "routeiq.io/v1alpha1",
        "kind": "RoutingExperiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


class Traffic:
    """A gateway worker: the split in Redis assigns, the outcome is drawn with the variant's error rate."""

    def __init__(self, state: RoutingState, error_rates: Mapping[str, float], seed: int = 0) -> None:
        self.state = state
        self.error_rates = error_rates
        self.random = np.random.default_rng(seed)

    async def send(self, requests: int) -> None:
        for _ in range(requests):
            assignment = await self.state.assign(None, None, None)
            assert assignment is not None
            assert assignment.variant is not None
            variant = assignment.variant.name
            error = bool(self.random.random() < self.error_rates[variant])
            self.state.record_request(variant, float(self.random.gamma(2.0, 0.2)), error)
            self.state.record_usage(variant, 10, 5, 0.0001)
        # the worker's own flush loop may hold a batch in flight while more is recorded: the
        # flush that applies it leaves the newer counts pending, so flush until nothing is left
        for _ in range(10):
            if await self.state.flush():
                break
        else:
            raise AssertionError("counters still pending after 10 flushes")


@pytest.fixture
async def worker(gateway_id: str, redis_server: RedisServer) -> AsyncIterator[RoutingState]:
    state = RoutingState(StateOptions(redis_url=redis_server.url, gateway=gateway_id))
    await state.start()
    yield state
    await state.close()


async def wait_for_split(state: RoutingState, names: set[str]) -> None:
    """The worker learns the new split through pub/sub; resync to not depend on its timing."""
    await state.resync()
    assert {v.name for v in state.variants} == names


async def run_looks(
    kube: KubeClient,
    emulator: KubeEmulator,
    pool: RedisPool,
    namespace: str,
    name: str,
    traffic: Traffic | None,
    per_look: int,
    looks: int,
    until: set[str],
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for look in range(1, looks + 1):
        if traffic is not None:
            await traffic.send(per_look)
        body = emulator.get_object("routingexperiments", name, namespace)
        assert body is not None
        status = (
            await reconcile_experiment(kube, body, LOG, pool, now=T0 + timedelta(seconds=60 * look))
        ).status
        if status.get("phase") in until:
            return status
    return status


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in status.get("conditions") or [] if c["type"] == kind]
    assert found, (kind, status.get("conditions"))
    result: dict[str, Any] = found[0]
    return result


async def test_a_clear_winner_is_promoted_through_redis_and_delete_restores_routing(
    kube: KubeClient,
    emulator: KubeEmulator,
    pool: RedisPool,
    namespace: str,
    gateway_id: str,
    worker: RoutingState,
    redis_server: RedisServer,
) -> None:
    emulator.create_object("routingexperiments", experiment("exp", namespace))
    body = emulator.get_object("routingexperiments", "exp", namespace)
    assert body is not None
    started = (await reconcile_experiment(kube, body, LOG, pool, now=T0)).status
    assert started["phase"] == "Running"
    assert started["samples"] == 0
    assert condition(started, "Ready")["reason"] == "Running"
    redis = Redis.from_url(redis_server.url)
    keys = GatewayKeys(gateway_id)
    try:
        weights = {as_text(k): as_text(v) for k, v in (await redis.hgetall(keys.ab_weights)).items()}
        assert set(weights) == {"control", "candidate"}
        # every variant names its experiment (the gateway's split metrics carry it)
        assert {json.loads(value)["experiment"] for value in weights.values()} == {"exp"}
        await wait_for_split(worker, {"control", "candidate"})
        traffic = Traffic(worker, {"control": 0.10, "candidate": 0.04}, seed=7)
        status = await run_looks(
            kube, emulator, pool, namespace, "exp", traffic, per_look=400, looks=20, until={"Promoted"}
        )
        assert status["phase"] == "Promoted", status.get("message")
        assert status["verdict"] == "promote"
        assert status["servingVariant"] == "candidate"
        assert status["leader"] == "candidate"
        # a 60 % lower error rate against an MDE of 20 %: well before 20 looks of 200 per arm
        assert status["samples"] <= 6000
        assert status["pValue"] <= 0.05
        by_name = {v["name"]: v for v in status["variants"]}
        assert by_name["candidate"]["decision"] == "promote"
        assert by_name["candidate"]["errorRateLow"] < by_name["candidate"]["errorRate"]
        assert by_name["control"]["p95LatencyMs"] > by_name["control"]["p50LatencyMs"] > 0
        assert by_name["control"]["tokens"] == 15 * by_name["control"]["requests"]
        assert status["promotion"]["activeStrategy"] == "least-busy"
        assert "spec.routing.strategy: least-busy" in status["promotion"]["gitChange"]
        # the winner's strategy is the gateway's strategy now; the split has ended
        assert as_text(await redis.get(keys.active_strategy)) == "least-busy"
        assert await redis.hgetall(keys.ab_weights) == {}
        assert condition(status, "Degraded")["status"] == "False"
        # a later pass changes nothing
        again = emulator.get_object("routingexperiments", "exp", namespace)
        assert again is not None
        assert (await reconcile_experiment(kube, again, LOG, pool)).status["phase"] == "Promoted"
        # deleting the experiment gives the gateway its own routing back
        await release_experiment(kube, again, LOG, pool)
        assert await redis.get(keys.active_strategy) is None
        assert await redis.hgetall(keys.ab_weights) == {}
    finally:
        await redis.aclose()


async def test_a_guardrail_breach_rolls_back_at_once(
    kube: KubeClient,
    emulator: KubeEmulator,
    pool: RedisPool,
    namespace: str,
    gateway_id: str,
    worker: RoutingState,
    redis_server: RedisServer,
) -> None:
    spec = {
        "guardrails": [{"metric": "errorRate", "max": 0.15}],
        "analysis": {"minSamplesPerVariant": 5000, "intervalSeconds": 60},
    }
    emulator.create_object("routingexperiments", experiment("exp", namespace, **spec))
    body = emulator.get_object("routingexperiments", "exp", namespace)
    assert body is not None
    await reconcile_experiment(kube, body, LOG, pool, now=T0)
    await wait_for_split(worker, {"control", "candidate"})
    traffic = Traffic(worker, {"control": 0.02, "candidate": 0.40}, seed=3)
    status = await run_looks(
        kube, emulator, pool, namespace, "exp", traffic, per_look=300, looks=5, until={"RolledBack"}
    )
    assert status["phase"] == "RolledBack"
    assert status["verdict"] == "rollback"
    # the first look with 100 candidate samples: long before minSamplesPerVariant
    assert status["samples"] <= 600
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "GuardrailBreached")
    assert "guardrail errorRate breached" in degraded["message"]
    redis = Redis.from_url(redis_server.url)
    try:
        admin = StateAdmin(redis, gateway_id)
        shown = await admin.show()
        assert shown["variants"] == [
            {"name": "control", "strategy": "round-robin", "weight": 100.0, "modelGroup": None, "model": None}
        ]
    finally:
        await redis.aclose()
    await wait_for_split(worker, {"control"})
    assert {v["name"]: v["weight"] for v in status["variants"]} == {"control": 100, "candidate": 0}


async def test_manual_promotion_waits_for_approval(
    kube: KubeClient,
    emulator: KubeEmulator,
    pool: RedisPool,
    namespace: str,
    gateway_id: str,
    worker: RoutingState,
    redis_server: RedisServer,
) -> None:
    emulator.create_object(
        "routingexperiments", experiment("exp", namespace, onVerdict={"promotion": "manual"})
    )
    body = emulator.get_object("routingexperiments", "exp", namespace)
    assert body is not None
    await reconcile_experiment(kube, body, LOG, pool, now=T0)
    await wait_for_split(worker, {"control", "candidate"})
    traffic = Traffic(worker, {"control": 0.12, "candidate": 0.03}, seed=11)
    status: dict[str, Any] = {}
    for look in range(1, 20):
        await traffic.send(400)
        current = emulator.get_object("routingexperiments", "exp", namespace)
        assert current is not None
        status = (
            await reconcile_experiment(kube, current, LOG, pool, now=T0 + timedelta(minutes=look))
        ).status
        if status.get("verdict") == "promote":
            break
    assert (status["phase"], status["verdict"]) == ("Running", "promote")
    approval = condition(status, "Approved")
    assert (approval["status"], approval["reason"]) == ("False", "AwaitingApproval")
    redis = Redis.from_url(redis_server.url)
    try:
        assert await redis.get(GatewayKeys(gateway_id).active_strategy) is None, "nothing promoted yet"
        emulator.patch_object("routingexperiments", "exp", {"spec": {"approved": True}}, namespace)
        approved = emulator.get_object("routingexperiments", "exp", namespace)
        assert approved is not None
        status = (
            await reconcile_experiment(kube, approved, LOG, pool, now=T0 + timedelta(minutes=30))
        ).status
        assert status["phase"] == "Promoted"
        assert as_text(await redis.get(GatewayKeys(gateway_id).active_strategy)) == "least-busy"
    finally:
        await redis.aclose()


async def test_a_second_experiment_waits_and_names_the_first(
    kube: KubeClient, emulator: KubeEmulator, pool: RedisPool, namespace: str, gateway_id: str
) -> None:
    emulator.create_object("routingexperiments", experiment("first", namespace))
    first = emulator.get_object("routingexperiments", "first", namespace)
    assert first is not None
    assert (await reconcile_experiment(kube, first, LOG, pool, now=T0)).status["phase"] == "Running"
    emulator.create_object("routingexperiments", experiment("second", namespace))
    second = emulator.get_object("routingexperiments", "second", namespace)
    assert second is not None
    status = (await reconcile_experiment(kube, second, LOG, pool, now=T0)).status
    assert status["phase"] == "Pending"
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "GatewayBusy")
    assert "RoutingExperiment first is already running on gateway gw" in ready["message"]
    # the first one's split is untouched
    assert "variantsFingerprint" not in status


async def test_a_split_written_before_variants_named_their_experiment_is_still_ours(
    kube: KubeClient,
    emulator: KubeEmulator,
    pool: RedisPool,
    namespace: str,
    gateway_id: str,
    redis_server: RedisServer,
) -> None:
    """An older operator wrote the split without the experiment's name: the next pass writes it
    again with the name (counters kept), and deleting the experiment still ends it."""
    emulator.create_object("routingexperiments", experiment("exp", namespace))
    body = emulator.get_object("routingexperiments", "exp", namespace)
    assert body is not None
    await reconcile_experiment(kube, body, LOG, pool, now=T0)
    redis = Redis.from_url(redis_server.url)
    keys = GatewayKeys(gateway_id)
    admin = StateAdmin(redis, gateway_id)
    unnamed = [VariantSpec("control", "round-robin", 50), VariantSpec("candidate", "least-busy", 50)]
    try:
        await admin.set_weights(unnamed, reset_counters=False)
        await redis.hincrby(keys.ab_counters, "control:requests", 5)
        later = emulator.get_object("routingexperiments", "exp", namespace)
        assert later is not None
        status = (await reconcile_experiment(kube, later, LOG, pool, force=True, now=T0)).status
        assert "written again" in status["message"]
        assert status["samples"] == 5  # the counters were kept
        weights = {as_text(k): json.loads(v) for k, v in (await redis.hgetall(keys.ab_weights)).items()}
        assert {value.get("experiment") for value in weights.values()} == {"exp"}

        await admin.set_weights(unnamed, reset_counters=False)
        final = emulator.get_object("routingexperiments", "exp", namespace)
        assert final is not None
        await release_experiment(kube, final, LOG, pool)
        assert await redis.hgetall(keys.ab_weights) == {}
    finally:
        await redis.aclose()


async def test_changing_the_variants_restarts_the_run_and_other_changes_do_not(
    kube: KubeClient,
    emulator: KubeEmulator,
    pool: RedisPool,
    namespace: str,
    gateway_id: str,
    worker: RoutingState,
) -> None:
    emulator.create_object("routingexperiments", experiment("exp", namespace))
    body = emulator.get_object("routingexperiments", "exp", namespace)
    assert body is not None
    first = (await reconcile_experiment(kube, body, LOG, pool, now=T0)).status
    await wait_for_split(worker, {"control", "candidate"})
    await Traffic(worker, {"control": 0.1, "candidate": 0.1}).send(100)
    emulator.patch_object(
        "routingexperiments", "exp", {"spec": {"analysis": {"intervalSeconds": 120}}}, namespace
    )
    body = emulator.get_object("routingexperiments", "exp", namespace)
    assert body is not None
    kept = (await reconcile_experiment(kube, body, LOG, pool, now=T0 + timedelta(minutes=1))).status
    assert kept["samples"] == 100
    assert kept["startedAt"] == first["startedAt"]
    variants = [
        {"name": "control", "strategy": "round-robin", "weight": 80},
        {"name": "candidate", "strategy": "least-busy", "weight": 20},
    ]
    emulator.patch_object("routingexperiments", "exp", {"spec": {"variants": variants}}, namespace)
    body = emulator.get_object("routingexperiments", "exp", namespace)
    assert body is not None
    restarted = (await reconcile_experiment(kube, body, LOG, pool, now=T0 + timedelta(minutes=2))).status
    assert restarted["samples"] == 0, "a new split starts with fresh counters"
    assert restarted["startedAt"] != first["startedAt"]
    assert restarted["variantsFingerprint"] != first["variantsFingerprint"]


async def test_pending_without_redis_or_gateway(
    kube: KubeClient, emulator: KubeEmulator, pool: RedisPool, namespace: str
) -> None:
    emulator.create_object("routingexperiments", experiment("exp", namespace))
    body = emulator.get_object("routingexperiments", "exp", namespace)
    assert body is not None
    status = (await reconcile_experiment(kube, body, LOG, pool, now=T0)).status
    assert (status["phase"], condition(status, "Ready")["reason"]) == ("Pending", "GatewayNotFound")
    emulator.create_object("routeiqgateways", gateway("gw", namespace))
    body = emulator.get_object("routingexperiments", "exp", namespace)
    assert body is not None
    status = (await reconcile_experiment(kube, body, LOG, pool, now=T0)).status
    ready = condition(status, "Ready")
    assert (ready["reason"], ready["status"]) == ("RedisNotConfigured", "False")
    assert "spec.secrets.redisUrl" in ready["message"]


def test_admission_takes_the_oldest_unfinished_experiment() -> None:
    def item(name: str, created: str, phase: str | None = None, gw: str = "gw") -> dict[str, Any]:
        return {
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"gatewayRef": {"name": gw}, "variants": []},
            "status": {"phase": phase} if phase else {},
        }

    items = [
        item("done", "2026-01-01T00:00:00Z", "Promoted"),
        item("b", "2026-01-03T00:00:00Z"),
        item("a", "2026-01-02T00:00:00Z", "Running"),
        item("other", "2026-01-01T00:00:00Z", gw="other"),
    ]
    admitted = admitted_experiment(items, "gw")
    assert admitted is not None
    assert admitted["metadata"]["name"] == "a"
    assert admitted_experiment(items[:1], "gw") is None


def test_models_wanted_are_the_admitted_experiments_and_the_serving_variants() -> None:
    def variants(*refs: str) -> list[dict[str, Any]]:
        return [{"name": f"v{i}", "modelArtifactRef": {"name": ref}} for i, ref in enumerate(refs)]

    items = [
        {
            "metadata": {"name": "old", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"gatewayRef": {"name": "gw"}, "variants": variants("a", "b")},
            "status": {"phase": "Promoted", "servingVariant": "v1"},
        },
        {
            "metadata": {"name": "now", "creationTimestamp": "2026-01-02T00:00:00Z"},
            "spec": {"gatewayRef": {"name": "gw"}, "variants": variants("c", "d")},
        },
        {
            "metadata": {"name": "next", "creationTimestamp": "2026-01-03T00:00:00Z"},
            "spec": {"gatewayRef": {"name": "gw"}, "variants": variants("e")},
        },
    ]
    assert models_wanted(items, "gw") == {"b", "c", "d"}


def _spec(**analysis: Any) -> RoutingExperimentSpec:
    return RoutingExperimentSpec.model_validate(
        experiment(
            "x", "ns", analysis={"minSamplesPerVariant": 200, "minimumDetectableEffect": 0.2, **analysis}
        )["spec"]
    )


async def test_repeated_a_a_experiments_promote_at_most_at_the_false_positive_rate(
    redis_server: RedisServer,
) -> None:
    """200 A/A runs (both arms 5 % errors), each looked at 20 times through Redis: the sequential
    test promotes (or rolls back) at most alpha of them. A z-test at every look would exceed it."""
    spec = _spec()
    runs, looks, per_arm = 200, 20, 250
    redis = Redis.from_url(redis_server.url)
    state = RoutingState(StateOptions(redis_url=redis_server.url, gateway="aa/gw"))
    await state.start()
    admin = StateAdmin(redis, "aa/gw")
    outcomes: dict[Decision, int] = dict.fromkeys(Decision, 0)
    try:
        for seed in range(runs):
            await admin.set_weights(
                [VariantSpec("control", "round-robin", 50), VariantSpec("candidate", "least-busy", 50)],
                reset_counters=True,
            )
            rng = np.random.default_rng(seed)
            previous: dict[str, float] = {}
            decision = Decision.CONTINUE
            for look in range(1, looks + 1):
                for variant in ("control", "candidate"):
                    for error in rng.random(per_arm) < 0.05:
                        state.record_request(variant, 0.2, bool(error))
                assert await state.flush()
                raw = await redis.hgetall(GatewayKeys("aa/gw").ab_counters)
                counters = parse_counters({as_text(k): int(v) for k, v in raw.items()})
                assert counters["control"].requests == look * per_arm
                result = analyze(spec, counters, elapsed_seconds=60.0 * look, previous_p_values=previous)
                previous = {v["name"]: v["pValue"] for v in result.variants if "pValue" in v}
                decision = result.decision
                if decision is not Decision.CONTINUE:
                    break
            outcomes[decision] += 1
    finally:
        await state.close()
        await redis.aclose()
    alpha = spec.analysis.significance_level
    assert outcomes[Decision.PROMOTE] <= alpha * runs, outcomes
    assert outcomes[Decision.ROLLBACK] <= alpha * runs, outcomes
    assert outcomes[Decision.PROMOTE] + outcomes[Decision.ROLLBACK] <= alpha * runs, outcomes


def test_the_fingerprint_follows_the_split_only() -> None:
    spec = _spec()
    assert fingerprint(spec) == fingerprint(_spec(intervalSeconds=300))
    changed = spec.model_copy(update={"control": "candidate"})
    assert fingerprint(changed) != fingerprint(spec)


async def test_a_gateway_that_ignores_weights_keeps_the_experiment_pending(
    kube: KubeClient, emulator: KubeEmulator, pool: RedisPool, namespace: str, redis_server: RedisServer
) -> None:
    emulator.create_object(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis", "namespace": namespace},
            "stringData": {"url": redis_server.url},
        },
    )
    body = gateway("gw", namespace, tier="minimal")
    body["spec"]["secrets"]["redisUrl"] = {"name": "redis", "key": "url"}
    emulator.create_object("routeiqgateways", body)
    emulator.create_object("routingexperiments", experiment("exp", namespace))
    current = emulator.get_object("routingexperiments", "exp", namespace)
    assert current is not None
    status = (await reconcile_experiment(kube, current, LOG, pool, now=T0)).status
    ready = condition(status, "Ready")
    assert (status["phase"], ready["reason"]) == ("Pending", "ABTestingDisabled")
    assert "spec.features.abTesting: true" in ready["message"]


async def test_an_assignment_the_gateway_does_not_implement_is_refused_by_name(
    kube: KubeClient, emulator: KubeEmulator, pool: RedisPool, namespace: str, gateway_id: str
) -> None:
    emulator.create_object(
        "routingexperiments", experiment("exp", namespace, assignment={"stickyKey": "user"})
    )
    current = emulator.get_object("routingexperiments", "exp", namespace)
    assert current is not None
    status = (await reconcile_experiment(kube, current, LOG, pool, now=T0)).status
    ready = condition(status, "Ready")
    assert (status["phase"], ready["reason"]) == ("Pending", "StickyKeyUnsupported")
    assert "spec.assignment.stickyKey 'user'" in ready["message"]


async def test_the_gateway_follows_the_first_wait_for_models_and_a_release(
    kube: KubeClient, emulator: KubeEmulator, pool: RedisPool, namespace: str, gateway_id: str
) -> None:
    """The gateway's pass is returned, not run: when the wait for its pods to load a variant's model
    starts (once), and when a release gives the gateway its own routing back."""
    digest = "ab" * 32
    emulator.create_object(
        "modelartifacts",
        {
            "apiVersion": "routeiq.io/v1alpha1",
            "kind": "ModelArtifact",
            "metadata": {"name": "knn", "namespace": namespace},
            "spec": {"source": {"uri": "file:///models/knn"}},
        },
    )
    emulator.patch_status("modelartifacts", "knn", {"phase": "Ready", "digest": digest}, namespace)
    variants = [
        {"name": "control", "strategy": "round-robin", "weight": 50},
        {"name": "candidate", "strategy": "knn", "modelArtifactRef": {"name": "knn"}, "weight": 50},
    ]
    emulator.create_object("routingexperiments", experiment("exp", namespace, variants=variants))
    the_gateway = ObjectRef("RouteIQGateway", namespace, "gw")

    def current() -> dict[str, Any]:
        body = emulator.get_object("routingexperiments", "exp", namespace)
        assert body is not None
        return body

    first = await reconcile_experiment(kube, current(), LOG, pool, now=T0)
    assert (first.status["phase"], condition(first.status, "Ready")["reason"]) == (
        "Pending",
        "WaitingForModels",
    )
    assert first.follow == (the_gateway,)
    again = await reconcile_experiment(kube, current(), LOG, pool, now=T0 + timedelta(seconds=5))
    assert condition(again.status, "Ready")["reason"] == "WaitingForModels"
    assert again.follow == (), "only the first wait reconciles the gateway"
    # nothing written to Redis yet: a release has nothing to give back
    assert await release_experiment(kube, current(), LOG, pool) == PassResult({})

    loaded = {"knn": {"digest": digest, "uri": "file:///models/knn", "role": "variant"}}
    emulator.patch_status("routeiqgateways", "gw", {"models": loaded}, namespace)
    running = await reconcile_experiment(kube, current(), LOG, pool, now=T0 + timedelta(seconds=10))
    assert running.status["phase"] == "Running"
    assert running.follow == ()
    released = await release_experiment(kube, current(), LOG, pool)
    assert released == PassResult({}, (the_gateway,))


@pytest.mark.parametrize(
    ("value", "problem"),
    [("bm90 base64!", "is not valid base64"), (base64.b64encode(b"\xff\xfe").decode(), "is not UTF-8 text")],
)
async def test_a_redis_url_that_cannot_be_read_is_named_not_a_crash(
    kube: KubeClient,
    emulator: KubeEmulator,
    pool: RedisPool,
    namespace: str,
    value: str,
    problem: str,
) -> None:
    emulator.create_object(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis", "namespace": namespace},
            "data": {"url": value},
        },
    )
    body = gateway("gw", namespace)
    body["spec"]["secrets"]["redisUrl"] = {"name": "redis", "key": "url"}
    emulator.create_object("routeiqgateways", body)
    emulator.create_object("routingexperiments", experiment("exp", namespace))
    current = emulator.get_object("routingexperiments", "exp", namespace)
    assert current is not None
    result = await reconcile_experiment(kube, current, LOG, pool, now=T0)
    ready = condition(result.status, "Ready")
    assert (result.status["phase"], ready["reason"]) == ("Pending", "RedisNotConfigured")
    for part in ("Secret redis", "spec.secrets.redisUrl", f"key url {problem}"):
        assert part in ready["message"], (part, ready["message"])
    assert value not in ready["message"]
    assert result.follow == ()
