"""Gateway overhead: `routeiq gateway` (round-robin) against the plain LiteLLM proxy.

    .venv/bin/python bench/gateway_overhead.py [--quick]

Both servers get the same LiteLLM config, the same number of workers and the same master key,
in front of the same local OpenAI-compatible upstream (tests/fake_openai.py, no delay), which is
first measured alone. Per worker count both servers start once (each in its own session), wait
for readiness and take a warm-up load; each cell (connections) then runs pairs in alternating
order (RouteIQ, LiteLLM, LiteLLM, RouteIQ, ...). The load is a closed-loop asyncio + httpx
generator in a separate process. Per run: req/s, p50/p99 latency, CPU seconds per request of
every process in the server's session (from /proc) and RSS per process; per pair the
RouteIQ/LiteLLM ratios; per cell the median pair ratio against the targets (CPU per request
<= 1.03x, req/s >= 0.97x). Every server's process group is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repository root, for tests.*
    sys.path.insert(0, str(ROOT))

from tests.fake_openai import fake_openai  # noqa: E402
from tests.gateway_process import MASTER_KEY, gateway_environment  # noqa: E402
from tests.ports import free_port  # noqa: E402

BIN = Path(sys.executable).parent
CPU_TARGET = 1.03
RPS_TARGET = 0.97
CONFIG = """
model_list:
  - model_name: chat
    litellm_params: {{model: openai/chat-a, api_key: sk-fake, api_base: "{api_base}"}}
    model_info: {{id: chat-a}}
  - model_name: chat
    litellm_params: {{model: openai/chat-b, api_key: sk-fake, api_base: "{api_base}"}}
    model_info: {{id: chat-b}}
"""
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def session_processes(session: int) -> list[tuple[int, float, int]]:
    """(pid, cpu seconds, rss bytes) of every live process whose session id is `session`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session:
            cpu = (int(fields[11]) + int(fields[12])) / TICKS
            found.append((int(entry), cpu, int(fields[21]) * PAGE))
    return sorted(found)


class Server:
    """One server (RouteIQ or LiteLLM) in its own session on 127.0.0.1:<port>."""

    def __init__(self, name: str, command: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def wait_ready(self, path: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited:\n{self.log_path.read_text(errors='replace')[-3000:]}"
                )
            try:
                headers = {"authorization": f"Bearer {MASTER_KEY}"}
                if httpx.get(self.base_url + path, headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout}s")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(20)
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)
        self._log.close()


async def _load(base_url: str, requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    remaining = requests
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"authorization": f"Bearer {MASTER_KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                try:
                    ok = (
                        await client.post("/v1/chat/completions", json=body, headers=headers)
                    ).status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += 0 if ok else 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100)
    return {"elapsed": elapsed, "p50": cuts[49] * 1000, "p99": cuts[98] * 1000, "errors": errors}


def load(base_url: str, requests: int, concurrency: int) -> dict[str, float]:
    """The load generator in its own process (this script with --load), with a deadline."""
    out = subprocess.run(
        [sys.executable, __file__, "--load", base_url, str(requests), str(concurrency)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


@dataclass
class Run:
    rps: float
    p50: float
    p99: float
    cpu_ms: float
    rss_mb: list[float]
    errors: int


def measure(server: Server, requests: int, concurrency: int) -> Run:
    before = sum(cpu for _, cpu, _ in session_processes(server.process.pid))
    result = load(server.base_url, requests, concurrency)
    processes = session_processes(server.process.pid)
    cpu = sum(cpu for _, cpu, _ in processes) - before
    rss = [rss / 2**20 for _, _, rss in processes]
    return Run(
        requests / result["elapsed"],
        result["p50"],
        result["p99"],
        cpu * 1000 / requests,
        rss,
        int(result["errors"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer requests and pairs")
    parser.add_argument("--load", nargs=3, metavar=("URL", "REQUESTS", "CONCURRENCY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(_load(args.load[0], int(args.load[1]), int(args.load[2])))))
        return
    requests, pairs = (1000, 2) if args.quick else (4000, 4)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {requests} requests per run")
    with tempfile.TemporaryDirectory() as tmp, fake_openai({}) as api_base:
        config = Path(tmp) / "litellm.yaml"
        config.write_text(CONFIG.format(api_base=api_base))
        upstream, failed = asyncio.run(_upstream_alone(api_base, requests))
        print(f"upstream alone (16 connections): {upstream:.0f} req/s, {failed} failed")
        for workers in (1, 2):
            env = gateway_environment()
            port = free_port()
            routeiq = Server(
                "routeiq",
                [str(BIN / "routeiq"), "gateway", "--host", "127.0.0.1", "--port", str(port),
                 "--config", str(config), "--workers", str(workers)],
                port, env, Path(tmp) / f"routeiq-{workers}.log",
            )  # fmt: skip
            port = free_port()
            litellm = Server(
                "litellm",
                [str(BIN / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                 "--num_workers", str(workers)],
                port, env, Path(tmp) / f"litellm-{workers}.log",
            )  # fmt: skip
            try:
                routeiq.wait_ready("/_health/ready")
                litellm.wait_ready("/health/readiness")
                for server in (routeiq, litellm):
                    load(server.base_url, requests // 2, 64)  # warm-up
                for concurrency in (16, 64):
                    ratios_cpu, ratios_rps = [], []
                    print(f"\nworkers {workers}, connections {concurrency}")
                    for pair in range(pairs):
                        order = (routeiq, litellm) if pair % 2 == 0 else (litellm, routeiq)
                        runs = {server.name: measure(server, requests, concurrency) for server in order}
                        for name in ("routeiq", "litellm"):
                            run = runs[name]
                            print(
                                f"  {name:8} {run.rps:7.1f} req/s  p50 {run.p50:6.1f} ms  p99 {run.p99:6.1f} ms  "
                                f"CPU {run.cpu_ms:5.2f} ms/req  RSS MB {' '.join(f'{r:.0f}' for r in run.rss_mb)}  "
                                f"errors {run.errors}"
                            )
                        ratios_cpu.append(runs["routeiq"].cpu_ms / runs["litellm"].cpu_ms)
                        ratios_rps.append(runs["routeiq"].rps / runs["litellm"].rps)
                        print(
                            f"  pair {pair + 1}: CPU/req {ratios_cpu[-1]:.3f}x  req/s {ratios_rps[-1]:.3f}x"
                        )
                    cpu, rps = statistics.median(ratios_cpu), statistics.median(ratios_rps)
                    verdict = "meets" if cpu <= CPU_TARGET and rps >= RPS_TARGET else "MISSES"
                    print(
                        f"  median: CPU/req {cpu:.3f}x (<= {CPU_TARGET}), req/s {rps:.3f}x (>= {RPS_TARGET}): "
                        f"{verdict} the targets"
                    )
            finally:
                routeiq.stop()
                litellm.stop()


async def _upstream_alone(api_base: str, requests: int) -> tuple[float, int]:
    """req/s of the upstream alone (16 connections) and how many requests failed."""
    body = {"model": "chat-a", "messages": [{"role": "user", "content": "hello"}]}
    remaining, errors = requests, 0
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=16), timeout=60) as client:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                try:
                    await client.post(f"{api_base}/chat/completions", json=body)
                except httpx.HTTPError:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(16)))
        return requests / (time.perf_counter() - began), errors


if __name__ == "__main__":
    main()
