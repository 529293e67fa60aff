"""Two `routeiq gateway` processes with two workers each on one real Redis, driven by the
official openai client: one router, whatever process or worker a request lands on.

The tests run in file order on the same two processes; each sets the state it needs first.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2  # the HTTP client openai is built on
import openai
import pytest
from redis import Redis

from routeiq_router.state import GatewayKeys
from routeiq_router.state.counters import parse_counters
from tests.gateway_process import MASTER_KEY, ROUTEIQ, GatewayProcess, gateway_environment
from tests.ports import free_port
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow

GATEWAY = "test/shared"
KEYS = GatewayKeys(GATEWAY)
THRESHOLD = 3
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def config(refused_port: int) -> str:
    return f"""
model_list:
  - model_name: chat
    litellm_params: {{model: openai/chat-a, api_key: sk-mock, mock_response: "answer from a"}}
    model_info: {{id: chat-a}}
  - model_name: chat
    litellm_params: {{model: openai/chat-b, api_key: sk-mock, mock_response: "answer from b"}}
    model_info: {{id: chat-b}}
  - model_name: flaky
    litellm_params: {{model: openai/down, api_key: sk-mock, api_base: "http://127.0.0.1:{refused_port}/v1"}}
    model_info: {{id: flaky-down}}
  - model_name: flaky
    litellm_params: {{model: openai/up, api_key: sk-mock, mock_response: "answer from up"}}
    model_info: {{id: flaky-up}}
router_settings:
  num_retries: 0
"""


WORKERS = 2


@dataclass
class Cluster:
    redis: RedisServer
    gateways: list[GatewayProcess]

    def client(self) -> Redis:
        return Redis.from_url(self.redis.url)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = gateway_environment(REDIS_URL=self.redis.url, ROUTEIQ_GATEWAY=GATEWAY)
        return subprocess.run(
            [ROUTEIQ, "state", *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def set_weights(self, *variants: str, reset: bool = False) -> None:
        """Run `routeiq state weights set`, then wait until every worker of both gateways has it."""
        result = self.cli("weights", "set", *variants, *(["--reset-counters"] if reset else []))
        assert result.returncode == 0, result.stderr
        wanted = {}
        for variant in variants:
            name, _, rest = variant.partition("=")
            wanted[name] = float(rest.rpartition(":")[2])
        self.every_worker_sees(
            lambda state: {n: v["weight"] for n, v in state["variants"].items()} == wanted,
            f"weights {wanted}",
        )

    def every_worker_sees(
        self, check: Callable[[dict[str, Any]], bool], what: str, within: float = 15.0
    ) -> None:
        """Poll each gateway's readiness until each of its workers (told apart by the body's
        `worker`) shows `check` true of its shared state in its latest answer. A bound for a wait,
        not a claim on the delay: bench/propagation.py measures that."""
        for gateway in self.gateways:
            deadline = time.monotonic() + within
            latest: dict[str, dict[str, Any]] = {}
            while not (len(latest) >= WORKERS and all(check(state) for state in latest.values())):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"gateway {gateway.base_url}: not every worker sees {what}: {latest}"
                    )
                body = httpx.get(f"{gateway.base_url}/_health/ready", timeout=2).json()
                latest[body["worker"]] = body["state"]
                time.sleep(0.02)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("shared")
    server = RedisServer(directory / "redis", persistent=True)
    (directory / "redis").mkdir()
    server.start()
    config_path = directory / "config.yaml"
    config_path.write_text(config(free_port()))
    env = gateway_environment(
        REDIS_URL=server.url,
        ROUTEIQ_GATEWAY=GATEWAY,
        ROUTEIQ_AB_TESTING_ENABLED="true",
        ROUTEIQ_CB_FAILURE_THRESHOLD=str(THRESHOLD),
        ROUTEIQ_CB_TIMEOUT_SECONDS="300",
        ROUTEIQ_REDIS_TIMEOUT_MS="200",
    )
    gateways = [
        GatewayProcess(
            ["--config", str(config_path), "--workers", str(WORKERS)],
            free_port(),
            directory / f"gateway-{i}.log",
            env,
        )
        for i in range(2)
    ]
    try:
        for gateway in gateways:
            gateway.wait_ready()
        yield Cluster(server, gateways)
    finally:
        for gateway in gateways:
            gateway.stop()
        server.stop()


class Progress:
    """Requests completed so far; `reached` is set once `threshold` of them have."""

    def __init__(self, threshold: int) -> None:
        self.count = 0
        self.threshold = threshold
        self.reached = asyncio.Event()

    def done(self) -> None:
        self.count += 1
        if self.count >= self.threshold:
            self.reached.set()


@dataclass(frozen=True)
class Served:
    gateway: int
    status: int  # 0: no HTTP answer
    variant: str | None
    deployment: str | None
    error: str = ""


async def drive(
    cluster: Cluster,
    count: int,
    *,
    model: str = "chat",
    gateways: tuple[int, ...] = (0, 1),
    concurrency: int = 24,
    conversation: str | None = None,
    progress: Progress | None = None,
) -> list[Served]:
    """`count` requests spread over the gateways (round robin), `concurrency` at a time."""
    # idle connections are dropped by the client after 2 s, before uvicorn's 5 s keep-alive
    # timeout closes them under it (a request sent on a connection the server is closing fails)
    clients = [
        openai.AsyncOpenAI(
            base_url=f"{g.base_url}/v1",
            api_key=MASTER_KEY,
            max_retries=0,
            timeout=60,
            http_client=openai.DefaultAsyncHttpxClient(limits=httpx2.Limits(keepalive_expiry=2.0)),
        )
        for g in cluster.gateways
    ]
    semaphore = asyncio.Semaphore(concurrency)
    results: list[Served] = []

    async def one(index: int) -> None:
        gateway = gateways[index % len(gateways)]
        async with semaphore:
            try:
                raw = await clients[gateway].chat.completions.with_raw_response.create(
                    model=model,
                    messages=MESSAGES,
                    metadata={"conversation_id": conversation} if conversation else openai.omit,
                )
                results.append(
                    Served(
                        gateway,
                        200,
                        raw.headers.get("x-routeiq-variant"),
                        raw.headers.get("x-litellm-model-id"),
                    )
                )
            except openai.APIStatusError as error:
                results.append(Served(gateway, error.status_code, None, None, str(error)))
            except openai.APIConnectionError as error:
                results.append(Served(gateway, 0, None, None, repr(error.__cause__ or error)))
            if progress is not None:
                progress.done()

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for client in clients:
            await client.close()
    return results


def redis_counters(cluster: Cluster) -> dict[str, int]:
    client = cluster.client()
    try:
        raw = client.hgetall(KEYS.ab_counters)
        counters = parse_counters(
            {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        )
    finally:
        client.close()
    return {name: c.requests for name, c in counters.items()}


def wait_for_counters(cluster: Cluster, total: int, timeout: float = 10.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = redis_counters(cluster)
        if sum(counts.values()) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def test_10000_requests_split_70_30_within_half_a_point(cluster: Cluster) -> None:
    cluster.set_weights("control=round-robin:70", "candidate=least-busy:30", reset=True)
    served = asyncio.run(drive(cluster, 10_000))
    assert Counter(s.status for s in served) == {200: 10_000}, {s.error for s in served if s.error}
    by_variant = Counter(s.variant for s in served)
    assert set(by_variant) == {"control", "candidate"}
    assert abs(by_variant["control"] / 10_000 - 0.70) <= 0.005
    assert {s.gateway for s in served if s.variant == "candidate"} == {0, 1}
    counts = wait_for_counters(cluster, 10_000)
    assert counts == dict(by_variant), "every request counted once in Redis, by the variant that served it"


def test_a_weight_change_reaches_every_worker_of_both_processes(cluster: Cluster) -> None:
    cluster.set_weights("control=round-robin:0", "candidate=least-busy:100")
    served = asyncio.run(drive(cluster, 200))
    assert Counter((s.status, s.variant) for s in served) == {(200, "candidate"): 200}
    shown = cluster.cli("show")
    assert shown.returncode == 0, shown.stderr
    assert '"name": "candidate"' in shown.stdout
    assert '"weight": 100.0' in shown.stdout


def test_a_conversation_stays_on_its_deployment_across_processes(cluster: Cluster) -> None:
    assert cluster.cli("weights", "clear").returncode == 0
    spread = asyncio.run(drive(cluster, 8))
    assert {s.deployment for s in spread} == {"chat-a", "chat-b"}, "without a conversation: round robin"
    for conversation in ("conv-1", "conv-2", "conv-3", "conv-4"):
        served = asyncio.run(drive(cluster, 12, conversation=conversation, concurrency=1))
        assert {s.status for s in served} == {200}
        assert {s.gateway for s in served} == {0, 1}
        assert len({s.deployment for s in served}) == 1, f"{conversation} moved between deployments"


def test_a_breaker_opened_in_one_process_excludes_the_deployment_in_the_other(cluster: Cluster) -> None:
    client = cluster.client()
    try:
        opened = False
        for _ in range(4 * THRESHOLD):  # round robin in process 0 sends every other request to flaky-down
            asyncio.run(drive(cluster, 1, model="flaky", gateways=(0,), concurrency=1))
            if client.hget(KEYS.breaker("flaky-down"), "state") == b"open":
                opened = True
                break
        assert opened, "the breaker did not open in process 0"
    finally:
        client.close()
    cluster.every_worker_sees(lambda state: "flaky-down" in state["open_breakers"], "the open breaker")
    served = asyncio.run(drive(cluster, 40, model="flaky", gateways=(1,)))
    assert Counter((s.status, s.deployment) for s in served) == {(200, "flaky-up"): 40}
    shown = cluster.cli("show")
    assert '"flaky-down"' in shown.stdout
    assert '"state": "open"' in shown.stdout


def test_redis_stopped_mid_load_fails_no_request_and_recovery_counts_each_once(cluster: Cluster) -> None:
    cluster.set_weights("control=round-robin:70", "candidate=least-busy:30", reset=True)

    async def load_with_outage() -> list[Served]:
        progress = Progress(300)
        load = asyncio.create_task(drive(cluster, 1500, progress=progress, concurrency=16))
        await progress.reached.wait()
        await asyncio.to_thread(cluster.redis.stop)
        stopped_at = progress.count
        await asyncio.sleep(2.0)
        assert progress.count > stopped_at + 50, "requests kept flowing while Redis was down"
        await asyncio.to_thread(cluster.redis.start)
        return await load

    served = asyncio.run(load_with_outage())
    assert Counter(s.status for s in served) == {200: 1500}, {s.error for s in served if s.error}
    assert {s.variant for s in served} == {"control", "candidate"}
    counts = wait_for_counters(cluster, 1500)
    time.sleep(1.0)  # nothing more arrives later: no batch is applied twice
    assert sum(redis_counters(cluster).values()) == 1500
    assert counts == dict(Counter(s.variant for s in served))
    logs = "".join(g.log() for g in cluster.gateways)
    assert "Redis unreachable: serving on the last known routing state" in logs
    assert "Redis reachable again: shared routing state resynced" in logs
    # resynced and resubscribed: a change made after the outage reaches every worker
    cluster.set_weights("control=round-robin:100", "candidate=least-busy:0")
    after = asyncio.run(drive(cluster, 100))
    assert Counter((s.status, s.variant) for s in after) == {(200, "control"): 100}


def test_readiness_reports_the_shared_state(cluster: Cluster) -> None:
    deadline = time.monotonic() + 5
    while True:  # a worker that timed out on Redis under load is degraded for a moment: ask again
        body = httpx.get(f"{cluster.gateways[0].base_url}/_health/ready", timeout=5).json()
        if body["checks"]["redis"] == "ok" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert body["status"] == "ready"
    assert body["checks"]["redis"] == "ok", (
        body,
        [g.log().count("Redis unreachable") for g in cluster.gateways],
    )
    assert body["state"]["gateway"] == GATEWAY
    assert body["state"]["variants"]["control"] == {"strategy": "round-robin", "weight": 100.0, "model": None}
    assert "flaky-down" in body["state"]["open_breakers"]
    assert Path(cluster.redis.directory).exists()
