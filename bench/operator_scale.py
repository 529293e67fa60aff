"""How fast the operator brings many RouteIQGateways to Ready, against the API emulator.

    .venv/bin/python bench/operator_scale.py                 # 100, 500 and 1000 gateways
    .venv/bin/python bench/operator_scale.py --counts 100    # a quick run

For each count, a fresh emulator (tests/k8s/emulator/) gets the CRDs and `routeiq operator
--standalone` runs as a subprocess against it. The gateways are created at a steady rate
(`--rate` per second, default 5: about what the emulator's strictly validated writes,
~11 ms each on one thread, sustain), and a stand-in for the Deployment controller marks each
Deployment's replicas ready as soon as it appears (the emulator runs no controllers). The time
of a gateway is from its create call to the moment its status says Ready=True with every child
present; the table shows p50 and p99, the operator's peak RSS, and the wall time. Reference:
Envoy AI Gateway reports about 5 s per route to become ready at 2,000 routes; RouteIQ's target
is a p99 under 1 s at 1,000 gateways.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "router")]

from tests.k8s.emulator import KubeEmulator  # noqa: E402
from tests.ports import free_port  # noqa: E402

from routeiq_operator.crds import KINDS  # noqa: E402
from routeiq_operator.schema import custom_resource_definition  # noqa: E402

ROUTEIQ = str(Path(sys.executable).parent / "routeiq")
CHILDREN = (
    "serviceaccounts",
    "configmaps",
    "deployments",
    "services",
    "poddisruptionbudgets",
    "networkpolicies",
)


def gateway(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "routeiq.io/v1alpha1",
        "kind": "RouteIQGateway",
        "metadata": {"name": f"gw-{index}", "namespace": "bench"},
        "spec": {
            "tier": "standard",
            "litellm": {
                "modelList": [{"model_name": "chat", "litellm_params": {"model": "openai/gpt-4o-mini"}}]
            },
            "secrets": {"masterKey": {"name": "routeiq", "key": "master-key"}},
        },
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class ClusterStandIn(threading.Thread):
    """Plays the Deployment controller (marks a new Deployment's replicas ready, as
    kube-controller-manager would once its pods run) and records when each gateway first reports
    Ready=True with every child present. It looks only at gateways not done yet, one object at a
    time, so its own cost does not grow with the fleet."""

    def __init__(self, emulator: KubeEmulator) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        self.stop = threading.Event()
        self.pending: list[str] = []
        self.done: dict[str, float] = {}
        self._marked: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            for name in list(self.pending):
                if name in self.done:
                    continue
                child = f"{name}-gateway"
                if child not in self._marked:
                    deployment = self.emulator.get_object("deployments", child, "bench")
                    if deployment is not None:
                        replicas = int(deployment["spec"].get("replicas", 1))
                        self.emulator.patch_status(
                            "deployments",
                            child,
                            {
                                "observedGeneration": deployment["metadata"]["generation"],
                                "replicas": replicas,
                                "updatedReplicas": replicas,
                                "readyReplicas": replicas,
                                "availableReplicas": replicas,
                            },
                            "bench",
                        )
                        self._marked.add(child)
                    continue
                gateway = self.emulator.get_object("routeiqgateways", name, "bench")
                conditions = ((gateway or {}).get("status") or {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and all(
                    self.emulator.get_object(
                        kind, f"{child}-config" if kind == "configmaps" else child, "bench"
                    )
                    for kind in CHILDREN
                ):
                    self.done[name] = time.monotonic()
            time.sleep(0.05)


def run(count: int, rate: float, timeout: float) -> dict[str, float]:
    with KubeEmulator() as emulator, tempfile.TemporaryDirectory() as scratch:
        for model in KINDS:
            emulator.create_object("customresourcedefinitions", custom_resource_definition(model))
        emulator.create_object(
            "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
        )
        emulator.create_object(
            "secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "routeiq", "namespace": "bench"},
                "stringData": {"master-key": "sk-bench"},
            },
        )
        kubeconfig = emulator.write_kubeconfig(Path(scratch) / "kubeconfig")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEIQ_")}
        env.update(
            KUBECONFIG=str(kubeconfig),
            ROUTEIQ_OPERATOR_RESYNC_SECONDS="600",
            ROUTEIQ_OPERATOR_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        )
        log = (Path(os.environ.get("BENCH_LOG_DIR", scratch)) / "operator.log").open("wb")
        operator = subprocess.Popen(
            [ROUTEIQ, "operator", "--standalone", "--liveness-port", str(port), "-n", "bench"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        stand_in = ClusterStandIn(emulator)
        stand_in.start()
        try:
            for _ in range(300):
                if operator.poll() is not None:
                    raise SystemExit(f"the operator exited with {operator.returncode}; see its log")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            created: dict[str, float] = {}
            peak = 0
            started = time.monotonic()
            interval = 1.0 / rate
            for index in range(count):
                name = f"gw-{index}"
                created[name] = time.monotonic()
                emulator.create_object("routeiqgateways", gateway(index))
                stand_in.pending.append(name)
                peak = max(peak, rss_kib(operator.pid))
                time.sleep(max(0.0, created[name] + interval - time.monotonic()))
            deadline = time.monotonic() + timeout
            while len(stand_in.done) < count and time.monotonic() < deadline:
                peak = max(peak, rss_kib(operator.pid))
                time.sleep(0.2)
            done = dict(stand_in.done)
            cpu = cpu_seconds(operator.pid)
            requests = len(emulator.request_log)
            latencies = sorted(done[name] - created[name] for name in done)
            return {
                "count": count,
                "ready": len(done),
                "p50": statistics.median(latencies) if latencies else float("nan"),
                "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
                if latencies
                else float("nan"),
                "rss_mib": peak / 1024,
                "cpu_ms": cpu / count * 1000,
                "requests": requests / count,
                "wall": time.monotonic() - started,
            }
        finally:
            stand_in.stop.set()
            os.killpg(operator.pid, signal.SIGTERM)
            operator.wait(30)
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,500,1000", help="comma-separated gateway counts")
    parser.add_argument("--rate", type=float, default=5.0, help="gateways created per second")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the last one")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, create rate {args.rate:g}/s")
    print(
        f"{'gateways':>9} {'ready':>6} {'p50 s':>8} {'p99 s':>8} {'operator RSS MiB':>17} "
        f"{'CPU ms/gw':>10} {'API calls/gw':>13} {'wall s':>7}"
    )
    results = []
    for count in (int(c) for c in args.counts.split(",")):
        result = run(count, args.rate, args.timeout)
        results.append(result)
        print(
            f"{result['count']:>9.0f} {result['ready']:>6.0f} {result['p50']:>8.3f} {result['p99']:>8.3f} "
            f"{result['rss_mib']:>17.1f} {result['cpu_ms']:>10.1f} {result['requests']:>13.1f} "
            f"{result['wall']:>7.1f}",
            flush=True,
        )
    largest = results[-1]
    verdict = "PASS" if largest["ready"] == largest["count"] and largest["p99"] < 1.0 else "MISS"
    print(
        f"VERDICT: {verdict} - target p99 < 1 s at {largest['count']:.0f} gateways "
        f"(got {largest['p99']:.3f} s); reference: Envoy AI Gateway ~5 s per route at 2,000 routes"
    )


if __name__ == "__main__":
    main()
