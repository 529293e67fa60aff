"""The operator's lifecycle scenarios (tests/operator/scenarios.py) against a real cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.operator import scenarios
from tests.operator.conftest import OperatorProcess
from tests.operator.scenarios import Harness

from e2e.conftest import gateway_image
from e2e.real_cluster import RealCluster


def test_create_makes_every_child_and_reports_ready(harness: Harness) -> None:
    if harness.image is None:
        pytest.skip(
            "set ROUTEIQ_E2E_GATEWAY_IMAGE to an image the cluster can run to see the pods become Ready"
        )
    scenarios.create_makes_every_child_and_reports_ready(harness)


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
    scenarios.api_errors_are_retried(harness)  # skips: a real API server takes no injected faults


def test_invalid_gateway_that_bypassed_admission_gets_a_condition_and_no_children(harness: Harness) -> None:
    scenarios.invalid_gateway_that_bypassed_admission_gets_a_condition_and_no_children(harness)


def test_operator_restarted_mid_reconcile_converges_without_duplicates(
    cluster: RealCluster, kubeconfig_path: Path, namespace: str, tmp_path: Path
) -> None:
    operators = [OperatorProcess(kubeconfig_path, tmp_path / "first.log")]

    def restart() -> None:
        operators[-1].kill()
        operators.append(OperatorProcess(kubeconfig_path, tmp_path / "second.log"))

    harness = Harness(cluster, namespace, lambda: operators[-1].log(), image=gateway_image())
    try:
        scenarios.operator_restarted_mid_reconcile_converges_without_duplicates(harness, restart)
    finally:
        operators[-1].stop()


def test_kubectl_applies_the_crds_and_gets_a_gateway_by_short_name(kubeconfig_path: Path) -> None:
    subprocess_kubeconfig = str(kubeconfig_path)
    scenarios.kubectl_applies_the_crds_and_gets_a_gateway_by_short_name(
        subprocess_kubeconfig, ["--server-side"]
    )
