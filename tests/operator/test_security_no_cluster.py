"""`routeiq operator` without a cluster: one clear line instead of a traceback every 60 s.

No kubeconfig (and not in a pod): exit 2 at once. An API server that does not answer: one line
promptly, retries with a bounded backoff for --api-wait-seconds, then one line and exit 1; if the
API server comes up meanwhile, the operator starts.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.k8s.emulator import KubeEmulator
from tests.operator.conftest import ROUTEIQ, install_crds
from tests.ports import free_port

DEADLINE = 90  # seconds; generous for a loaded 2-core machine (start-up imports take seconds)


def _env(kubeconfig: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROUTEIQ_", "KUBERNETES_")) and k.lower() not in {"http_proxy", "https_proxy"}
    }
    env.update(KUBECONFIG=str(kubeconfig), ROUTEIQ_OPERATOR_METRICS_PORT="0", NO_PROXY="*")
    return env


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "a-token-never-printed"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def _operator(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ROUTEIQ, "operator", "--standalone", "--liveness-port", str(free_port()), *args],
        env=_env(kubeconfig),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def _no_traceback(output: str) -> None:
    assert "Traceback" not in output, output
    assert "a-token-never-printed" not in output


@pytest.mark.parametrize("content", [None, "", ": [ not yaml", "apiVersion: v1\nkind: Config\n"])
def test_without_a_kubeconfig_it_exits_with_one_line(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    result = _operator(path)
    assert result.returncode == 2, result
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("routeiq: error: no Kubernetes cluster configured"), line
    assert str(path) in line
    assert "set KUBECONFIG or run in a pod" in line
    _no_traceback(result.stderr)


def test_an_api_server_that_does_not_answer_is_named_then_given_up_on(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: connection refused
    result = _operator(
        _kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}"), "--api-wait-seconds", "3"
    )
    assert result.returncode == 1, result
    assert result.stdout == ""
    first, last = result.stderr.splitlines()
    assert first.startswith(
        f"routeiq: the Kubernetes API server at http://127.0.0.1:{port} does not answer: "
    )
    assert "refused" in first.lower()
    assert first.endswith("retrying for up to 3 s")
    assert last.startswith("routeiq: error: the Kubernetes API server")
    assert last.endswith("gave up after 3 s")
    _no_traceback(result.stderr)


def test_an_api_server_that_comes_up_while_waiting_is_used(tmp_path: Path) -> None:
    late_port = free_port()
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{late_port}")
    liveness = free_port()
    log = (tmp_path / "operator.log").open("w+")
    process = subprocess.Popen(
        [ROUTEIQ, "operator", "--standalone", "--liveness-port", str(liveness), "--api-wait-seconds", "120"],
        env=_env(kubeconfig),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while "retrying" not in Path(log.name).read_text() and time.monotonic() < deadline:
            assert process.poll() is None, Path(log.name).read_text()
            time.sleep(0.2)
        assert "does not answer" in Path(log.name).read_text()
        with KubeEmulator(port=late_port) as emulator:
            install_crds(emulator)
            alive = False
            while not alive and time.monotonic() < deadline:
                assert process.poll() is None, Path(log.name).read_text()
                try:
                    alive = httpx.get(f"http://127.0.0.1:{liveness}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    time.sleep(0.2)
            output = Path(log.name).read_text()
            assert alive, output
            assert "routeiq: the Kubernetes API server answers; starting" in output
            process.terminate()
            process.wait(30)
        _no_traceback(Path(log.name).read_text())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
