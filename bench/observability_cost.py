"""The cost of metrics and tracing: three `routeiq gateway`s (2 workers each) side by side.

    .venv/bin/python bench/observability_cost.py

Configurations: `base` (ROUTEIQ_METRICS_PORT=0, no OTLP endpoint), `metrics` (a metrics port) and
`tracing` (a metrics port plus OTLP push to a local sink that discards everything, sampler
traceidratio at 0.1). The three gateways start once and stay up; each round sends the same
closed-loop load (asyncio + httpx, fixed concurrency and request count) to each in turn, in a
rotating order, so that machine noise lands on every configuration alike. An idle gateway costs
next to nothing, and restarting three LiteLLM proxies per round would spend the time budget on
start-up. CPU seconds are read from /proc for every process in each gateway's session.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repository root, for tests.* (as local_redis.py does)
    sys.path.insert(0, str(ROOT))

from tests.fake_openai import fake_openai  # noqa: E402
from tests.gateway_process import MASTER_KEY, GatewayProcess, gateway_environment  # noqa: E402
from tests.ports import free_port  # noqa: E402

import observability_hooks  # noqa: E402  (bench/, this script's directory)

NAMES = ("base", "metrics", "tracing")
TARGETS = {"metrics": 0.03, "tracing": 0.05}
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


class _Sink:
    """An OTLP/HTTP collector stand-in that reads and discards every export, answering 200."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def session_cpu_seconds(session: int) -> float:
    """utime + stime of every live process whose session id is `session` (the gateway and its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session:  # fields[0] is field 3 (state); session is field 6
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICKS


@dataclass
class Cell:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_per_1k: float
    errors: int


async def load(base_url: str, requests: int, concurrency: int) -> tuple[float, list[float], int]:
    """Closed loop: `concurrency` clients, each sends its next request when the last one is answered."""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"authorization": f"Bearer {MASTER_KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/chat/completions", json=body, headers=headers)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += 0 if ok else 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return elapsed, latencies, errors


def measure(gateway: GatewayProcess, requests: int, concurrency: int) -> Cell:
    cpu_before = session_cpu_seconds(gateway.process.pid)
    elapsed, latencies, errors = asyncio.run(load(gateway.base_url, requests, concurrency))
    cpu = session_cpu_seconds(gateway.process.pid) - cpu_before
    cuts = statistics.quantiles(latencies, n=100)
    return Cell(requests / elapsed, cuts[49] * 1000, cuts[98] * 1000, cpu * 1000 / requests, errors)


def stop_all(gateways: list[GatewayProcess], deadline_s: float = 20.0) -> None:
    for gateway in gateways:
        if gateway.process.poll() is None:
            gateway.process.send_signal(signal.SIGTERM)
    until = time.monotonic() + deadline_s
    for gateway in gateways:
        try:
            gateway.process.wait(max(0.1, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(gateway.process.pid, signal.SIGKILL)
            gateway.process.wait(10)
        gateway._log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=800, help="requests per cell (default 800)")
    parser.add_argument("--warmup", type=int, default=200, help="requests per gateway before round 1")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--hooks-iterations",
        type=int,
        default=20000,
        help="simulated requests per process of the in-process part",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="routeiq-bench-obs-"))
    sink = _Sink()
    gateways: dict[str, GatewayProcess] = {}
    started = time.monotonic()
    try:
        with fake_openai({}) as api_base:
            config = workdir / "config.yaml"
            config.write_text(CONFIG.format(api_base=api_base))
            envs = {
                "base": gateway_environment(ROUTEIQ_METRICS_PORT="0"),
                "metrics": gateway_environment(ROUTEIQ_METRICS_PORT=str(free_port())),
                "tracing": gateway_environment(
                    ROUTEIQ_METRICS_PORT=str(free_port()),
                    OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
                    OTEL_TRACES_SAMPLER="traceidratio",
                    OTEL_TRACES_SAMPLER_ARG="0.1",
                ),
            }
            for name in NAMES:
                gateways[name] = GatewayProcess(
                    ["--config", str(config), "--workers", str(args.workers)],
                    free_port(),
                    workdir / f"{name}.log",
                    envs[name],
                )
            for gateway in gateways.values():
                gateway.wait_ready(timeout=150)
            print(f"gateways ready in {time.monotonic() - started:.0f} s; logs in {workdir}", flush=True)
            for gateway in gateways.values():
                measure(gateway, args.warmup, args.concurrency)

            cells: dict[str, list[Cell]] = {name: [] for name in NAMES}
            for round_ in range(args.rounds):
                order = NAMES[round_ % 3 :] + NAMES[: round_ % 3]
                for name in order:
                    cells[name].append(measure(gateways[name], args.requests, args.concurrency))
                print(f"round {round_ + 1}/{args.rounds} done ({' '.join(order)})", flush=True)
    finally:
        stop_all(list(gateways.values()))
        sink.close()

    print()
    print(
        f"routeiq gateway, {args.workers} workers each, three gateways kept running, load alternated "
        f"between them in rotating order; closed loop, concurrency {args.concurrency}, "
        f"{args.requests} requests per cell, {args.rounds} rounds, {args.warmup} warm-up requests each; "
        f"nproc {os.cpu_count()}, Python {sys.version.split()[0]}"
    )
    header = f"{'config':<8} {'round':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/1k':>9} {'rps/base':>9} {'CPU/base':>9} {'errors':>6}"
    print(header)
    print("-" * len(header))
    ratios: dict[str, list[float]] = {name: [] for name in NAMES}
    for name in NAMES:
        for index, cell in enumerate(cells[name]):
            base = cells["base"][index]
            ratio = cell.rps / base.rps
            ratios[name].append(ratio)
            print(
                f"{name:<8} {index + 1:>5} {cell.rps:>8.1f} {cell.p50_ms:>8.1f} {cell.p99_ms:>8.1f} "
                f"{cell.cpu_per_1k:>9.2f} {ratio:>8.3f}x {cell.cpu_per_1k / base.cpu_per_1k:>8.3f}x {cell.errors:>6}"
            )
        median = statistics.median
        rows = cells[name]
        base_cpu = median(c.cpu_per_1k for c in cells["base"])
        print(
            f"{name:<8} {'med':>5} {median(c.rps for c in rows):>8.1f} {median(c.p50_ms for c in rows):>8.1f} "
            f"{median(c.p99_ms for c in rows):>8.1f} {median(c.cpu_per_1k for c in rows):>9.2f} "
            f"{median(ratios[name]):>8.3f}x {median(c.cpu_per_1k for c in rows) / base_cpu:>8.3f}x "
            f"{sum(c.errors for c in rows):>6}"
        )
        print()
    met = True
    for name, limit in TARGETS.items():
        loss = 1 - statistics.median(ratios[name])
        ok = loss <= limit
        met = met and ok
        print(
            f"target {name}: throughput loss <= {limit:.0%} (median of per-round ratios): "
            f"{loss:+.1%} -> {'met' if ok else 'NOT met'}"
        )
    base_rps = [c.rps for c in cells["base"]]
    spread = (max(base_rps) - min(base_rps)) / statistics.median(base_rps)
    resolved = spread <= min(TARGETS.values())
    print(
        f"baseline req/s across rounds: {min(base_rps):.1f}-{max(base_rps):.1f} "
        f"(spread {spread:.0%} of its median): "
        + (
            "the targets are resolvable"
            if resolved
            else "larger than the targets, so the verdict is within noise"
        )
    )
    verdict = "met" if met else "NOT met"
    print(f"end-to-end targets {verdict}{'' if resolved else ' (not resolved: noise)'}")

    # The instrumentation's own CPU, measured in-process (bench/observability_hooks.py), against
    # this run's base gateway CPU per request: on a CPU-bound gateway the throughput loss is
    # added / (base + added), a bound that machine noise does not blur.
    base_cpu_ms = statistics.median(c.cpu_per_1k for c in cells["base"])  # s per 1k = ms per request
    print()
    print(
        f"instrumentation CPU per simulated request (bench/observability_hooks.py, {args.hooks_iterations} "
        f"requests per process, 3 rounds) against the base gateway's {base_cpu_ms:.2f} ms CPU per request:"
    )
    sink = _Sink()
    try:
        hooks = observability_hooks.measure(args.hooks_iterations, 3, sink.endpoint)
    finally:
        sink.close()
    for line in observability_hooks.report(hooks, base_cpu_ms):
        print(line)
    loop = statistics.median(hooks["none"])
    for name, limit in TARGETS.items():
        added_ms = (statistics.median(hooks[name]) - loop) / 1000
        loss = added_ms / (base_cpu_ms + added_ms)
        print(
            f"target {name}: throughput loss <= {limit:.0%} from CPU per request: "
            f"{added_ms * 1000:.0f} us of {base_cpu_ms:.2f} ms -> {loss:.2%} -> {'met' if loss <= limit else 'NOT met'}"
        )
    print(f"total run {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
