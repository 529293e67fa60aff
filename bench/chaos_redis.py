"""Redis killed, restarted and paused under load: no request may fail, the split must stay exact.

    .venv/bin/python bench/chaos_redis.py
    .venv/bin/python bench/chaos_redis.py --outage 3 --recovery 15 --concurrency 16

Two `routeiq gateway` processes with 2 workers each share a redis-server this script runs (with an
append-only file, as a Redis with persistence; `ROUTEIQ_REDIS_TIMEOUT_MS=200`). A 70/30 A/B split
(control round-robin / candidate least-busy) is set with `routeiq state weights set`. A closed-loop
load (httpx, `--concurrency` requests in flight, spread over both gateways) runs the whole time,
and Redis goes through three faults, each followed by `--recovery` seconds of normal service:

- kill: SIGKILL (no shutdown), down for `--outage` seconds, started again;
- restart: SIGTERM (a clean shutdown), down for `--outage` seconds, started again;
- pause: SIGSTOP for `--outage` seconds (a hung server: connections stay open, nothing answers),
  then SIGCONT.

Per fault it prints the requests sent from the fault until the end of its recovery window, the
failed ones (any status but 200, or no answer), the degraded episodes the gateways logged ("Redis
unreachable: serving on the last known routing state") while Redis was out, and those that began
after Redis answered again (a stale pooled connection that no retry caught): the figure that must
be 0. At the end: control's share of all requests, and whether the Redis counters equal what the
gateways served per variant (every request counted exactly once, outages included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from redis import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "router")]

from tests.gateway_process import MASTER_KEY, ROUTEIQ, GatewayProcess, gateway_environment  # noqa: E402
from tests.ports import free_port  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.test_gateway_process import CONFIG  # noqa: E402  (two mock deployments of `chat`)

from routeiq_router.state import GatewayKeys  # noqa: E402
from routeiq_router.state.counters import parse_counters  # noqa: E402

GATEWAY = "bench/chaos"
DEGRADED = "Redis unreachable: serving on the last known routing state"


@dataclass(frozen=True)
class Answer:
    at: float  # time.time() when the answer arrived
    status: int  # 0: no HTTP answer
    variant: str | None


@dataclass
class Fault:
    name: str
    began: float = 0.0
    answered: float = 0.0  # Redis answered PING again
    ended: float = 0.0  # end of the recovery window


class Load:
    """Closed-loop requests over every gateway until stopped."""

    def __init__(self, urls: list[str], concurrency: int) -> None:
        self.urls = urls
        self.concurrency = concurrency
        self.answers: list[Answer] = []
        self.stopping = asyncio.Event()

    async def _worker(self, index: int, client: httpx.AsyncClient) -> None:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        turn = index
        while not self.stopping.is_set():
            url = self.urls[turn % len(self.urls)]
            turn += 1
            try:
                response = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
                self.answers.append(
                    Answer(time.time(), response.status_code, response.headers.get("x-routeiq-variant"))
                )
            except httpx.HTTPError:
                self.answers.append(Answer(time.time(), 0, None))

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency, keepalive_expiry=2.0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await asyncio.gather(*(self._worker(i, client) for i in range(self.concurrency)))


def ping(server: RedisServer, within: float) -> float:
    """time.time() when the server answers PING, waiting at most `within` seconds."""
    client = Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return time.time()
            except Exception:
                time.sleep(0.02)
        raise SystemExit(f"redis-server did not answer within {within:.0f} s")
    finally:
        client.close()


async def inject(server: RedisServer, fault: Fault, outage: float, recovery: float) -> None:
    process = server.process
    assert process is not None
    fault.began = time.time()
    if fault.name == "pause":
        process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(outage)
        process.send_signal(signal.SIGCONT)
    else:
        if fault.name == "kill":
            process.kill()
        else:
            process.terminate()
        await asyncio.to_thread(process.wait, 10)
        server.process = None
        await asyncio.sleep(outage)
        await asyncio.to_thread(server.start)
    fault.answered = await asyncio.to_thread(ping, server, 30.0)
    await asyncio.sleep(recovery)
    fault.ended = time.time()


def degraded_times(logs: list[Path]) -> list[float]:
    """time.time() of every degraded episode the gateways logged (JSON lines, RFC 3339 in UTC)."""
    times = []
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if DEGRADED not in line:
                continue
            try:
                stamp = json.loads(line)["timestamp"]
            except (ValueError, KeyError):
                continue
            times.append(datetime.fromisoformat(stamp).timestamp())
    return times


def set_weights(server: RedisServer) -> None:
    env = gateway_environment(REDIS_URL=server.url, ROUTEIQ_GATEWAY=GATEWAY)
    result = subprocess.run(
        [
            ROUTEIQ,
            "state",
            "weights",
            "set",
            "control=round-robin:70",
            "candidate=least-busy:30",
            "--reset-counters",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"routeiq state weights set failed: {result.stderr}")


def redis_counts(server: RedisServer) -> dict[str, int]:
    client = Redis.from_url(server.url)
    try:
        raw = client.hgetall(GatewayKeys(GATEWAY).ab_counters)
    finally:
        client.close()
    counters = parse_counters({(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()})
    return {name: c.requests for name, c in counters.items()}


async def scenario(
    urls: list[str], server: RedisServer, args: argparse.Namespace
) -> tuple[Load, list[Fault]]:
    load = Load(urls, args.concurrency)
    running = asyncio.create_task(load.run())
    faults = [Fault(name) for name in ("kill", "restart", "pause")]
    try:
        await asyncio.sleep(args.warmup)
        for fault in faults:
            await inject(server, fault, args.outage, args.recovery)
            print(f"{fault.name}: done", flush=True)
    finally:
        load.stopping.set()
        await asyncio.wait_for(running, 60)
    return load, faults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=3.0, help="seconds Redis is down or paused")
    parser.add_argument("--recovery", type=float, default=15.0, help="seconds of service after each fault")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="routeiq-chaos-redis-") as scratch:
        directory = Path(os.environ.get("BENCH_LOG_DIR", scratch))
        (directory / "redis").mkdir(parents=True, exist_ok=True)
        server = RedisServer(directory / "redis", persistent=True)
        server.start()
        config = directory / "config.yaml"
        config.write_text(CONFIG)
        env = gateway_environment(
            REDIS_URL=server.url,
            ROUTEIQ_GATEWAY=GATEWAY,
            ROUTEIQ_AB_TESTING_ENABLED="true",
            ROUTEIQ_REDIS_TIMEOUT_MS="200",
        )
        logs = [directory / f"gateway-{i}.log" for i in range(2)]
        gateways = [
            GatewayProcess(["--config", str(config), "--workers", "2"], free_port(), log, env) for log in logs
        ]
        try:
            for gateway in gateways:
                gateway.wait_ready()
            set_weights(server)
            time.sleep(1.0)  # the weights reach every worker by pub/sub (bench/propagation.py: ms)
            load, faults = asyncio.run(scenario([g.base_url for g in gateways], server, args))
            time.sleep(2.0)  # the last outcome batches are flushed
            counted = redis_counts(server)
        finally:
            for gateway in gateways:
                gateway.stop()
            server.stop()
        episodes = degraded_times(logs)
    answers = load.answers
    print()
    print(
        f"2 routeiq gateways x 2 workers, one redis-server (append-only file), ROUTEIQ_REDIS_TIMEOUT_MS=200; "
        f"closed loop, concurrency {args.concurrency}; outage {args.outage:g} s, recovery window "
        f"{args.recovery:g} s; python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(
        f"{'fault':<8} {'requests':>9} {'failed':>7} {'degraded episodes':>18} {'after Redis answered':>21}"
    )
    total_after = 0
    for fault in faults:
        window = [a for a in answers if fault.began <= a.at < fault.ended]
        lost = sum(1 for a in window if a.status != 200)
        during = sum(1 for t in episodes if fault.began <= t < fault.answered)
        after = sum(1 for t in episodes if fault.answered <= t < fault.ended)
        total_after += after
        print(f"{fault.name:<8} {len(window):>9} {lost:>7} {during:>18} {after:>21}")
    failed = [a for a in answers if a.status != 200]
    served = Counter(a.variant for a in answers if a.status == 200)
    share = served["control"] / max(1, sum(served.values()))
    print(
        f"all: {len(answers)} requests, {len(failed)} failed ({dict(Counter(a.status for a in failed))}); "
        f"control {share:.2%} of the served (target 70 %)"
    )
    exact = counted == dict(served)
    print(f"Redis counters {counted} vs served {dict(served)}: {'exactly once' if exact else 'DIFFERENT'}")
    verdict = not failed and exact and total_after == 0
    print(
        f"VERDICT: {'PASS' if verdict else 'FAIL'} (0 failed, counters exact, no degraded episode after Redis answered)"
    )
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
