"""Runs `routeiq gateway` as a real subprocess for the tests, and stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

ROUTEIQ = str(Path(sys.executable).parent / "routeiq")
MASTER_KEY = "sk-routeiq-test-0123456789abcdef"


def gateway_environment(**overrides: str) -> dict[str, str]:
    """The test process's environment without any RouteIQ or LiteLLM setting, plus `overrides`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ROUTEIQ_", "LITELLM_", "OTEL_")) and key not in {"REDIS_URL", "DATABASE_URL"}
    }
    env.update(LITELLM_MASTER_KEY=MASTER_KEY, LITELLM_LOCAL_MODEL_COST_MAP="True")
    # no metrics listener unless a test asks for one: gateways running side by side (in this
    # suite, or another suite on the machine) would all want the default port
    env.update(ROUTEIQ_METRICS_PORT="0")
    env.update(overrides)
    return env


class GatewayProcess:
    """`routeiq gateway` on 127.0.0.1:<port>, its output in `log_path`."""

    def __init__(self, args: list[str], port: int, log_path: Path, env: dict[str, str]) -> None:
        self.port = port
        self.log_path = log_path
        self.base_url = f"http://127.0.0.1:{port}"
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [ROUTEIQ, "gateway", "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # signals reach only the gateway, as in a container
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.base_url}/_health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"gateway not ready after {timeout}s:\n{self.log()[-4000:]}")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
