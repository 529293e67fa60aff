"""RoutingExperiments with the real operator process (`routeiq operator`) on the API emulator and a
real Redis; the scenarios are shared with e2e/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.k8s.emulator import KubeEmulator
from tests.operator import experiment_scenarios
from tests.operator.conftest import OperatorProcess
from tests.operator.scenarios import Harness
from tests.operator.test_operator_lifecycle import make_deployment_ready
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow


def test_experiment_resumes_after_operator_restart(
    own_emulator: tuple[KubeEmulator, Path], tmp_path: Path, redis_server: RedisServer
) -> None:
    emulator, kubeconfig = own_emulator
    operators = [OperatorProcess(kubeconfig, tmp_path / "first.log")]

    def restart() -> None:
        operators[-1].kill()
        operators.append(OperatorProcess(kubeconfig, tmp_path / "second.log"))

    harness = Harness(emulator, "ns", lambda: operators[-1].log(), make_deployment_ready(emulator))
    try:
        experiment_scenarios.experiment_resumes_after_operator_restart(harness, restart, redis_server.url)
    finally:
        operators[-1].stop()


def test_second_experiment_on_a_gateway_waits(
    emulator: KubeEmulator, operator_process: OperatorProcess, namespace: str, redis_server: RedisServer
) -> None:
    harness = Harness(emulator, namespace, operator_process.log, make_deployment_ready(emulator))
    experiment_scenarios.second_experiment_on_a_gateway_waits(harness, redis_server.url)
