"""Bounded shutdown of a real `routeiq gateway`, repeated: SIGTERM under load, 20 times (one of
them a trained router with two workers), each gateway exits with code 0 within
ROUTEIQ_DRAIN_TIMEOUT_SECONDS + 2 s and no request in flight fails.

Gateways run four at a time (starting one costs seconds of CPU: LiteLLM's import), which also
keeps the machine loaded while others shut down."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from routeiq_router.ml.train import train_artifact
from tests.fake_openai import fake_openai
from tests.gateway_process import MASTER_KEY, GatewayProcess, gateway_environment
from tests.ports import free_port
from tests.test_ml_support import CHEAP, COSTS, DATA, STRONG

pytestmark = pytest.mark.slow

DRAIN_TIMEOUT_SECONDS = 2.0
EXIT_BOUND_SECONDS = DRAIN_TIMEOUT_SECONDS + 2.0  # the contract: drain timeout + 2 s
UPSTREAM_DELAY_SECONDS = 0.3  # each request is in flight this long at the upstream
RUNS = 20
CONCURRENT_GATEWAYS = 4
LOAD_THREADS = 3


@dataclass
class Outcome:
    """What one shutdown under load showed."""

    name: str
    exit_code: int | None = None
    exit_seconds: float = 0.0
    answered: int = 0  # requests sent before SIGTERM and answered 200
    failed: list[str] = field(default_factory=list)  # requests sent before SIGTERM that failed
    in_flight_at_sigterm: int | None = None
    log_tail: str = ""


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    delays = {CHEAP: UPSTREAM_DELAY_SECONDS, STRONG: UPSTREAM_DELAY_SECONDS}
    with fake_openai(delays) as api_base:
        yield api_base


@pytest.fixture(scope="module")
def elo_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shutdown") / "elo"
    train_artifact("elo", DATA, out, costs=COSTS)
    return out


def config(directory: Path, api_base: str) -> Path:
    path = directory / "config.yaml"
    path.write_text(
        "model_list:\n"
        + "".join(
            f"""  - model_name: chat
    litellm_params: {{model: "openai/{name}", api_key: sk-mock, api_base: "{api_base}"}}
    model_info: {{id: {name}, routeiq_model: "{name}"}}
"""
            for name in (CHEAP, STRONG)
        )
    )
    return path


def load(gateway: GatewayProcess, sigterm: threading.Event, stop: threading.Event, outcome: Outcome) -> None:
    """Send requests back to back; judge those sent before SIGTERM (later ones may be refused:
    503 while draining, or no connection once the worker closed its socket)."""
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            before = not sigterm.is_set()
            try:
                response = client.post(
                    f"{gateway.base_url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {MASTER_KEY}"},
                    json={"model": "chat", "messages": [{"role": "user", "content": "hello"}]},
                )
            except httpx.HTTPError as error:
                if before:
                    outcome.failed.append(f"{type(error).__name__}: {error}")
                if sigterm.is_set():
                    time.sleep(0.05)  # the gateway is going away: do not spin on refused connections
                continue
            if not before:
                continue
            if response.status_code == 200:
                outcome.answered += 1
            elif not (response.status_code == 503 and "shutting down" in response.text):
                # a request that reached the worker after the drain began is refused, not failed
                outcome.failed.append(f"{response.status_code}: {response.text[:200]}")


def shut_down_under_load(index: int, directory: Path, api_base: str, elo: Path) -> Outcome:
    trained = index == 0
    name = f"run {index} ({'elo, 2 workers' if trained else 'round-robin, 1 worker'})"
    outcome = Outcome(name)
    directory.mkdir()
    env = {"ROUTEIQ_DRAIN_TIMEOUT_SECONDS": str(DRAIN_TIMEOUT_SECONDS)}
    if trained:
        env.update(ROUTEIQ_STRATEGY="elo", ROUTEIQ_MODELS_PATH=str(elo))
    args = ["--config", str(config(directory, api_base)), "--workers", "2" if trained else "1"]
    gateway = GatewayProcess(args, free_port(), directory / "gateway.log", gateway_environment(**env))
    with gateway:
        gateway.wait_ready(timeout=180)
        sigterm, stop = threading.Event(), threading.Event()
        threads = [
            threading.Thread(target=load, args=(gateway, sigterm, stop, outcome)) for _ in range(LOAD_THREADS)
        ]
        for thread in threads:
            thread.start()
        # requests are in flight once some were answered (each takes the upstream's delay)
        deadline = time.monotonic() + 60
        while outcome.answered < 2 * LOAD_THREADS and time.monotonic() < deadline and not outcome.failed:
            time.sleep(0.05)
        sigterm.set()
        started = time.monotonic()
        gateway.terminate()
        try:
            outcome.exit_code = gateway.wait(60)
        finally:
            outcome.exit_seconds = time.monotonic() - started
            stop.set()
            for thread in threads:
                thread.join(60)
        log = gateway.log()
        counts = [int(count) for count in re.findall(r'"message": "draining", .*?"in_flight": (\d+)', log)]
        outcome.in_flight_at_sigterm = sum(counts) if counts else None
        outcome.log_tail = log[-3000:]
    return outcome


def test_a_gateway_exits_within_its_drain_timeout_under_load_every_time(
    tmp_path: Path, upstream: str, elo_artifact: Path
) -> None:
    with ThreadPoolExecutor(CONCURRENT_GATEWAYS) as pool:
        outcomes = list(
            pool.map(
                lambda index: shut_down_under_load(index, tmp_path / f"run-{index}", upstream, elo_artifact),
                range(RUNS),
            )
        )
    for outcome in outcomes:
        assert outcome.exit_code == 0, f"{outcome.name}: exit code {outcome.exit_code}\n{outcome.log_tail}"
        assert outcome.exit_seconds <= EXIT_BOUND_SECONDS, (
            f"{outcome.name}: exited {outcome.exit_seconds:.1f}s after SIGTERM, over the drain timeout "
            f"({DRAIN_TIMEOUT_SECONDS}s) + 2s\n{outcome.log_tail}"
        )
        assert not outcome.failed, f"{outcome.name}: requests in flight failed: {outcome.failed[:5]}"
        assert outcome.answered >= 2 * LOAD_THREADS, (
            f"{outcome.name}: under load ({outcome.answered} answered)"
        )
        assert outcome.in_flight_at_sigterm is not None, (
            f"{outcome.name}: no drain logged\n{outcome.log_tail}"
        )
    assert sum(outcome.in_flight_at_sigterm or 0 for outcome in outcomes) > 0, (
        "requests were in flight at SIGTERM"
    )
