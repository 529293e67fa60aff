"""Honest readiness through a real `routeiq gateway`: a worker whose ROUTEIQ_STRATEGY is a trained
one is ready only with a model of that strategy. An artifact trained for another strategy is
refused (named in readiness, counted); published while a right one serves, it is refused and the
model in service keeps routing."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from routeiq_router.artifacts.verify import read_artifact
from tests.gateway_process import MASTER_KEY, ROUTEIQ, GatewayProcess, gateway_environment
from tests.ports import free_port
from tests.test_ml_gateway import CONFIG, DATA, point

pytestmark = pytest.mark.slow


@dataclass
class Setup:
    gateway: GatewayProcess
    link: Path
    artifacts: dict[str, Path]

    def ready(self) -> httpx.Response:
        return httpx.get(f"{self.gateway.base_url}/_health/ready", timeout=10)

    def until(self, check: Callable[[dict[str, Any]], bool], within: float) -> httpx.Response:
        deadline = time.monotonic() + within
        response = self.ready()
        while not check(response.json()):
            assert time.monotonic() < deadline, f"not within {within}s: {response.text[:2000]}"
            time.sleep(0.2)
            response = self.ready()
        return response

    def ask(self) -> httpx.Response:
        return httpx.post(
            f"{self.gateway.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={"model": "chat", "messages": [{"role": "user", "content": "Write a haiku about routers."}]},
            timeout=60,
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("readiness")
    artifacts = {"elo": directory / "elo", "knn": directory / "knn"}
    training = {
        strategy: subprocess.Popen(
            [ROUTEIQ, "train", "--strategy", strategy, "--data", str(DATA), "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=gateway_environment(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"),
        )
        for strategy, out in artifacts.items()
    }
    for strategy, process in training.items():
        _, errors = process.communicate(timeout=300)
        assert process.returncode == 0, f"training {strategy}: {errors.decode()[-2000:]}"
    artifacts["knn-again"] = directory / "knn-again"  # another source version of the same kind
    shutil.copytree(artifacts["knn"], artifacts["knn-again"])
    config = directory / "config.yaml"
    config.write_text(CONFIG)
    link = directory / "current"
    point(link, artifacts["knn"])  # the wrong strategy from the start
    env = gateway_environment(
        ROUTEIQ_STRATEGY="elo",
        ROUTEIQ_MODELS_PATH=str(link),
        ROUTEIQ_HOT_RELOAD="true",
        ROUTEIQ_RELOAD_INTERVAL="5",
    )
    gateway = GatewayProcess(
        ["--config", str(config), "--workers", "1"], free_port(), directory / "gateway.log", env
    )
    with gateway:
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
        yield Setup(gateway, link, artifacts)


def refusals(body: dict[str, Any]) -> int:
    count: int = body.get("model", {}).get("refused", {}).get("strategy", 0)
    return count


def test_an_artifact_of_another_strategy_is_refused_and_the_worker_is_not_ready(setup: Setup) -> None:
    response = setup.until(lambda body: refusals(body) >= 1, within=30)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["model_loaded"] is False
    assert "digest" not in body["model"], "nothing serves"
    error = body["model"]["last_error"]
    assert "trained for strategy 'knn'" in error
    assert "ROUTEIQ_STRATEGY is 'elo'" in error


def test_a_published_artifact_of_another_strategy_is_refused_and_the_model_in_service_keeps_routing(
    setup: Setup,
) -> None:
    point(setup.link, setup.artifacts["elo"])
    digest = read_artifact(setup.artifacts["elo"]).digest
    ready = setup.until(lambda body: body["status"] == "ready", within=30)
    assert ready.status_code == 200
    assert ready.json()["model"]["digest"] == digest
    answer = setup.ask()
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-routeiq-strategy"] == "elo"
    before = refusals(ready.json())

    point(setup.link, setup.artifacts["knn-again"])
    response = setup.until(lambda body: refusals(body) > before, within=30)
    body = response.json()
    assert response.status_code == 200, "the model in service is of the right strategy"
    assert body["model"]["digest"] == digest
    assert body["model"]["strategy"] == "elo"
    assert "trained for strategy 'knn'" in body["model"]["last_error"]
    assert "fallbacks" not in body, "nothing routes round-robin in place of elo"
    answer = setup.ask()
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-routeiq-strategy"] == "elo"
    assert "router model refused (strategy)" in setup.gateway.log()
