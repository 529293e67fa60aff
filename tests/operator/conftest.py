"""Fixtures for the operator's tests: the API emulator with RouteIQ's CRDs, and the operator process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s

from routeiq_operator.crds import KINDS
from routeiq_operator.kube import KubeClient
from routeiq_operator.schema import custom_resource_definition
from tests.k8s.emulator import KubeEmulator
from tests.ports import free_port

ROUTEIQ = str(Path(sys.executable).parent / "routeiq")
RESYNC_SECONDS = "2"
EXPERIMENT_TICK_SECONDS = "1"


def install_crds(emulator: KubeEmulator) -> None:
    for model in KINDS:
        emulator.create_object("customresourcedefinitions", custom_resource_definition(model))


class OperatorProcess:
    """`routeiq operator --standalone` against the emulator, its log in a file."""

    def __init__(self, kubeconfig: Path, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self._log = log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEIQ_")}
        env.update(
            KUBECONFIG=str(kubeconfig),
            ROUTEIQ_OPERATOR_RESYNC_SECONDS=RESYNC_SECONDS,
            ROUTEIQ_OPERATOR_EXPERIMENT_TICK_SECONDS=EXPERIMENT_TICK_SECONDS,
            ROUTEIQ_OPERATOR_METRICS_PORT=str(self.metrics_port),
            # the tests' S3 (moto) listens on 127.0.0.1
            ROUTEIQ_SSRF_HOST_ALLOWLIST="127.0.0.1",
        )
        self.process = subprocess.Popen(
            [ROUTEIQ, "operator", "--standalone", "--liveness-port", str(self.liveness_port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.wait_alive()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_alive(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"operator not alive after {timeout}s:\n{self.log()[-4000:]}")

    def metrics(self) -> str:
        """The operator's /metrics, as Prometheus scrapes it."""
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crashed pod."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture(scope="module")
def emulator() -> Iterator[KubeEmulator]:
    with KubeEmulator() as running:
        install_crds(running)
        yield running
    assert not running.internal_errors, "\n".join(running.internal_errors)


@pytest.fixture(scope="module")
def kubeconfig(emulator: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return emulator.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")


@pytest.fixture(scope="module")
def operator_process(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    yield process
    process.stop()


@pytest.fixture
def namespace(emulator: KubeEmulator, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test, with the Secret gateways reference."""
    name = f"t-{request.node.name.lower().replace('_', '-')[:40].strip('-')}-{free_port() % 10000}"
    emulator.create_object(
        "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    emulator.create_object(
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "routeiq-secrets", "namespace": name},
            "stringData": {"master-key": "sk-operator-test-never-logged", "openai": "sk-openai-never-logged"},
        },
    )
    return name


@pytest.fixture
def own_emulator(tmp_path: Path) -> Iterator[tuple[KubeEmulator, Path]]:
    """An emulator of the test's own (with namespace `ns`), for a test that restarts the operator."""
    with KubeEmulator() as emulator:
        install_crds(emulator)
        emulator.create_object(
            "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}
        )
        yield emulator, emulator.write_kubeconfig(tmp_path / "kubeconfig")
    assert not emulator.internal_errors, "\n".join(emulator.internal_errors)


@pytest.fixture
def kube(emulator: KubeEmulator) -> Iterator[KubeClient]:
    """The operator's own KubeClient on the module's emulator, for driving controllers in-process."""
    with k8s.ApiClient(k8s.Configuration(host=emulator.server_url)) as api:
        yield KubeClient(api)
