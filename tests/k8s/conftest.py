"""Fixtures for tests that talk to the Kubernetes API emulator (the tests/k8s/emulator package)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client  # type: ignore[import-untyped,unused-ignore]
import pytest

from tests.k8s.emulator import KubeEmulator
from tests.k8s.samples import WIDGET_CRD


@pytest.fixture
def k8s_emulator() -> Iterator[KubeEmulator]:
    """A fresh emulator serving on 127.0.0.1 from its own thread; fails the test on emulator bugs."""
    with KubeEmulator() as emulator:
        yield emulator
    assert not emulator.internal_errors, "the emulator failed internally:\n" + "\n".join(
        emulator.internal_errors
    )


@pytest.fixture
def k8s_kubeconfig(k8s_emulator: KubeEmulator, tmp_path: Path) -> Path:
    """A kubeconfig file for `kubectl --kubeconfig` and `kubernetes.config.load_kube_config`."""
    return k8s_emulator.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def k8s_api_client(k8s_emulator: KubeEmulator) -> Iterator[Any]:
    """A `kubernetes.client.ApiClient` pointed at the emulator."""
    configuration = kubernetes.client.Configuration(host=k8s_emulator.server_url)
    with kubernetes.client.ApiClient(configuration) as client:
        yield client


@pytest.fixture
def kubectl(k8s_kubeconfig: Path, tmp_path: Path) -> Callable[..., str]:
    """Run the real kubectl against the emulator: `kubectl("get", "pods", stdin=None, check=True)` -> stdout.

    With check=False it does not assert success and returns stdout + stderr. Pass `--validate=false` to
    apply/create (the emulator serves no OpenAPI document), and use `-f` manifests rather than typed
    generators such as `kubectl create namespace x` (those send protobuf, answered 415).
    """
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not on PATH")

    def run(*args: str, stdin: str | None = None, check: bool = True) -> str:
        command = [
            binary,
            "--kubeconfig",
            str(k8s_kubeconfig),
            "--cache-dir",
            str(tmp_path / "kubectl-cache"),
            *args,
        ]
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)
        if check:
            assert done.returncode == 0, f"kubectl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout + ("" if check else done.stderr)

    return run


@pytest.fixture
def api(k8s_api_client: Any) -> Any:
    return k8s_api_client


@pytest.fixture
def crd(k8s_emulator: KubeEmulator, api: Any) -> dict[str, Any]:
    created: dict[str, Any] = (
        kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(WIDGET_CRD).to_dict()
    )
    return created


@pytest.fixture
def custom(api: Any, crd: dict[str, Any]) -> Any:
    return kubernetes.client.CustomObjectsApi(api)


@pytest.fixture
async def http(k8s_emulator: KubeEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=k8s_emulator.server_url, timeout=10) as client:
        yield client
