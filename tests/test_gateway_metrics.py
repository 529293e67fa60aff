"""The metrics listener of a real `routeiq gateway`: one scrape for every worker of the pod.

One 2-worker gateway (with LiteLLM's own `prometheus` callback) serves most assertions; a
1-worker gateway shows the single-process path and the clean-up; a busy port stops start-up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway_process import MASTER_KEY, ROUTEIQ, GatewayProcess, gateway_environment
from tests.ports import free_port

pytestmark = pytest.mark.slow

CONFIG = """
model_list:
  - model_name: chat
    litellm_params: {model: openai/chat-a, api_key: sk-mock, mock_response: "answer from a"}
    model_info: {id: chat-a}
  - model_name: chat
    litellm_params: {model: openai/chat-b, api_key: sk-mock, mock_response: "answer from b"}
    model_info: {id: chat-b}
litellm_settings:
  callbacks: ["prometheus"]
"""
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
DECISIONS = "routeiq_routing_decision_duration_seconds"


class Metered:
    """A running gateway, its metrics port and its $TMPDIR (where the multiprocess files are)."""

    def __init__(self, process: GatewayProcess, metrics_port: int, tmpdir: Path) -> None:
        self.process = process
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.tmpdir = tmpdir

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of one scrape, by (name, sorted labels)."""
        response = httpx.get(self.metrics_url, timeout=10)
        assert response.status_code == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    def directory(self) -> Path:
        (found,) = self.tmpdir.glob("routeiq-metrics-*")
        return found


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """LiteLLM's success callbacks run after the response is sent: poll, bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def decisions_per_worker(directory: Path) -> dict[int, float]:
    """Routing decisions each worker wrote in its own file (the histogram's buckets)."""
    counts: dict[int, float] = {}
    for path in directory.glob("histogram_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        for key, value, _timestamp, _position in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
            if json.loads(key)[1] == f"{DECISIONS}_bucket":
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def start(tmp_path: Path, *args: str, **env: str) -> tuple[GatewayProcess, int]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    metrics_port = free_port()
    process = GatewayProcess(
        ["--config", str(config), *args],
        free_port(),
        tmp_path / "gateway.log",
        gateway_environment(ROUTEIQ_METRICS_PORT=str(metrics_port), TMPDIR=str(tmp_path), **env),
    )
    process.wait_ready()
    return process, metrics_port


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metered]:
    tmp_path = tmp_path_factory.mktemp("metrics")
    process, metrics_port = start(tmp_path, "--workers", "2")
    yield Metered(process, metrics_port, tmp_path)
    process.stop()


def chat(gateway: Metered, stream: bool = False) -> str:
    """One request's answer; a client (and so a connection) per request, so that the kernel
    hands connections to both workers."""
    with openai.OpenAI(
        base_url=f"{gateway.process.base_url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30
    ) as client:
        if stream:
            chunks = client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
            return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        return (
            client.chat.completions.create(model="chat", messages=MESSAGES).choices[0].message.content or ""
        )


def test_one_scrape_has_the_totals_of_both_workers(gateway: Metered) -> None:
    before = gateway.scrape()
    sent = 0
    while sent < 6 or len([c for c in decisions_per_worker(gateway.directory()).values() if c]) < 2:
        assert sent < 200, "every request went to one worker"
        chat(gateway)
        sent += 1
    after = gateway.scrape()

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta(f"{DECISIONS}_count", strategy="round-robin", model_group="chat") == sent
    assert delta("routeiq_routing_strategy_usage_total", strategy="round-robin", outcome="routed") == sent
    per_worker = decisions_per_worker(gateway.directory())
    assert len([count for count in per_worker.values() if count]) == 2
    assert sum(per_worker.values()) == total(after, f"{DECISIONS}_count")

    duration = "gen_ai_server_request_duration_seconds_count"
    wait_until(lambda: total(gateway.scrape(), duration) - total(before, duration) == sent)
    final = gateway.scrape()
    labels = {"gen_ai_request_model": "chat", "gen_ai_provider_name": "openai"}
    assert (
        total(final, duration, gen_ai_operation_name="chat", error_type="", **labels)
        - total(before, duration)
        == sent
    )
    for token_type in ("input", "output"):
        count = "gen_ai_client_token_usage_count"
        assert (
            total(final, count, gen_ai_token_type=token_type)
            - total(before, count, gen_ai_token_type=token_type)
            == sent
        )
        assert total(final, "gen_ai_client_token_usage_sum", gen_ai_token_type=token_type) > 0
    deployments = {dict(labels_)["routeiq_deployment"] for (name, labels_) in final if name == duration}
    assert deployments == {"chat-a", "chat-b"}
    # per-pod gauges: nothing in flight now, not draining; no Redis or database configured
    assert total(final, "routeiq_requests_in_flight") == 0
    assert total(final, "routeiq_draining") == 0
    assert not any(name in {"routeiq_redis_up", "routeiq_database_up"} for name, _ in final)


def test_streams_report_time_to_first_token(gateway: Metered) -> None:
    before = total(gateway.scrape(), "gen_ai_server_time_to_first_token_seconds_count")
    assert chat(gateway, stream=True)
    wait_until(
        lambda: total(gateway.scrape(), "gen_ai_server_time_to_first_token_seconds_count") == before + 1
    )


def test_litellm_prometheus_callback_is_on_the_same_scrape(gateway: Metered) -> None:
    chat(gateway)
    name = "litellm_proxy_total_requests_metric_total"
    wait_until(lambda: total(gateway.scrape(), name) >= 1)
    samples = gateway.scrape()
    # LiteLLM's gauges carry the worker's pid (multiprocess mode 'all'): both workers report
    pids = {dict(labels)["pid"] for name_, labels in samples if name_ == "litellm_deployment_state"}
    assert len(pids) == 2


def test_the_multiprocess_directory_is_private(gateway: Metered) -> None:
    directory = gateway.directory()
    assert directory.parent == gateway.tmpdir
    assert directory.stat().st_mode & 0o777 == 0o700


def exited(pid: int) -> bool:
    """Gone, or a zombie not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_an_exited_worker_keeps_its_counts_and_loses_its_live_gauges(gateway: Metered) -> None:
    """Runs after the other tests of the module gateway: it kills a worker."""
    directory = gateway.directory()
    decisions = total(gateway.scrape(), f"{DECISIONS}_count")
    workers = [pid for pid, count in decisions_per_worker(directory).items() if count]
    victim = workers[0]
    assert (directory / f"gauge_livesum_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: exited(victim))
    assert total(gateway.scrape(), f"{DECISIONS}_count") == decisions
    assert not (directory / f"gauge_livesum_{victim}.db").exists()
    assert (directory / f"histogram_{victim}.db").exists()


def test_one_worker_gateway_serves_its_metrics_and_cleans_up(tmp_path: Path) -> None:
    process, metrics_port = start(tmp_path, "--workers", "1")
    metered = Metered(process, metrics_port, tmp_path)
    try:
        directory = metered.directory()
        chat(metered)
        assert total(metered.scrape(), f"{DECISIONS}_count") == 1
    finally:
        process.stop()
    assert process.process.returncode == 0
    assert not directory.exists()


def test_a_busy_metrics_port_stops_start_up(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [ROUTEIQ, "gateway", "--config", str(config), "--host", "127.0.0.1", "--port", str(free_port())],
            env=gateway_environment(ROUTEIQ_METRICS_PORT=str(port), TMPDIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    assert "ROUTEIQ_METRICS_PORT" in result.stderr
    assert str(port) in result.stderr
    assert "Started server process" not in result.stdout + result.stderr  # no worker started
    assert not list(tmp_path.glob("routeiq-metrics-*"))  # removed again


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state held by a process or its children."""
    inodes: set[str] = set()
    pids = {pid} | {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    for each in pids:
        for fd in Path(f"/proc/{each}/fd").iterdir():
            with_target = os.readlink(fd) if fd.is_symlink() else ""
            if with_target.startswith("socket:["):
                inodes.add(with_target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def test_metrics_port_zero_listens_on_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    port = free_port()
    env = gateway_environment(ROUTEIQ_METRICS_PORT="0", TMPDIR=str(tmp_path))
    with GatewayProcess(
        ["--config", str(config), "--workers", "1"], port, tmp_path / "gateway.log", env
    ) as process:
        process.wait_ready()
        assert listening_ports(process.process.pid) == {port}
        assert not list(tmp_path.glob("routeiq-metrics-*"))
