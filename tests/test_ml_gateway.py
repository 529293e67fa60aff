"""A trained router in the real gateway: `routeiq gateway --workers 2` with ROUTEIQ_STRATEGY=knn.

Not ready until a verified artifact is loaded; routes exactly as the library does with the same
artifact; swaps to a new artifact under load without a failed request; refuses a tampered one
while the previous model keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from routeiq_router.artifacts.verify import read_artifact
from routeiq_router.ml.runtime import ModelHolder, load_router
from routeiq_router.ml.strategies import KnnStrategy
from routeiq_router.strategies import RoutingRequest, StrategyContext
from tests.gateway_process import MASTER_KEY, ROUTEIQ, GatewayProcess, gateway_environment
from tests.ports import free_port

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "examples" / "routing-data" / "prompts.jsonl"
MODELS = {"claude": "claude-3-5-sonnet-20241022", "gpt4o": "gpt-4o", "mini": "gpt-4o-mini"}
CONFIG = "model_list:\n" + "".join(
    f"""  - model_name: chat
    litellm_params: {{model: "openai/{name}", api_key: sk-mock, mock_response: "from {ident}"}}
    model_info: {{id: {ident}, routeiq_model: "{name}"}}
"""
    for ident, name in MODELS.items()
)


def train(out: Path, seed: int) -> str:
    result = subprocess.run(
        [ROUTEIQ, "train", "--strategy", "knn", "--data", str(DATA), "--out", str(out), "--seed", str(seed)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return read_artifact(out).digest


def point(link: Path, target: Path) -> None:
    """Swap the symlink the gateway reads atomically (as a sync sidecar or a rollout would)."""
    temporary = link.with_name(link.name + ".new")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    os.replace(temporary, link)


@dataclass
class Setup:
    gateway: GatewayProcess
    link: Path
    artifacts: dict[str, Path]
    digests: dict[str, str]

    def ready(self) -> httpx.Response:
        return httpx.get(f"{self.gateway.base_url}/_health/ready", timeout=10)

    def ask(self, prompt: str, client: httpx.Client | None = None) -> httpx.Response:
        http = client or httpx.Client(timeout=60)
        return http.post(
            f"{self.gateway.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={"model": "chat", "messages": [{"role": "user", "content": prompt}]},
        )


WORKERS = 2


def every_worker_reports(setup: Setup, check: Any, within: float) -> dict[str, Any]:
    """Poll readiness until each of the gateway's workers (told apart by the body's `worker`) has
    answered with `check` true in its latest answer; returns that latest answer."""
    deadline = time.monotonic() + within
    latest: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        body: dict[str, Any] = setup.ready().json()
        latest[body["worker"]] = body
        if len(latest) >= WORKERS and all(check(answer) for answer in latest.values()):
            return body
        time.sleep(0.05)
    raise AssertionError(f"not every worker within {within}s: {json.dumps(latest)[:3000]}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("ml-gateway")
    artifacts = {
        "a": directory / "artifact-a",
        "b": directory / "artifact-b",
        "tampered": directory / "tampered",
    }
    digests = {"a": train(artifacts["a"], 0), "b": train(artifacts["b"], 1)}
    assert digests["a"] != digests["b"]
    shutil.copytree(artifacts["b"], artifacts["tampered"])
    payload = artifacts["tampered"] / "knn.npz"
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0x01
    payload.write_bytes(bytes(data))
    config = directory / "config.yaml"
    config.write_text(CONFIG)
    link = directory / "current"  # does not exist yet: the gateway starts without a model
    env = gateway_environment(
        ROUTEIQ_STRATEGY="knn",
        ROUTEIQ_MODELS_PATH=str(link),
        ROUTEIQ_HOT_RELOAD="true",
        ROUTEIQ_RELOAD_INTERVAL="5",
    )
    gateway = GatewayProcess(
        ["--config", str(config), "--workers", str(WORKERS)], free_port(), directory / "gateway.log", env
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{gateway.base_url}/_health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert gateway.process.poll() is None, gateway.log()[-3000:]
            assert time.monotonic() < deadline, gateway.log()[-3000:]
            time.sleep(0.25)
        yield Setup(gateway, link, artifacts, digests)
    finally:
        gateway.stop()


def test_not_ready_until_a_verified_model_is_loaded(setup: Setup) -> None:
    before = setup.ready()
    assert before.status_code == 503
    body = before.json()
    assert body["checks"]["model_loaded"] is False
    assert body["model"]["source"] == str(setup.link)
    assert "current" in body["model"]["last_error"]
    point(setup.link, setup.artifacts["a"])
    loaded = every_worker_reports(setup, lambda b: b["status"] == "ready", within=30)
    assert loaded["model"]["digest"] == setup.digests["a"]
    assert loaded["model"]["strategy"] == "knn"
    assert loaded["checks"]["model_loaded"] is True


def test_the_gateway_routes_as_the_library_does_with_the_same_artifact(setup: Setup) -> None:
    holder = ModelHolder()
    artifact = read_artifact(setup.artifacts["a"])
    holder.set(load_router(artifact, artifact.manifest, digest=artifact.digest))
    strategy = KnnStrategy(StrategyContext(), holder)
    candidates = [
        {
            "model_name": "chat",
            "litellm_params": {"model": f"openai/{name}"},
            "model_info": {"id": ident, "routeiq_model": name},
        }
        for ident, name in MODELS.items()
    ]
    prompts = [json.loads(line)["prompt"] for line in DATA.read_text().splitlines()[::40]]
    served: Counter[str] = Counter()
    with httpx.Client(timeout=60) as client:
        for prompt in prompts:
            response = setup.ask(prompt, client)
            assert response.status_code == 200, response.text
            assert response.headers["x-routeiq-strategy"] == "knn"
            messages = [{"role": "user", "content": prompt}]
            expected = strategy.choose(candidates, RoutingRequest(model_group="chat", messages=messages))
            assert response.headers["x-litellm-model-id"] == expected["model_info"]["id"], prompt
            served[response.headers["x-litellm-model-id"]] += 1
    assert len(served) >= 2, "the prompts are routed by content, not to one deployment"


def test_a_new_artifact_swaps_in_under_load_without_a_failed_request(setup: Setup) -> None:
    statuses: Counter[int] = Counter()
    prompts = [json.loads(line)["prompt"] for line in DATA.read_text().splitlines()[:200]]

    async def load(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            index = 0
            while not stop.is_set():
                response = await client.post(
                    f"{setup.gateway.base_url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {MASTER_KEY}"},
                    json={"model": "chat", "messages": [{"role": "user", "content": prompts[index % 200]}]},
                )
                statuses[response.status_code] += 1
                index += 1

    async def scenario() -> dict[str, Any]:
        stop = asyncio.Event()
        workers = [asyncio.create_task(load(stop)) for _ in range(3)]
        await asyncio.sleep(1.0)
        point(setup.link, setup.artifacts["b"])
        body = await asyncio.to_thread(
            every_worker_reports, setup, lambda b: b["model"].get("digest") == setup.digests["b"], 30
        )
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*workers)
        return body

    body = asyncio.run(scenario())
    assert statuses[200] > 20
    assert set(statuses) == {200}, f"failed requests during the swap: {dict(statuses)}"
    assert body["status"] == "ready"


def test_a_tampered_artifact_is_refused_and_the_previous_model_keeps_serving(setup: Setup) -> None:
    point(setup.link, setup.artifacts["tampered"])
    body = every_worker_reports(
        setup, lambda b: b["model"].get("refused", {}).get("sha256_mismatch", 0) >= 1, within=30
    )
    assert body["model"]["digest"] == setup.digests["b"], "still serving the last verified model"
    assert "knn.npz" in body["model"]["last_error"]
    assert body["status"] == "ready"
    response = setup.ask("Write a haiku about routers.")
    assert response.status_code == 200
    assert "router model refused" in setup.gateway.log()


def test_a_signed_artifact_from_s3_through_moto(setup: Setup, tmp_path: Path) -> None:
    """The same gateway, one worker, loading a signed .tar.gz from S3 (moto's server over HTTP):
    the endpoint passes the SSRF policy only through the CIDR allowlist."""
    import boto3  # type: ignore[import-untyped,unused-ignore]
    from moto.server import ThreadedMotoServer

    artifact = tmp_path / "signed"
    shutil.copytree(setup.artifacts["a"], artifact)
    keys = [tmp_path / "router.key", tmp_path / "router.pub"]
    commands = [
        ["artifact", "keygen", "--out-private", str(keys[0]), "--out-public", str(keys[1])],
        ["artifact", "sign", str(artifact), "--key", str(keys[0])],
        ["artifact", "pack", str(artifact), str(tmp_path / "knn.tar.gz")],
    ]
    for command in commands:
        done = subprocess.run([ROUTEIQ, *command], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    aws = {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(tmp_path / "knn.tar.gz"), "models", "routers/knn.tar.gz")
    (tmp_path / "config.yaml").write_text(CONFIG)
    env = gateway_environment(
        ROUTEIQ_STRATEGY="knn",
        ROUTEIQ_MODEL_S3_URI="s3://models/routers/knn.tar.gz",
        ROUTEIQ_MODEL_PUBLIC_KEY=keys[1].read_text(),
        ROUTEIQ_SSRF_CIDR_ALLOWLIST="127.0.0.0/8",
        **aws,
    )
    gateway = GatewayProcess(
        ["--config", str(tmp_path / "config.yaml"), "--workers", "1"], free_port(), tmp_path / "s3.log", env
    )
    try:
        gateway.wait_ready(timeout=120)
        body = httpx.get(f"{gateway.base_url}/_health/ready", timeout=10).json()
        assert body["model"]["digest"] == setup.digests["a"]  # the signature is beside the manifest
        assert body["model"]["source"] == "s3://models/routers/knn.tar.gz"
        response = httpx.post(
            f"{gateway.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={
                "model": "chat",
                "messages": [{"role": "user", "content": "Prove that sqrt(2) is irrational."}],
            },
            timeout=60,
        )
        assert response.status_code == 200
        assert response.headers["x-routeiq-strategy"] == "knn"
    finally:
        gateway.stop()
        server.stop()
