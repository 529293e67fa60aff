"""docs/quickstart.md and examples/quickstart/: the steps run against the API emulator with the real
operator, kubectl and Redis, taken from the doc's own code blocks so the doc cannot drift; every
condition reason the operator's code can set has a troubleshooting entry."""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import redis
import yaml

from routeiq_operator.artifact.verification import condition_reason
from routeiq_operator.cli import iter_documents
from routeiq_router.artifacts.manifest import ArtifactError
from tests.gateway_process import GatewayProcess, gateway_environment
from tests.k8s.emulator import KubeEmulator
from tests.operator.conftest import OperatorProcess
from tests.operator.scenarios import has_condition
from tests.ports import free_port
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "quickstart.md"
EXAMPLE = ROOT / "examples" / "quickstart"
PACKAGE = ROOT / "operator" / "routeiq_operator"
BIN = str(Path(sys.executable).parent)
NAMESPACE = "quickstart"
# the in-cluster Redis URL of step 4; here, the tests' own redis-server stands in for it
CLUSTER_REDIS_URL = "redis://redis.quickstart.svc.cluster.local:6379/0"
WAIT_SECONDS = 60

# --- the reasons the operator can set, read from its source -------------------------------------

REASON_LIKE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
# call -> index of its positional argument that holds a condition reason
REASON_ARGUMENT = {
    "condition": 2,
    "refused_conditions": 1,
    "pending_status": 1,
    "refused_status": 2,
    "Problem": 1,
    "_Pending": 0,
    "Refused": 0,
    "SecretError": 0,
}
KINDS = {"RouteIQGateway", "RoutingExperiment", "ModelArtifact"}


def _strings(node: ast.AST) -> set[str]:
    return {
        n.value
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and REASON_LIKE.match(n.value)
    }


def _called(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def operator_reasons() -> set[str]:
    """Every reason literal in the operator package: arguments of the calls that set conditions,
    `(reason, message)` problems, variables and tables named for reasons, UPPER_CASE constants."""
    reasons: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = _called(node.func)
                index = REASON_ARGUMENT.get(name)
                if index is not None and len(node.args) > index:
                    reasons |= _strings(node.args[index])
                if name == "append" and isinstance(node.func, ast.Attribute) and node.args:
                    owner, argument = _called(node.func.value), node.args[0]
                    # (reason, message) pairs collected for a condition, e.g. problems, monitoring
                    if isinstance(argument, ast.Tuple) and len(argument.elts) == 2:
                        reasons |= _strings(argument.elts[0])
                    elif owner.endswith("reasons") and isinstance(argument, ast.Constant):
                        reasons |= _strings(argument)
            elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if any("reason" in name.lower() for name in names):
                    values = node.value.values if isinstance(node.value, ast.Dict) else [node.value]
                    reasons |= {s for value in values if value is not None for s in _strings(value)}
                elif any(name.isupper() for name in names) and isinstance(node.value, ast.Constant):
                    reasons |= _strings(node.value) - KINDS
    return reasons


def artifact_reasons() -> set[str]:
    """The reasons of a refused ModelArtifact that come from the router's ArtifactError codes."""
    codes = {"invalid", ""}  # ArtifactError's default code; an empty one
    for path in sorted((ROOT / "router" / "routeiq_router").rglob("*.py")):
        codes |= set(re.findall(r'reason="([a-z_]+)"', path.read_text(encoding="utf-8")))
    codes.discard("fetch")
    reasons = {condition_reason(ArtifactError("checked", code)) for code in codes}
    reasons.add(condition_reason(ArtifactError("no such object", "fetch")))
    reasons.add(condition_reason(ArtifactError("connection refused", "fetch")))
    return reasons


def documented_reasons() -> set[str]:
    troubleshooting = DOC.read_text(encoding="utf-8").split("\n## Troubleshooting\n", 1)[1]
    return set(re.findall(r"^#### `([A-Za-z0-9]+)`$", troubleshooting, flags=re.MULTILINE))


def test_the_reason_scan_finds_reasons_of_every_kind() -> None:
    reasons = operator_reasons() | artifact_reasons()
    # one of each way a reason is written: condition(), (reason, message) problems, constants,
    # experiment admission, artifact refusals, a table of codes, a derived code, an if-expression
    assert {
        "GatewayReady",
        "ModelKeyReserved",
        "ImageCannotServeStrategy",
        "ImageNotAllowed",
        "RedisNotConfigured",
        "PvcVerificationNotImplemented",
        "SsrfRefused",
        "Embedder",
        "SourceNotFound",
        "CandidateWorse",
        "ProgressDeadlineExceeded",
    } <= reasons
    assert not reasons & (KINDS | {"Ready", "Degraded", "Progressing", "ResolvedRefs", "ModelsResolved"})


def test_every_condition_reason_has_a_troubleshooting_entry() -> None:
    reasons = operator_reasons() | artifact_reasons()
    documented = documented_reasons()
    assert sorted(reasons - documented) == [], (
        "reasons without an entry in docs/quickstart.md#troubleshooting"
    )
    assert sorted(documented - reasons) == [], "entries for reasons the operator no longer sets"


def test_every_troubleshooting_entry_says_how_to_fix_it() -> None:
    troubleshooting = DOC.read_text(encoding="utf-8").split("\n## Troubleshooting\n", 1)[1]
    entries = re.split(r"^#### ", troubleshooting, flags=re.MULTILINE)[1:]
    assert len(entries) == len(documented_reasons())
    for entry in entries:
        name = entry.split("\n", 1)[0]
        if "Nothing to fix" in entry:  # a healthy reason
            continue
        assert "Fix:" in entry, name
        assert re.search(r"Confirm:[^`]*`kubectl ", entry, flags=re.DOTALL), name


# --- the manifests -------------------------------------------------------------------------------


def test_quickstart_needs_only_the_operator_and_one_secret() -> None:
    documents = [doc for _, _, doc in iter_documents([EXAMPLE])]
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["Deployment", "RouteIQGateway", "RoutingExperiment", "Service"]
    for document in documents:
        assert document["metadata"]["namespace"] == NAMESPACE
        if document["apiVersion"].startswith("routeiq.io/"):
            continue
        kubernetes_validate.validate(document, "1.33", strict=True)
    gateway = next(d for d in documents if d["kind"] == "RouteIQGateway")
    assert "image" not in gateway["spec"]  # the operator's images, loaded into kind
    assert "externalSecret" not in gateway["spec"]["secrets"]
    assert {ref["name"] for ref in gateway["spec"]["secrets"].values()} == {"routeiq-quickstart"}
    assert all("mock_response" in m["litellm_params"] for m in gateway["spec"]["litellm"]["modelList"])


# --- the steps, from the doc's code blocks -------------------------------------------------------


def _sections() -> dict[str, str]:
    parts = re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {part.split("\n", 1)[0]: part for part in parts[1:]}


def _commands(section: str) -> Iterator[str]:
    """The shell commands of the section's bash blocks, continuation lines joined."""
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        yield from (c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip())


def _runnable(command: str) -> bool:
    """What can run against the emulator: kubectl and exports, not watches or port-forwards."""
    return command.startswith(("kubectl ", "export ")) and not any(
        part in command for part in ("--watch", "port-forward")
    )


def quickstart_commands() -> list[str]:
    sections = _sections()
    steps = [title for title in sections if title.startswith(("4.", "6."))]
    assert len(steps) == 2, sorted(sections)
    return [c for title in steps for c in _commands(sections[title]) if _runnable(c)]


def _for_the_emulator(command: str, redis_url: str) -> str:
    # the emulator serves no OpenAPI document, so kubectl cannot validate client-side
    command = command.replace("kubectl apply ", "kubectl apply --validate=false ")
    return command.replace(CLUSTER_REDIS_URL, redis_url)


def _run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS + 60,
    )
    assert result.returncode == 0, f"{script}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def _mark_deployments_ready(emulator: KubeEmulator) -> None:
    """What the Deployment controller reports once the pods are ready (the emulator runs none)."""
    for deployment in emulator.list_objects("deployments", NAMESPACE):
        replicas = deployment["spec"].get("replicas", 1)
        emulator.patch_status(
            "deployments",
            deployment["metadata"]["name"],
            {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
            },
            NAMESPACE,
        )


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return next(
        (c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == kind), None
    )


@pytest.mark.slow
def test_quickstart_steps_run_as_written(tmp_path: Path, redis_server: RedisServer) -> None:
    commands = quickstart_commands()
    # the steps the doc promises, in its order
    assert any(c.startswith("kubectl create namespace") for c in commands)
    assert any("create secret generic routeiq-quickstart" in c for c in commands)
    assert any("wait --for=condition=Ready routeiqgateway/quickstart" in c for c in commands)
    assert any("wait --for=condition=Ready routingexperiment/" in c for c in commands)
    assert "`routeiq crds | kubectl apply -f -`" in DOC.read_text(encoding="utf-8")
    with KubeEmulator() as emulator:
        kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}
        # the CRDs as the doc installs them without the chart
        _run("routeiq crds | kubectl apply --validate=false -f -", env)
        operator = OperatorProcess(kubeconfig, tmp_path / "operator.log")
        try:
            # the exports of a step hold for the commands after them, as in the reader's shell
            done: list[str] = []
            for command in commands:
                if " wait " in command and "routeiqgateway/" in command:
                    emulator.wait_for(
                        "deployments",
                        "quickstart-gateway",
                        NAMESPACE,
                        condition=lambda d: d is not None,
                        timeout=WAIT_SECONDS,
                    )
                    _mark_deployments_ready(emulator)
                _run("\n".join([*done, _for_the_emulator(command, redis_server.url)]), env)
                if command.startswith("export "):
                    done.append(command)
            # the troubleshooting section's first look at the conditions
            look = next(
                c
                for c in _commands(_sections()["Troubleshooting"])
                if c.startswith("kubectl -n quickstart get routeiqgateway quickstart -o jsonpath=")
            )
            shown = _run(look, env).stdout.splitlines()
            assert "Ready=True GatewayReady: 1/1 replicas ready" in shown
            assert "ResolvedRefs=True SecretsFound: every referenced Secret exists" in shown
            gateway = emulator.get_object("routeiqgateways", "quickstart", NAMESPACE)
            assert has_condition("Ready", "True", "GatewayReady")(gateway)
            assert has_condition("ResolvedRefs", "True", "SecretsFound")(gateway)
            assert gateway is not None
            assert gateway["status"]["endpoint"] == "http://quickstart-gateway.quickstart.svc:4000"
            for resource in (
                "serviceaccounts",
                "configmaps",
                "services",
                "horizontalpodautoscalers",
                "poddisruptionbudgets",
                "networkpolicies",
            ):
                selector = "app.kubernetes.io/instance=quickstart"
                assert emulator.list_objects(resource, NAMESPACE, label_selector=selector), resource
            experiment = emulator.get_object("routingexperiments", "round-robin-vs-least-busy", NAMESPACE)
            ready = _condition(experiment, "Ready")
            assert ready is not None
            assert (ready["status"], ready["reason"]) == ("True", "Running"), ready
            # the master key was generated in the reader's shell; it and the Redis URL never reach a
            # status, a ConfigMap or the operator's log
            secret = emulator.get_object("secrets", "routeiq-quickstart", NAMESPACE)
            assert secret is not None
            master_key = base64.b64decode(secret["data"]["master-key"]).decode()
            assert re.fullmatch(r"sk-[0-9a-f]{48}", master_key)
            for value in (master_key, redis_server.url):
                assert value not in str(gateway["status"])
                assert value not in str(experiment)
                assert value not in str(emulator.list_objects("configmaps", NAMESPACE))
                assert value not in operator.log()
        finally:
            operator.stop()
    assert not emulator.internal_errors, "\n".join(emulator.internal_errors)


def test_the_gateway_wait_command_uses_the_reason_the_doc_names() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "reason\n`WaitingForReplicas`" in text or "reason `WaitingForReplicas`" in text
    assert "`Ready` with reason `Running`" in text


def test_the_crds_command_in_the_doc_prints_what_kubectl_applies() -> None:
    result = subprocess.run([f"{BIN}/routeiq", "crds"], capture_output=True, text=True, check=True)
    assert {d["kind"] for d in yaml.safe_load_all(result.stdout)} == {"CustomResourceDefinition"}


def _helm_values(command: str) -> dict[str, Any]:
    """The values of a `helm install ... --set a.b=c` command, as Helm builds them."""
    values: dict[str, Any] = {}
    for assignment in re.findall(r"--set (\S+)", command):
        path, value = assignment.split("=", 1)
        *parents, leaf = path.split(".")
        node = values
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = int(value) if value.isdigit() else value
    return values


def test_the_helm_install_runs_the_images_the_doc_loads_into_kind() -> None:

    sections = _sections()
    step = next(text for title, text in sections.items() if title.startswith("3."))
    install = next(c for c in _commands(step) if c.startswith("helm install"))
    assert "charts/routeiq-operator" in install
    values = _helm_values(install)
    with helm_python.Chart.load(ROOT / "charts" / "routeiq-operator") as chart:
        rendered = chart.render(values, name="routeiq-operator", namespace="routeiq-system", is_install=True)
    documents = [
        d
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if isinstance(d, dict)
    ]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    # the name the troubleshooting section's `kubectl logs deployment/...` uses
    assert deployment["metadata"]["name"] == "routeiq-operator"
    assert deployment["metadata"]["namespace"] == "routeiq-system"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    # the images step 2 builds and loads (scripts/images tags and saves them as :dev)
    loaded = _commands(next(text for title, text in sections.items() if title.startswith("2.")))
    archives = [c for c in loaded if c.startswith("kind load image-archive")]
    assert [a.rsplit("/", 1)[1] for a in archives] == [
        "routeiq-gateway.tar",
        "routeiq-gateway-ml.tar",
        "routeiq-operator.tar",
    ]
    assert (container["image"], container["imagePullPolicy"]) == ("localhost/routeiq-operator:dev", "Never")
    assert env["ROUTEIQ_GATEWAY_IMAGE"] == "localhost/routeiq-gateway:dev"
    assert env["ROUTEIQ_GATEWAY_ML_IMAGE"] == "localhost/routeiq-gateway-ml:dev"
    assert deployment["spec"]["replicas"] == 1


@pytest.mark.slow
def test_the_request_steps_get_an_answer_from_the_gateway_the_operator_renders(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Step 5's curl and openai snippet, against `routeiq gateway` run with the ConfigMap and the
    environment the operator renders for examples/quickstart/gateway.yaml (as the pod gets them)."""
    rendered = subprocess.run(
        [
            f"{BIN}/routeiq",
            "render",
            "-f",
            str(EXAMPLE / "gateway.yaml"),
            "--without-external-secrets",
            "--without-service-monitors",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    children = {d["kind"]: d for d in yaml.safe_load_all(rendered.stdout)}
    config = tmp_path / "config.yaml"
    config.write_text(children["ConfigMap"]["data"]["config.yaml"], encoding="utf-8")
    container = children["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    pod_env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    master_key = "sk-" + os.urandom(24).hex()  # as step 4's `openssl rand -hex 24`
    # step 5 comes before the experiment: a Redis database of its own, without another test's split
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/11"
    with redis.Redis.from_url(redis_url) as store:
        store.flushdb()
    port = free_port()
    env = gateway_environment(
        **{
            **pod_env,
            "LITELLM_CONFIG_PATH": str(config),
            "ROUTEIQ_PORT": str(port),
            "ROUTEIQ_METRICS_PORT": "0",  # gateways side by side on this machine
            "LITELLM_MASTER_KEY": master_key,
            "REDIS_URL": redis_url,
        }
    )
    step = next(text for title, text in _sections().items() if title.startswith("5."))
    curl = next(c for c in _commands(step) if c.startswith("curl "))
    snippet = re.findall(r"```python\n(.*?)```", step, flags=re.DOTALL)
    assert len(snippet) == 1
    assert "127.0.0.1:4000" in curl
    assert "127.0.0.1:4000" in snippet[0]
    gateway = GatewayProcess([], port, tmp_path / "gateway.log", env)
    try:
        gateway.wait_ready()
        shell = {**os.environ, "MASTER_KEY": master_key}
        answer = _run(curl.replace("127.0.0.1:4000", f"127.0.0.1:{port}"), shell).stdout
        headers, _, body = answer.replace("\r\n", "\n").partition("\n\n")
        assert headers.startswith("HTTP/1.1 200")
        assert "x-routeiq-strategy: round-robin" in headers.lower()
        assert re.search(
            r"Hello from quickstart deployment [AB]\.", json.loads(body)["choices"][0]["message"]["content"]
        )
        client = subprocess.run(
            [sys.executable, "-c", snippet[0].replace("127.0.0.1:4000", f"127.0.0.1:{port}")],
            env=shell,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert client.returncode == 0, client.stderr
        assert re.fullmatch(r"Hello from quickstart deployment [AB]\.\n", client.stdout)
    finally:
        gateway.stop()
