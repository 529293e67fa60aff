"""RouteIQ's images, built by `scripts/images` with Podman and run.

The build is the real one (Dockerfile.gateway, Dockerfile.operator, from a Debian base and a
hash-locked wheelhouse, install steps with no network); it is cached by content, so with nothing
changed the fixture takes seconds. The containers run as the chart runs them: read-only root
filesystem, uid 10001, an init process that forwards SIGTERM.

- routeiq-gateway answers /_health/ready, routes a chat completion for the `openai` client, holds
  no torch, and drains an in-flight request on `podman stop`;
- routeiq-gateway-ml serves a trained (knn) router from a mounted, verified artifact;
- routeiq-operator prints its version, and without a cluster exits 2 with one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version as distribution_version
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fake_openai import fake_openai
from tests.gateway_process import MASTER_KEY
from tests.ports import free_port
from tests.test_ml_gateway import CONFIG as ML_CONFIG
from tests.test_ml_gateway import train

ROOT = Path(__file__).resolve().parents[1]
# a build from nothing takes about 6 minutes on 2 cores (base, three images); cached, seconds
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
UID = "10001"


@dataclass(frozen=True)
class Images:
    references: dict[str, str]  # name -> localhost/<name>:<content hash>
    env: dict[str, str]  # the environment podman needs (CONTAINERS_CONF)

    def podman(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout, env=self.env, check=False
        )
        if check:
            assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr[-3000:]}"
        return result


@pytest.fixture(scope="session")
def images() -> Images:
    result = subprocess.run(
        [str(ROOT / "scripts" / "images")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    assert result.returncode == 0, f"scripts/images failed:\n{result.stderr[-5000:]}"
    references = {
        words[1]: words[2]
        for words in (line.split() for line in result.stdout.splitlines())
        if words[0] == "image"
    }
    assert set(references) == {"routeiq-gateway", "routeiq-gateway-ml", "routeiq-operator"}, result.stdout
    env = dict(os.environ, CONTAINERS_CONF=str(ROOT / ".cache" / "images" / "containers.conf"))
    return Images(references, env)


@dataclass
class Container:
    images: Images
    name: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = self.images.podman("logs", self.name, check=False, timeout=30)
        return (result.stdout + result.stderr)[-4000:]

    def running(self) -> bool:
        state = self.images.podman(
            "inspect", "--format", "{{.State.Running}}", self.name, check=False, timeout=30
        )
        return state.stdout.strip() == "true"

    def wait_ready(self, within: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + within
        body: Any = None
        while time.monotonic() < deadline:
            assert self.running(), f"the container exited:\n{self.logs()}"
            try:
                response = httpx.get(f"{self.base_url}/_health/ready", timeout=5)
                body = response.json()
                if response.status_code == 200:
                    return dict(body)
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not ready within {within}s: {body}\n{self.logs()}")


@pytest.fixture
def run(images: Images) -> Iterator[Any]:
    """Starts containers as the chart runs them (read-only, uid 10001, --init, host network on a
    free port); removes them at the end."""
    started: list[str] = []

    def start(image: str, *options: str, env: dict[str, str] | None = None) -> Container:
        name = f"routeiq-test-{uuid.uuid4().hex[:10]}"
        port = free_port()
        variables = {
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "ROUTEIQ_HOST": "127.0.0.1",
            "ROUTEIQ_PORT": str(port),
            "ROUTEIQ_METRICS_PORT": "0",
            "ROUTEIQ_WORKERS": "1",
            **(env or {}),
        }
        flags = [f"--env={key}={value}" for key, value in variables.items()]
        images.podman(
            "run", "--detach", "--init", "--read-only", f"--user={UID}", "--network=host", "--no-healthcheck",
            f"--name={name}", *flags, *options, images.references[image],
        )  # fmt: skip
        started.append(name)
        return Container(images, name, port)

    yield start
    for name in started:
        images.podman("rm", "--force", "--time=5", name, check=False, timeout=60)


def test_the_gateway_image_serves_read_only_as_uid_10001_and_routes_for_the_openai_client(
    images: Images, run: Any
) -> None:
    gateway = run("routeiq-gateway")
    ready = gateway.wait_ready()
    assert ready["status"] == "ready"
    assert ready["strategy"] == "round-robin"
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=MASTER_KEY, timeout=60, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert (completion.choices[0].message.content or "").startswith("Hello from tier-1 mock deployment")
    assert images.podman("exec", gateway.name, "id", "-u").stdout.strip() == UID
    refused = images.podman("exec", gateway.name, "touch", "/app/written", check=False)
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr


def test_the_gateway_image_holds_no_torch_and_says_what_it_serves(images: Images) -> None:
    reference = images.references["routeiq-gateway"]
    labels = json.loads(
        images.podman("image", "inspect", "--format", "{{json .Config.Labels}}", reference).stdout
    )
    assert labels["io.routeiq.extras"] == "gateway"
    assert labels["io.routeiq.database"] == "disabled"  # no Prisma engines can be fetched here
    probe = "import importlib.util as u; print([m for m in ('torch', 'sklearn') if u.find_spec(m)])"
    found = images.podman("run", "--rm", "--no-healthcheck", "--entrypoint=python", reference, "-c", probe)
    assert found.stdout.strip() == "[]"
    # a trained strategy is refused at start, by name: such a pod never becomes Ready
    refused = images.podman(
        "run", "--rm", "--no-healthcheck", "--read-only", f"--user={UID}", "--env=LITELLM_MASTER_KEY=sk-x",
        "--env=ROUTEIQ_STRATEGY=knn", reference, check=False, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "unknown routing strategy 'knn'" in refused.stderr


def test_the_gateway_image_drains_an_in_flight_request_on_podman_stop(
    images: Images, run: Any, tmp_path: Path
) -> None:
    arrived = threading.Event()
    with fake_openai({"slow": 3.0}, arrived) as api_base:
        config = tmp_path / "config.yaml"
        config.write_text(
            "model_list:\n  - model_name: slow\n"
            f"    litellm_params: {{model: openai/slow, api_key: sk-upstream, api_base: '{api_base}'}}\n"
        )
        config.chmod(0o644)
        gateway = run("routeiq-gateway", f"--volume={config}:/app/config/config.yaml:ro")
        gateway.wait_ready()
        outcome: dict[str, Any] = {}

        def ask() -> None:
            try:
                outcome["response"] = httpx.post(
                    f"{gateway.base_url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {MASTER_KEY}"},
                    json={"model": "slow", "messages": [{"role": "user", "content": "take your time"}]},
                    timeout=60,
                )
            except httpx.HTTPError as error:  # pragma: no cover - the assertion below reports it
                outcome["error"] = error

        client = threading.Thread(target=ask)
        client.start()
        assert arrived.wait(60), f"the request never reached the upstream:\n{gateway.logs()}"
        images.podman("stop", "--time=30", gateway.name, timeout=90)  # SIGTERM, then waits
        client.join(timeout=60)
        assert not client.is_alive()
        assert "error" not in outcome, outcome
        response = outcome["response"]
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "from slow"
        state = images.podman("inspect", "--format", "{{.State.ExitCode}}", gateway.name)
        assert state.stdout.strip() == "0", gateway.logs()


def test_the_ml_image_serves_a_trained_router(images: Images, run: Any, tmp_path: Path) -> None:
    reference = images.references["routeiq-gateway-ml"]
    labels = json.loads(
        images.podman("image", "inspect", "--format", "{{json .Config.Labels}}", reference).stdout
    )
    assert labels["io.routeiq.extras"] == "gateway,ml-serve,s3,gcs"
    no_torch = images.podman(
        "run", "--rm", "--no-healthcheck", "--network=none", "--entrypoint=python", reference, "-c",
        "import importlib.util as u; print([m for m in ('torch', 'sentence_transformers', 'boto3', "
        "'google.cloud.storage', 'onnxruntime') if u.find_spec(m) is not None])",
    )  # fmt: skip
    assert no_torch.stdout.strip() == "['boto3', 'google.cloud.storage', 'onnxruntime']", no_torch.stdout
    artifact = tmp_path / "artifact"
    digest = train(artifact, 0)
    for path in [artifact, *artifact.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    config = tmp_path / "config.yaml"
    config.write_text(ML_CONFIG)
    config.chmod(0o644)
    gateway = run(
        "routeiq-gateway-ml",
        f"--volume={config}:/app/config/config.yaml:ro",
        f"--volume={artifact}:/app/models:ro",
        env={"ROUTEIQ_STRATEGY": "knn"},
    )
    ready = gateway.wait_ready(within=300)
    assert ready["strategy"] == "knn"
    assert ready["model"]["digest"] == digest, ready
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"model": "chat", "messages": [{"role": "user", "content": "Write a haiku about the sea"}]},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].startswith("from ")


def test_the_operator_image_prints_its_version_and_without_a_cluster_exits_with_one_line(
    images: Images,
) -> None:
    reference = images.references["routeiq-operator"]
    version = images.podman("run", "--rm", "--no-healthcheck", "--entrypoint=routeiq", reference, "version")
    assert version.stdout.strip() == distribution_version("routeiq")
    started = images.podman(
        "run", "--rm", "--no-healthcheck", "--read-only", f"--user={UID}", reference, check=False, timeout=120
    )
    assert started.returncode == 2, started.stderr
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1, started.stderr
    assert lines[0].startswith("routeiq: error: no Kubernetes cluster configured")
    assert "Traceback" not in started.stdout + started.stderr


def test_the_operator_image_holds_its_package_data_and_no_litellm_or_torch(images: Images) -> None:
    probe = (
        "import importlib.util as u, importlib.resources as r; "
        "print([m for m in ('litellm', 'torch', 'sklearn') if u.find_spec(m)], "
        "r.files('routeiq_operator.gateway').joinpath('alerts.yaml').is_file())"
    )
    reference = images.references["routeiq-operator"]
    found = images.podman("run", "--rm", "--no-healthcheck", "--entrypoint=python", reference, "-c", probe)
    assert found.stdout.strip() == "[] True"
