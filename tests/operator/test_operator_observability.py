"""The real operator process (`routeiq operator`) on the API emulator: its /metrics port, scraped
as Prometheus does, and its JSON log lines."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from routeiq_router.artifacts.manifest import TrainingData, write_artifact
from routeiq_router.state.keys import GatewayKeys
from tests.k8s.emulator import KubeEmulator
from tests.operator.conftest import OperatorProcess
from tests.operator.scenarios import gateway, wait
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(operator: OperatorProcess) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(operator.metrics())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    wanted = set(labels.items())
    return {key: v for (metric, key), v in samples.items() if metric == name and wanted <= key}


def eventually(operator: OperatorProcess, check: Callable[[Samples], bool], timeout: float = 30) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(operator)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.3)


def test_metrics_and_json_logs(
    emulator: KubeEmulator,
    operator_process: OperatorProcess,
    namespace: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    operator = operator_process
    # -- a ModelArtifact: verified, then the digest in service ---------------------------------------
    write_artifact(
        tmp_path / "v1",
        strategy="knn",
        files={"labels.json": b'{"version": 1}'},
        candidates=["small", "large"],
        training_data=TrainingData(sha256="ab" * 32, examples=10),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    digest = hashlib.sha256((tmp_path / "v1" / "manifest.json").read_bytes()).hexdigest()
    emulator.create_object(
        "modelartifacts",
        {
            "apiVersion": "routeiq.io/v1alpha1",
            "kind": "ModelArtifact",
            "metadata": {"name": "knn-v1", "namespace": namespace},
            "spec": {"source": {"uri": (tmp_path / "v1").as_uri()}, "strategy": "knn"},
        },
    )
    artifact = {"namespace": namespace, "artifact": "knn-v1"}
    samples = eventually(operator, lambda s: value(s, "routeiq_operator_artifact_verified", **artifact) == 1)
    assert value(samples, "routeiq_operator_artifact_verified", **artifact) == 1
    assert series(samples, "routeiq_operator_artifact_info", **artifact) == {
        frozenset({**artifact, "digest": digest, "strategy": "knn"}.items()): 1.0
    }

    # -- a gateway with Redis: its passes and the children applied -----------------------------------
    emulator.create_object(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis", "namespace": namespace},
            "stringData": {"url": redis_server.url},
        },
        namespace,
    )
    body = gateway("gw", namespace)
    body["spec"]["secrets"]["redisUrl"] = {"name": "redis", "key": "url"}
    emulator.create_object("routeiqgateways", body)
    samples = eventually(
        operator,
        lambda s: (
            (value(s, "routeiq_operator_reconciles_total", kind="RouteIQGateway", result="success") or 0) >= 1
            and (value(s, "routeiq_operator_children_applied_total", kind="Deployment") or 0) >= 1
        ),
    )
    assert (
        value(samples, "routeiq_operator_reconciles_total", kind="RouteIQGateway", result="success") or 0
    ) >= 1
    assert (value(samples, "routeiq_operator_children_applied_total", kind="Deployment") or 0) >= 1
    assert (
        value(samples, "routeiq_operator_reconcile_duration_seconds_count", kind="RouteIQGateway") or 0
    ) >= 1

    # -- an experiment: its gauges after an analysis, gone once it is deleted ---------------------
    emulator.create_object(
        "routingexperiments",
        {
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
                "analysis": {"intervalSeconds": 3600, "minSamplesPerVariant": 10},
            },
        },
    )

    def phase(expected: str) -> Callable[[dict[str, Any] | None], bool]:
        return lambda o: ((o or {}).get("status") or {}).get("phase") == expected

    assert wait(emulator, "routingexperiments", "exp", namespace, phase("Running")) is not None
    client = redis.Redis.from_url(redis_server.url)
    try:
        counters = GatewayKeys(f"{namespace}/gw").ab_counters
        for variant, requests, errors in (("control", 700, 7), ("candidate", 300, 3)):
            client.hincrby(counters, f"{variant}:requests", requests)
            client.hincrby(counters, f"{variant}:errors", errors)
            client.hincrby(counters, f"{variant}:latency_bucket:250", requests)
    finally:
        client.close()
    # a spec change is analysed at once (the interval is an hour)
    emulator.patch_object(
        "routingexperiments", "exp", {"spec": {"analysis": {"minSamplesPerVariant": 11}}}, namespace
    )
    analysed = wait(
        emulator,
        "routingexperiments",
        "exp",
        namespace,
        lambda o: ((o or {}).get("status") or {}).get("samples") == 1000,
    )
    assert analysed is not None
    by_name = {item["name"]: item for item in analysed["status"]["variants"]}
    experiment = {"namespace": namespace, "experiment": "exp"}
    samples = eventually(
        operator,
        lambda s: value(s, "routeiq_operator_experiment_samples", **experiment, variant="control") == 700,
    )
    assert value(samples, "routeiq_operator_experiment_samples", **experiment, variant="control") == 700
    assert value(samples, "routeiq_operator_experiment_samples", **experiment, variant="candidate") == 300
    candidate = by_name["candidate"]
    assert value(
        samples, "routeiq_operator_experiment_p_value", **experiment, variant="candidate"
    ) == pytest.approx(candidate["pValue"])
    for bound, key in (("estimate", "effect"), ("low", "effectLow"), ("high", "effectHigh")):
        assert value(
            samples, "routeiq_operator_experiment_effect", **experiment, variant="candidate", bound=bound
        ) == pytest.approx(candidate[key])
    verdicts = series(samples, "routeiq_operator_experiment_verdict", **experiment)
    current = analysed["status"].get("verdict") or "continue"
    assert verdicts[frozenset({**experiment, "verdict": current}.items())] == 1
    assert sum(verdicts.values()) == 1
    assert value(samples, "routeiq_operator_experiment_guardrail_breached", **experiment) == 0

    emulator.delete_object("routingexperiments", "exp", namespace)
    emulator.delete_object("modelartifacts", "knn-v1", namespace)
    samples = eventually(
        operator,
        lambda s: (
            not series(s, "routeiq_operator_experiment_samples", **experiment)
            and not series(s, "routeiq_operator_artifact_verified", **artifact)
        ),
    )
    for name in ("samples", "effect", "p_value", "verdict", "guardrail_breached"):
        assert not series(samples, f"routeiq_operator_experiment_{name}", **experiment), name
    assert not series(samples, "routeiq_operator_artifact_verified", **artifact)
    assert not series(samples, "routeiq_operator_artifact_info", **artifact)

    # -- JSON logs: every line parses; a gateway's lines name it ------------------------------------
    lines = [json.loads(line) for line in operator.log().splitlines() if line.strip()]
    about_gateway = [
        line for line in lines if line.get("kind") == "RouteIQGateway" and line.get("namespace") == namespace
    ]
    assert about_gateway, "no log line names the gateway"
    assert {"timestamp", "level", "logger", "message", "service", "name"} <= set(about_gateway[0])
    assert about_gateway[0]["name"] == "gw"
    assert about_gateway[0]["service"] == "routeiq-operator"
