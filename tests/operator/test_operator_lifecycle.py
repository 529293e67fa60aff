"""The real operator (`routeiq operator`, a subprocess) against the API emulator.

The emulator validates every write strictly (built-in kinds with kubernetes-validate, custom
resources with their CRD), so every child the operator creates here is one a real API server
would accept. The drift timer runs every 2 s. The scenarios are shared with e2e/ (a real cluster).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.k8s.emulator import KubeEmulator
from tests.operator import scenarios
from tests.operator.conftest import OperatorProcess
from tests.operator.scenarios import Harness

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def make_deployment_ready(emulator: KubeEmulator) -> Callable[[str, str, int], None]:
    """What the Deployment controller would report once the pods are ready (the emulator runs none)."""

    def mark(namespace: str, name: str, replicas: int) -> None:
        deployment = emulator.get_object("deployments", name, namespace)
        assert deployment is not None
        emulator.patch_status(
            "deployments",
            name,
            {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
            },
            namespace,
        )

    return mark


@pytest.fixture
def harness(emulator: KubeEmulator, operator_process: OperatorProcess, namespace: str) -> Harness:
    return Harness(
        cluster=emulator,
        namespace=namespace,
        operator_log=operator_process.log,
        mark_ready=make_deployment_ready(emulator),
        inject_faults=emulator.inject_faults,
    )


def test_create_makes_every_child_and_reports_ready(harness: Harness, emulator: KubeEmulator) -> None:
    scenarios.create_makes_every_child_and_reports_ready(harness)
    # the chart grants `get` only on Secrets: the operator reads them by name, never lists or watches
    reads = emulator.requests_matching(path_re=r"/secrets")
    assert reads, "the gateway's master key Secret was read"
    for read in reads:
        assert read.method == "GET", read
        assert not read.watch, read
        assert re.search(r"/namespaces/[^/]+/secrets/[^/]+$", read.path), f"not a read by name: {read}"


def test_updates_converge(harness: Harness) -> None:
    scenarios.updates_converge(harness)


def test_external_secret_needs_its_crd(harness: Harness) -> None:
    scenarios.external_secret_needs_its_crd(harness)


def test_prometheus_rule_needs_its_crd(harness: Harness) -> None:
    scenarios.prometheus_rule_needs_its_crd(harness)


def test_delete_removes_the_children(harness: Harness) -> None:
    scenarios.delete_removes_the_children(harness)


def test_drift_is_repaired(harness: Harness) -> None:
    scenarios.drift_is_repaired(harness)


def test_api_errors_are_retried(harness: Harness) -> None:
    scenarios.api_errors_are_retried(harness)


def test_invalid_gateway_that_bypassed_admission_gets_a_condition_and_no_children(harness: Harness) -> None:
    scenarios.invalid_gateway_that_bypassed_admission_gets_a_condition_and_no_children(harness)


def test_operator_restarted_mid_reconcile_converges_without_duplicates(
    own_emulator: tuple[KubeEmulator, Path], tmp_path: Path
) -> None:
    emulator, kubeconfig = own_emulator
    operators = [OperatorProcess(kubeconfig, tmp_path / "first.log")]

    def restart() -> None:
        operators[-1].kill()
        operators.append(OperatorProcess(kubeconfig, tmp_path / "second.log"))

    harness = Harness(
        emulator, "ns", lambda: operators[-1].log(), make_deployment_ready(emulator), emulator.inject_faults
    )
    try:
        scenarios.operator_restarted_mid_reconcile_converges_without_duplicates(harness, restart)
    finally:
        operators[-1].stop()


def test_kubectl_applies_the_crds_and_gets_a_gateway_by_short_name(tmp_path: Path) -> None:
    with KubeEmulator() as emulator:
        kubeconfig = str(emulator.write_kubeconfig(tmp_path / "kubeconfig"))
        # the emulator serves no OpenAPI document, so kubectl cannot validate client-side
        scenarios.kubectl_applies_the_crds_and_gets_a_gateway_by_short_name(kubeconfig, ["--validate=false"])


def make_deployment_stalled(emulator: KubeEmulator) -> Callable[[str, str], None]:
    """What the Deployment controller reports when the current template's pods are not ready in time."""

    def mark(namespace: str, name: str) -> None:
        deployment = emulator.get_object("deployments", name, namespace)
        assert deployment is not None
        emulator.patch_status(
            "deployments",
            name,
            {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": 3,
                "updatedReplicas": 1,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
                ],
            },
            namespace,
        )

    return mark


def test_model_rollout_and_automatic_rollback(
    emulator: KubeEmulator, operator_process: OperatorProcess, namespace: str
) -> None:
    scenarios.model_rollout_and_automatic_rollback(
        Harness(
            cluster=emulator,
            namespace=namespace,
            operator_log=operator_process.log,
            mark_ready=make_deployment_ready(emulator),
            inject_faults=emulator.inject_faults,
            mark_stalled=make_deployment_stalled(emulator),
        )
    )
