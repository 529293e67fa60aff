"""The e2e suite: the operator's scenarios against a real cluster (kind, or any KUBECONFIG).

It skips, with one reason, when no cluster answers. With one:

    kind create cluster
    KUBECONFIG=~/.kube/config .venv/bin/pytest e2e -q

The operator runs locally (`routeiq operator --standalone`) against the cluster; the CRDs are
applied first. Readiness needs pods that can start: load a gateway image into the cluster and
name it in ROUTEIQ_E2E_GATEWAY_IMAGE (`repository:tag`), e.g.
`docker build -f Dockerfile.gateway -t routeiq-gateway:e2e . && kind load docker-image routeiq-gateway:e2e`.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.operator.conftest import OperatorProcess
from tests.operator.scenarios import Harness

from e2e.real_cluster import RealCluster

ROOT = Path(__file__).resolve().parents[1]
KUBECONFIG = os.environ.get("KUBECONFIG")
UNREACHABLE = RealCluster.reachable(KUBECONFIG)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if UNREACHABLE is not None:
        for item in items:
            if str(item.path).startswith(str(ROOT / "e2e")):
                item.add_marker(pytest.mark.skip(reason=UNREACHABLE))


@pytest.fixture(scope="session")
def cluster() -> RealCluster:
    real = RealCluster(KUBECONFIG)
    subprocess.run(
        ["kubectl", "apply", "--server-side", "-f", str(ROOT / "crds")], check=True, capture_output=True
    )
    return real


@pytest.fixture(scope="session")
def kubeconfig_path() -> Path:
    return Path(KUBECONFIG or Path.home() / ".kube" / "config")


@pytest.fixture
def operator_process(
    cluster: RealCluster, kubeconfig_path: Path, tmp_path: Path
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig_path, tmp_path / "operator.log")
    yield process
    process.stop()


@pytest.fixture
def namespace(cluster: RealCluster) -> Iterator[str]:
    name = f"routeiq-e2e-{uuid.uuid4().hex[:8]}"
    cluster.create_object("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    cluster.create_object(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "routeiq-secrets", "namespace": name},
            "stringData": {"master-key": "sk-operator-test-never-logged", "openai": "sk-openai-never-logged"},
        },
        name,
    )
    yield name
    cluster.delete_object("namespaces", name)


def gateway_image() -> dict[str, str] | None:
    image = os.environ.get("ROUTEIQ_E2E_GATEWAY_IMAGE")
    if not image:
        return None
    repository, _, tag = image.rpartition(":")
    return {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}


@pytest.fixture
def harness(cluster: RealCluster, operator_process: OperatorProcess, namespace: str) -> Harness:
    return Harness(
        cluster=cluster, namespace=namespace, operator_log=operator_process.log, image=gateway_image()
    )
