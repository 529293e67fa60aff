"""No network at start-up: the gateway starts and serves inside a namespace with only loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from routeiq_router.gateway.config import demo_config_path

ROOT = Path(__file__).resolve().parents[1]


def _namespaces_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _namespaces_available(), reason="needs `unshare -n` (root, util-linux) and iproute2")
def test_gateway_starts_and_serves_with_no_network(tmp_path: Path, free_port: int) -> None:
    probe = (
        f"ip link set lo up && exec {sys.executable} -m tests.offline_probe "
        f"{demo_config_path()} {free_port} {tmp_path / 'gateway.log'}"
    )
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"ready"')]
    log = (
        (tmp_path / "gateway.log").read_text(errors="replace") if (tmp_path / "gateway.log").exists() else ""
    )
    assert lines, f"probe printed nothing: {result.stderr[-2000:]}\n{log[-3000:]}"
    outcome = json.loads(lines[-1])
    assert outcome == {"ready": True, "status": 200, "strategy": "round-robin", "exit": 0}, log[-3000:]
