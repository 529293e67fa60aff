"""The real proxy: `routeiq gateway --workers 2` as a subprocess, driven by the official openai client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests import ports
from tests.gateway_process import MASTER_KEY, GatewayProcess, gateway_environment
from tests.ports import free_port

CONFIG = """
model_list:
  - model_name: chat
    litellm_params: {model: openai/chat-a, api_key: sk-mock, mock_response: "answer from a"}
    model_info: {id: chat-a}
  - model_name: chat
    litellm_params: {model: openai/chat-b, api_key: sk-mock, mock_response: "answer from b"}
    model_info: {id: chat-b}
  - model_name: slow
    litellm_params: {model: openai/slow, api_key: sk-mock, mock_response: "slow answer", mock_delay: 5}
    model_info: {id: slow-a}
"""

pytestmark = pytest.mark.slow
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def start_gateway(tmp_path: Path, port: int, *args: str, **env: str) -> GatewayProcess:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    gateway = GatewayProcess(
        ["--config", str(config), *args], port, tmp_path / "gateway.log", gateway_environment(**env)
    )
    gateway.wait_ready()
    return gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = start_gateway(tmp_path_factory.mktemp("gateway"), free_port(), "--workers", "2")
    yield process
    process.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)


def test_chat_completion_carries_the_routing_decision(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    completion = raw.parse()
    assert completion.choices[0].message.content in {"answer from a", "answer from b"}
    assert raw.headers["x-routeiq-strategy"] == "round-robin"
    assert float(raw.headers["x-routeiq-decision-ms"]) >= 0
    assert raw.headers["x-litellm-model-id"] in {"chat-a", "chat-b"}


def test_requests_are_spread_over_the_deployments(client: openai.OpenAI) -> None:
    served = {
        client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES).headers[
            "x-litellm-model-id"
        ]
        for _ in range(8)
    }
    assert served == {"chat-a", "chat-b"}


def test_streaming_completion(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="chat", messages=MESSAGES, stream=True
    ) as response:
        assert response.headers["x-routeiq-strategy"] == "round-robin"
        assert "x-routeiq-decision-ms" in response.headers
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    assert text in {"answer from a", "answer from b"}


def test_health_endpoints_need_no_key(gateway: GatewayProcess) -> None:
    live = httpx.get(f"{gateway.base_url}/_health/live")
    ready = httpx.get(f"{gateway.base_url}/_health/ready")
    assert live.status_code == 200
    assert live.json() == {"status": "alive"}
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "config_loaded": True,
        "strategy_installed": True,
        "draining": False,
        "redis": "disabled",
    }


def test_unknown_model_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.status_code == 400
    assert "no-such-model" in str(caught.value)


def test_malformed_requests_get_4xx_with_a_message(gateway: GatewayProcess) -> None:
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"}
    url = f"{gateway.base_url}/v1/chat/completions"
    not_json = httpx.post(url, headers=headers, content=b"{not json")
    assert 400 <= not_json.status_code < 500
    assert not_json.json()["error"]["message"]
    no_model = httpx.post(url, headers=headers, json={"messages": [{"role": "user", "content": "x"}]})
    assert 400 <= no_model.status_code < 500
    assert "model" in json.dumps(no_model.json()).lower()


def test_requests_without_the_key_are_refused(gateway: GatewayProcess) -> None:
    # without a database LiteLLM answers an unknown key with 400 "No connected db", a missing one with 401
    wrong = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        wrong.chat.completions.create(model="chat", messages=MESSAGES)
    assert caught.value.status_code in {400, 401}
    missing = httpx.post(
        f"{gateway.base_url}/v1/chat/completions", json={"model": "chat", "messages": MESSAGES}
    )
    assert missing.status_code == 401


def test_logs_are_json_lines(gateway: GatewayProcess) -> None:
    records = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    assert any(r["message"] == "gateway worker ready" and r["strategy"] == "round-robin" for r in records)
    assert {r["level"] for r in records} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    assert all({"timestamp", "level", "logger", "message", "service", "worker_id"} <= set(r) for r in records)
    assert MASTER_KEY not in gateway.log()


def wait_for_draining(gateway: GatewayProcess) -> httpx.Response:
    """The supervisor passes SIGTERM on within ~0.5 s; wait until every worker answers 503."""
    consecutive = 0
    for _ in range(100):
        response = httpx.get(f"{gateway.base_url}/_health/ready")
        consecutive = consecutive + 1 if response.status_code == 503 else 0
        if consecutive == 4:
            return response
        time.sleep(0.05)
    raise AssertionError("the gateway did not start draining")


def wait_in_flight(metrics_port: int, count: int) -> None:
    """Until the pod's metrics (every worker's) count `count` requests in flight."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        values = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("routeiq_requests_in_flight ")
        ]
        if values and values[0] >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"not {count} requests in flight within 20 s")


def test_sigterm_drains_requests_in_flight(tmp_path: Path, free_port: int) -> None:
    metrics_port = ports.free_port()
    gateway = start_gateway(
        tmp_path,
        free_port,
        "--workers",
        "2",
        ROUTEIQ_DRAIN_TIMEOUT_SECONDS="20",
        ROUTEIQ_METRICS_PORT=str(metrics_port),
    )
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)
    outcomes: list[str] = []

    def slow_request() -> None:
        try:
            outcomes.append(
                client.chat.completions.create(model="slow", messages=MESSAGES).choices[0].message.content
                or ""
            )
        except Exception as error:  # recorded, then asserted on
            outcomes.append(f"failed: {error!r}")

    try:
        threads = [threading.Thread(target=slow_request) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_in_flight(metrics_port, 4)  # all four are inside their 5 s mock delay
        gateway.terminate()
        draining_ready = wait_for_draining(gateway)
        rejected = httpx.post(
            f"{gateway.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={"model": "chat", "messages": MESSAGES},
        )
        for thread in threads:
            thread.join(30)
        exit_code = gateway.wait(30)
    finally:
        gateway.stop()
    assert outcomes == ["slow answer"] * 4, outcomes
    assert draining_ready.status_code == 503
    assert draining_ready.json()["checks"]["draining"] is True
    assert rejected.status_code == 503
    assert "shutting down" in rejected.json()["error"]["message"]
    assert exit_code == 0
    assert "drained" in gateway.log()
