"""RoutingExperiment scenarios (tests/operator/experiment_scenarios.py) against a real cluster.

The operator runs locally, so the Redis it talks to is a local redis-server started here; the
gateway's pods are not needed (the scenarios stand in for their counter flushes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.operator import experiment_scenarios
from tests.operator.conftest import OperatorProcess
from tests.operator.scenarios import Harness
from tests.redis_server import RedisServer

from e2e.conftest import gateway_image
from e2e.real_cluster import RealCluster


@pytest.fixture
def local_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def test_experiment_resumes_after_operator_restart(
    cluster: RealCluster, kubeconfig_path: Path, namespace: str, tmp_path: Path, local_redis: RedisServer
) -> None:
    operators = [OperatorProcess(kubeconfig_path, tmp_path / "first.log")]

    def restart() -> None:
        operators[-1].kill()
        operators.append(OperatorProcess(kubeconfig_path, tmp_path / "second.log"))

    harness = Harness(cluster, namespace, lambda: operators[-1].log(), image=gateway_image())
    try:
        experiment_scenarios.experiment_resumes_after_operator_restart(harness, restart, local_redis.url)
    finally:
        operators[-1].stop()


def test_second_experiment_on_a_gateway_waits(harness: Harness, local_redis: RedisServer) -> None:
    experiment_scenarios.second_experiment_on_a_gateway_waits(harness, local_redis.url)
