"""Run inside a network namespace with only loopback: start the gateway, route one request, stop.

Prints one JSON line: {"ready": bool, "status": int | null, "strategy": str | null, "exit": int | null}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from tests.gateway_process import MASTER_KEY, GatewayProcess, gateway_environment


def main(config: str, port: int, log_path: str) -> None:
    gateway = GatewayProcess(
        ["--config", config, "--workers", "1"], port, Path(log_path), gateway_environment()
    )
    outcome: dict[str, object] = {"ready": False, "status": None, "strategy": None, "exit": None}
    try:
        gateway.wait_ready(timeout=90)
        outcome["ready"] = True
        response = httpx.post(
            f"{gateway.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        outcome["status"] = response.status_code
        outcome["strategy"] = response.headers.get("x-routeiq-strategy")
        gateway.terminate()
        outcome["exit"] = gateway.wait(60)
    finally:
        gateway.stop()
        print(json.dumps(outcome))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
