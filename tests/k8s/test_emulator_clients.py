"""Real clients against the emulator: the official client's kubeconfig, kubectl (protobuf too), kopf."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
import kopf._core.intents.registries
import kubernetes.client  # type: ignore[import-untyped,unused-ignore]
import kubernetes.config  # type: ignore[import-untyped,unused-ignore]
import yaml
from kopf.testing import KopfRunner

from tests.k8s.emulator import KubeEmulator
from tests.k8s.samples import GROUP, NS, WIDGET_CRD, widget


def test_kubeconfig_loads_in_the_official_client(k8s_kubeconfig: Path) -> None:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(k8s_kubeconfig), client_configuration=configuration)
    with kubernetes.client.ApiClient(configuration) as client:
        names = {n.metadata.name for n in kubernetes.client.CoreV1Api(client).list_namespace().items}
    assert "default" in names


def test_kubectl_applies_a_crd_and_gets_by_short_name(kubectl: Callable[..., str], tmp_path: Path) -> None:
    (tmp_path / "crd.yaml").write_text(yaml.safe_dump(WIDGET_CRD))
    assert "created" in kubectl("apply", "--validate=false", "-f", str(tmp_path / "crd.yaml"))
    assert "created" in kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(widget("w1")))
    table = kubectl("get", "wdg")
    assert table.split()[:2] == ["NAME", "AGE"]
    assert "w1" in table.split()
    fetched = json.loads(kubectl("get", "wdg", "w1", "-o", "json"))
    assert fetched["spec"]["mode"] == "cheap"
    assert "unchanged" in kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(widget("w1")))
    assert "deleted" in kubectl("delete", "wdg", "w1")
    assert kubectl("get", "wdg", "-o", "name") == ""


def test_kubectl_typed_generators_send_protobuf_the_emulator_decodes(
    k8s_emulator: KubeEmulator, kubectl: Callable[..., str]
) -> None:
    kubectl("create", "namespace", "team")
    kubectl("create", "configmap", "settings", "-n", "team", "--from-literal=a=b", "--from-literal=empty=")
    kubectl("create", "secret", "generic", "keys", "-n", "team", "--from-literal=k=v")
    kubectl("create", "serviceaccount", "robot", "-n", "team")
    assert k8s_emulator.get_object("namespaces", "team") is not None
    settings = k8s_emulator.get_object("configmaps", "settings", "team")
    assert settings is not None
    assert settings["data"] == {"a": "b", "empty": ""}
    keys = k8s_emulator.get_object("secrets", "keys", "team")
    assert keys is not None
    assert keys["data"] == {"k": "dg=="}  # base64 of "v"
    assert k8s_emulator.get_object("serviceaccounts", "robot", "team") is not None
    refused = kubectl("create", "deployment", "web", "--image=busybox", check=False)
    assert "cannot decode protobuf for apps/v1 Deployment" in refused


def test_kopf_operator_runs_against_the_emulator(k8s_emulator: KubeEmulator, api: Any) -> None:
    kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(WIDGET_CRD)
    registry = kopf._core.intents.registries.SmartOperatorRegistry()
    deleted = threading.Event()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=k8s_emulator.server_url, insecure=True, default_namespace=NS)

    @kopf.on.create(GROUP, "v1", "widgets", registry=registry)
    def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Ready"
        kopf.info(body, reason="Configured", message="the widget is ready")  # a core/v1 Event, validated

    @kopf.on.delete(GROUP, "v1", "widgets", registry=registry)
    def removed(**_: Any) -> None:
        deleted.set()

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    with KopfRunner(
        ["run", "--standalone", "--all-namespaces"], registry=registry, settings=settings, timeout=30
    ) as runner:
        k8s_emulator.create_object("widgets", widget("w1"), NS)
        ready = k8s_emulator.wait_for(
            "widgets",
            "w1",
            NS,
            condition=lambda w: bool(w and w.get("status", {}).get("phase") == "Ready"),
            timeout=20,
        )
        assert ready is not None
        assert "kopf.zalando.org/KopfFinalizerMarker" in ready["metadata"]["finalizers"]
        deadline = time.monotonic() + 10
        while not k8s_emulator.list_objects("events", NS) and time.monotonic() < deadline:
            time.sleep(0.05)  # kopf posts its events in the background
        events = k8s_emulator.list_objects("events", NS)
        assert any(e["involvedObject"]["name"] == "w1" and e["reason"] == "Configured" for e in events), (
            events
        )
        k8s_emulator.delete_object("widgets", "w1", NS)
        k8s_emulator.wait_for("widgets", "w1", NS, condition=lambda w: w is None, timeout=20)
    assert runner.exception is None
    assert runner.exit_code == 0
    assert deleted.is_set()
    invalid = [str(r) for r in k8s_emulator.request_log if r.status in (400, 415, 422, 500)]
    assert not invalid, invalid
    assert "inconsistencies" not in runner.output  # what kopf logs when a patch is not applied as sent
    assert "[ERROR" not in runner.output


def test_kopf_run_subprocess_logs_in_with_the_kubeconfig(
    k8s_emulator: KubeEmulator, k8s_kubeconfig: Path, tmp_path: Path
) -> None:
    k8s_emulator.create_object("customresourcedefinitions", WIDGET_CRD)
    handlers = tmp_path / "handlers.py"
    handlers.write_text(
        "import kopf\n"
        f"@kopf.on.create({GROUP!r}, 'v1', 'widgets')\n"
        "def created(patch, **_):\n"
        "    patch.status['phase'] = 'Ready'\n"
    )
    env = {**os.environ, "KUBECONFIG": str(k8s_kubeconfig)}  # kopf's default login reads it
    command = [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", str(handlers)]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as kopf_run:
        try:
            k8s_emulator.create_object("widgets", widget("w1"), NS)
            k8s_emulator.wait_for(
                "widgets",
                "w1",
                NS,
                condition=lambda w: bool(w and w.get("status", {}).get("phase")),
                timeout=30,
            )
        finally:
            kopf_run.send_signal(signal.SIGINT)
            output, _ = kopf_run.communicate(timeout=30)
    assert kopf_run.returncode == 0, output
    assert "Activity 'login_via_client' succeeded" in output
