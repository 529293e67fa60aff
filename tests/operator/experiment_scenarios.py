"""RoutingExperiment scenarios with the real operator process, shared by tests/ (the API emulator)
and e2e/ (a real cluster). Both need a Redis the operator can reach: `redis_url`.

The gateway's workers are stood in for by writing `ab:counters` as their counter flush does
(HINCRBY of `<variant>:<counter>` fields), so no gateway pod has to run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from routeiq_router.state.keys import GatewayKeys
from tests.operator.scenarios import Harness, exists, has_condition, wait


def _secret(namespace: str, redis_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "redis", "namespace": namespace},
        "stringData": {"url": redis_url},
    }


def _experiment(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "routeiq.io/v1alpha1",
        "kind": "RoutingExperiment",
        "metadata": {"name": "exp", "namespace": namespace},
        "spec": {
            "gatewayRef": {"name": "gw"},
            "control": "control",
            "variants": [
                {"name": "control", "strategy": "round-robin", "weight": 70},
                {"name": "candidate", "strategy": "least-busy", "weight": 30},
            ],
            # no verdict within the test: the point is that counting carries on
            "analysis": {"intervalSeconds": 10, "minSamplesPerVariant": 100000},
        },
    }


def _serve(client: redis.Redis, gateway: str, variant: str, requests: int, errors: int) -> None:
    counters = GatewayKeys(gateway).ab_counters
    client.hincrby(counters, f"{variant}:requests", requests)
    client.hincrby(counters, f"{variant}:errors", errors)
    client.hincrby(counters, f"{variant}:latency_bucket:250", requests)


def experiment_resumes_after_operator_restart(
    h: Harness, restart_operator: Callable[[], None], redis_url: str
) -> None:
    """Counts are never lost: the split and counters live in Redis, the run's identity in status."""
    cluster, namespace = h.cluster, h.namespace
    cluster.create_object("secrets", _secret(namespace, redis_url), namespace)
    body = h.gateway("gw")
    body["spec"]["secrets"]["redisUrl"] = {"name": "redis", "key": "url"}
    cluster.create_object("routeiqgateways", body)
    cluster.create_object("routingexperiments", _experiment(namespace))
    running = wait(
        cluster,
        "routingexperiments",
        "exp",
        namespace,
        lambda o: (o or {}).get("status", {}).get("phase") == "Running",
    )
    assert running is not None
    assert has_condition("Ready", "True", "Running")(running)
    started, run = running["status"]["startedAt"], running["status"]["variantsFingerprint"]
    gateway = f"{namespace}/gw"
    client = redis.Redis.from_url(redis_url)
    try:
        assert set(client.hkeys(GatewayKeys(gateway).ab_weights)) == {b"control", b"candidate"}
        _serve(client, gateway, "control", 700, 7)
        _serve(client, gateway, "candidate", 300, 3)
        counted = wait(
            cluster,
            "routingexperiments",
            "exp",
            namespace,
            lambda o: (o or {}).get("status", {}).get("samples") == 1000,
            timeout=40,
        )
        assert counted is not None
        restart_operator()
        _serve(client, gateway, "control", 350, 0)
        _serve(client, gateway, "candidate", 150, 50)
        resumed = wait(
            cluster,
            "routingexperiments",
            "exp",
            namespace,
            lambda o: (o or {}).get("status", {}).get("samples") == 1500,
            timeout=40,
        )
        assert resumed is not None
        status = resumed["status"]
        assert (status["phase"], status["startedAt"], status["variantsFingerprint"]) == (
            "Running",
            started,
            run,
        )
        by_name = {v["name"]: v for v in status["variants"]}
        assert (by_name["control"]["requests"], by_name["candidate"]["errors"]) == (1050, 53)
        # deleting the experiment ends the split: the gateway's own routing applies again
        cluster.delete_object("routingexperiments", "exp", namespace)
        deadline = time.monotonic() + 40
        while client.hgetall(GatewayKeys(gateway).ab_weights) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.hgetall(GatewayKeys(gateway).ab_weights) == {}
    finally:
        client.close()


def second_experiment_on_a_gateway_waits(h: Harness, redis_url: str) -> None:
    cluster, namespace = h.cluster, h.namespace
    cluster.create_object("secrets", _secret(namespace, redis_url), namespace)
    body = h.gateway("gw")
    body["spec"]["secrets"]["redisUrl"] = {"name": "redis", "key": "url"}
    cluster.create_object("routeiqgateways", body)
    cluster.create_object("routingexperiments", _experiment(namespace))
    wait(
        cluster,
        "routingexperiments",
        "exp",
        namespace,
        lambda o: (o or {}).get("status", {}).get("phase") == "Running",
    )
    second = _experiment(namespace)
    second["metadata"]["name"] = "exp-2"
    cluster.create_object("routingexperiments", second)
    waiting = wait(
        cluster, "routingexperiments", "exp-2", namespace, has_condition("Ready", "False", "GatewayBusy")
    )
    assert waiting is not None
    assert "RoutingExperiment exp is already running" in str(waiting["status"])
    # the first one ends: the second starts
    cluster.delete_object("routingexperiments", "exp", namespace)
    started = wait(
        cluster,
        "routingexperiments",
        "exp-2",
        namespace,
        lambda o: (o or {}).get("status", {}).get("phase") == "Running",
        timeout=40,
    )
    assert started is not None
    assert wait(cluster, "routingexperiments", "exp-2", namespace, exists) is not None
