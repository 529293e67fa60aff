"""The multi-worker supervisor's health ping (ROUTEIQ_WORKER_HEALTHCHECK_TIMEOUT_SECONDS) on a real
`routeiq gateway`: a worker that does not answer within the setting is restarted, one that is slow
for less is left alone, and a gateway starting on a CPU that other processes saturate loses no
worker to the ping."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.gateway_process import GatewayProcess, gateway_environment
from tests.ports import free_port

pytestmark = pytest.mark.slow

CONFIG = """
model_list:
  - model_name: chat
    litellm_params: {model: openai/chat-a, api_key: sk-mock, mock_response: "answer"}
"""
DIED = re.compile(r"Child process \[(\d+)\] died")


def start(tmp_path: Path, **env: str) -> GatewayProcess:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    return GatewayProcess(
        ["--config", str(config), "--workers", "2"],
        free_port(),
        tmp_path / "gateway.log",
        gateway_environment(**env),
    )


def workers(gateway: GatewayProcess) -> list[int]:
    """The uvicorn worker processes of the gateway (spawned children; not the resource tracker)."""
    pid = gateway.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            continue
        if b"multiprocessing" in command and b"resource_tracker" not in command:
            found.append(int(child))
    return found


def wait_for(check: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        time.sleep(0.1)


def stop_for(pid: int, seconds: float) -> None:
    """SIGSTOP the worker for `seconds`: it answers nothing, as a worker stuck loading a model."""
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the stall itself is what is tested: nothing to await
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed by the supervisor meanwhile
            os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize(("timeout", "restarted"), [("1", True), (None, False)], ids=["1s", "default"])
def test_a_worker_is_restarted_only_after_the_health_ping_timeout(
    tmp_path: Path, timeout: str | None, restarted: bool
) -> None:
    env = {"ROUTEIQ_WORKER_HEALTHCHECK_TIMEOUT_SECONDS": timeout} if timeout else {}
    gateway = start(tmp_path, **env)
    try:
        gateway.wait_ready()
        wait_for(lambda: len(workers(gateway)) == 2, 30, "two workers")
        stalled = workers(gateway)[0]
        stop_for(stalled, 4.0)
        if restarted:  # 1 s without a reply to the ping: killed and replaced
            wait_for(
                lambda: f"Child process [{stalled}] died" in gateway.log(), 30, "the stalled worker replaced"
            )
            wait_for(
                lambda: len(workers(gateway)) == 2 and stalled not in workers(gateway), 60, "a new worker"
            )
        else:  # 4 s is well within the default 60 s: the same worker goes on serving
            time.sleep(1.0)  # a supervisor pass (every 0.5 s) after the worker answers again
            assert stalled in workers(gateway)
            assert not DIED.search(gateway.log()), gateway.log()[-3000:]
        gateway.wait_ready(60)
    finally:
        gateway.stop()


def test_a_gateway_starting_on_a_saturated_cpu_loses_no_worker_to_the_health_ping(tmp_path: Path) -> None:
    spin = "import time\nend = time.monotonic() + 90\nwhile time.monotonic() < end: pass\n"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
    try:
        gateway = start(tmp_path)
        try:
            gateway.wait_ready(120)
            wait_for(lambda: len(workers(gateway)) == 2, 60, "two workers")
        finally:
            for spinner in spinners:
                spinner.kill()
            gateway.stop()
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait(10)
    assert not DIED.search(gateway.log()), gateway.log()[-3000:]
