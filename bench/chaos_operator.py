"""The operator killed at random points while gateways are created, updated and deleted.

    .venv/bin/python bench/chaos_operator.py                   # 20 gateways, 100 kills
    .venv/bin/python bench/chaos_operator.py --kills 20 --seed 7

A fresh API emulator (tests/k8s/emulator/) gets the CRDs, and `routeiq operator --standalone`
runs against it as a subprocess. A driver thread keeps changing a fleet of `--gateways`
RouteIQGateways at random (seeded): creates one that is missing, updates one (`spec.workers`
1-4, so its Deployment changes), or deletes one. A killer sends the operator SIGKILL (no clean-up,
as a crashed pod) a random 0-1.5 s after it is live (its liveness endpoint answers), and starts a
new one at once, `--kills` times; the fleet keeps changing while the new one starts. A stand-in for the Deployment controller marks every Deployment's replicas ready for its
current generation, as kube-controller-manager would once its pods run.

Then the chaos stops, one last operator runs, and the script waits (bounded by `--settle`) for
the fleet to converge and checks what must hold:

- every gateway that exists is Ready=True for its current generation, and each of its children
  exists exactly once, with the Deployment running the gateway's last `spec.workers`;
- no duplicates: no kind has two objects for one gateway;
- no orphans: no child (by its `app.kubernetes.io/instance` label) of a gateway that is gone;
- no stuck finalizers: no gateway is left with a deletionTimestamp.

It prints the counts and exits 1 when any of them is not zero (a benchmark that checks, so a
run can be pasted into docs/benchmarks.md as it is).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
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
NAMESPACE = "chaos"
INSTANCE = "app.kubernetes.io/instance"
# every child of a standard-tier gateway, by kind, and its name
CHILDREN = {
    "serviceaccounts": "{}-gateway",
    "configmaps": "{}-gateway-config",
    "deployments": "{}-gateway",
    "services": "{}-gateway",
    "poddisruptionbudgets": "{}-gateway",
    "networkpolicies": "{}-gateway",
}


def gateway(name: str, workers: int) -> dict[str, Any]:
    return {
        "apiVersion": "routeiq.io/v1alpha1",
        "kind": "RouteIQGateway",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "tier": "standard",
            "workers": workers,
            "litellm": {
                "modelList": [{"model_name": "chat", "litellm_params": {"model": "openai/gpt-4o-mini"}}]
            },
            "secrets": {"masterKey": {"name": "routeiq", "key": "master-key"}},
        },
    }


class Operator:
    """`routeiq operator --standalone` against the emulator, started again after every kill."""

    def __init__(self, kubeconfig: Path, log_path: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEIQ_")}
        self.env.update(
            KUBECONFIG=str(kubeconfig),
            ROUTEIQ_OPERATOR_RESYNC_SECONDS="5",
            ROUTEIQ_OPERATOR_METRICS_PORT="0",
            ROUTEIQ_OPERATOR_LOG_LEVEL="WARNING",
        )
        self.log = log_path.open("ab")
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [ROUTEIQ, "operator", "--standalone", "--liveness-port", str(self.port), "-n", NAMESPACE],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )

    def wait_live(self, timeout: float = 60.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the operator exited with {self.process.returncode}; see its log")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"the operator was not live within {timeout:.0f} s")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class DeploymentController(threading.Thread):
    """Marks every Deployment's replicas ready for its current generation."""

    def __init__(self, emulator: KubeEmulator) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for deployment in self.emulator.list_objects("deployments", NAMESPACE):
                meta, status = deployment["metadata"], deployment.get("status") or {}
                if status.get("observedGeneration") == meta["generation"]:
                    continue
                replicas = int(deployment["spec"].get("replicas", 1))
                try:
                    self.emulator.patch_status(
                        "deployments",
                        meta["name"],
                        {
                            "observedGeneration": meta["generation"],
                            "replicas": replicas,
                            "updatedReplicas": replicas,
                            "readyReplicas": replicas,
                            "availableReplicas": replicas,
                        },
                        NAMESPACE,
                    )
                except Exception:  # deleted meanwhile: the next pass sees the list without it
                    continue


class Driver(threading.Thread):
    """Creates, updates and deletes gateways at random; remembers the workers each should have."""

    def __init__(self, emulator: KubeEmulator, names: list[str], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        self.names = names
        self.rng = rng
        self.stop = threading.Event()
        self.ops: Counter[str] = Counter()

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(0.02, 0.15)):
            name = self.rng.choice(self.names)
            current = self.emulator.get_object("routeiqgateways", name, NAMESPACE)
            try:
                if current is None:
                    self.emulator.create_object("routeiqgateways", gateway(name, self.rng.randint(1, 4)))
                    self.ops["create"] += 1
                elif current["metadata"].get("deletionTimestamp"):
                    continue  # being deleted: the operator's finalizer must let it go
                elif self.rng.random() < 0.7:
                    self.emulator.patch_object(
                        "routeiqgateways", name, {"spec": {"workers": self.rng.randint(1, 4)}}, NAMESPACE
                    )
                    self.ops["update"] += 1
                else:
                    self.emulator.delete_object("routeiqgateways", name, NAMESPACE)
                    self.ops["delete"] += 1
            except Exception:  # a conflict with the operator's own write: the next round picks again
                self.ops["conflict"] += 1


def problems(emulator: KubeEmulator) -> dict[str, list[str]]:
    """What does not hold now: not converged, duplicates, orphans, stuck finalizers."""
    found: dict[str, list[str]] = {
        "not converged": [],
        "duplicates": [],
        "orphans": [],
        "stuck finalizers": [],
    }
    gateways = {g["metadata"]["name"]: g for g in emulator.list_objects("routeiqgateways", NAMESPACE)}
    for name, body in gateways.items():
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            found["stuck finalizers"].append(name)
            continue
        status = body.get("status") or {}
        ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
        if (
            not ready
            or ready[0]["status"] != "True"
            or status.get("observedGeneration") != meta["generation"]
        ):
            found["not converged"].append(f"{name}: not Ready for generation {meta['generation']}")
        deployment = emulator.get_object("deployments", CHILDREN["deployments"].format(name), NAMESPACE)
        if deployment is not None:
            env = {
                e["name"]: e.get("value")
                for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            }
            if env.get("ROUTEIQ_WORKERS") != str(body["spec"]["workers"]):
                found["not converged"].append(f"{name}: Deployment runs {env.get('ROUTEIQ_WORKERS')} workers")
    for kind, pattern in CHILDREN.items():
        per_gateway: Counter[str] = Counter()
        for child in emulator.list_objects(kind, NAMESPACE):
            owner = (child["metadata"].get("labels") or {}).get(INSTANCE)
            if owner is None:
                continue  # not a gateway's child (the namespace's default ServiceAccount, say)
            per_gateway[owner] += 1
            if owner not in gateways:
                found["orphans"].append(f"{kind}/{child['metadata']['name']}")
        for name in gateways:
            if per_gateway[name] > 1:
                found["duplicates"].append(f"{kind} of {name}: {per_gateway[name]}")
            if per_gateway[name] == 0 and name not in found["stuck finalizers"]:
                found["not converged"].append(f"{name}: no {kind} ({pattern.format(name)})")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle", type=float, default=120.0, help="seconds to converge after the chaos")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    names = [f"gw-{i}" for i in range(args.gateways)]
    started = time.monotonic()
    with KubeEmulator() as emulator, tempfile.TemporaryDirectory() as scratch:
        for model in KINDS:
            emulator.create_object("customresourcedefinitions", custom_resource_definition(model))
        emulator.create_object(
            "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        emulator.create_object(
            "secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "routeiq", "namespace": NAMESPACE},
                "stringData": {"master-key": "sk-chaos"},
            },
        )
        kubeconfig = emulator.write_kubeconfig(Path(scratch) / "kubeconfig")
        log_path = Path(os.environ.get("BENCH_LOG_DIR", scratch)) / "operator.log"
        operator = Operator(kubeconfig, log_path)
        controller = DeploymentController(emulator)
        driver = Driver(emulator, names, rng)
        controller.start()
        try:
            operator.start()
            operator.wait_live()
            driver.start()
            for kill in range(args.kills):
                time.sleep(rng.uniform(0.0, 1.5))  # a random point of its work, once it is live
                operator.kill()
                operator.start()
                operator.wait_live()
                if (kill + 1) % 20 == 0:
                    print(f"{kill + 1}/{args.kills} kills; operations so far: {dict(driver.ops)}", flush=True)
            driver.stop.set()
            driver.join(10)
            chaos_seconds = time.monotonic() - started
            operator.wait_live()
            settle_started = time.monotonic()
            deadline = settle_started + args.settle
            found = problems(emulator)
            while any(found.values()) and time.monotonic() < deadline:
                time.sleep(0.5)
                found = problems(emulator)
            settled = time.monotonic() - settle_started
            remaining = len(emulator.list_objects("routeiqgateways", NAMESPACE))
        finally:
            controller.stop.set()
            driver.stop.set()
            operator.stop()
    print()
    print(
        f"operator SIGKILLed {args.kills} times at random (0-1.5 s after it was live) over {chaos_seconds:.0f} s; "
        f"{args.gateways} gateway names, seed {args.seed}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(
        f"operations: {driver.ops['create']} creates, {driver.ops['update']} updates, "
        f"{driver.ops['delete']} deletes ({driver.ops['conflict']} refused by a conflict and retried)"
    )
    print(
        f"after the chaos: {remaining} gateways exist; converged in {settled:.1f} s (bound {args.settle:.0f} s)"
    )
    for what, items in found.items():
        print(f"{what:>17}: {len(items)}{'  ' + '; '.join(items[:5]) if items else ''}")
    verdict = not any(found.values())
    print(f"VERDICT: {'PASS' if verdict else 'FAIL'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
