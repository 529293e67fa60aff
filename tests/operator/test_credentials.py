"""No credential value in a ConfigMap, a status, an Event, a log line or `routeiq validate` output.

Every kind of literal credential is refused (by `load`, `routeiq validate`/`render`, and the
operator for an object that bypassed admission), and the refusal names the path and the rule:
the secret string appears in none of the outputs.
"""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from routeiq_operator.artifact.api import ModelArtifact
from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.litellm_checks import has_url_password, is_credential_key
from routeiq_operator.logs import OperatorJsonFormatter, RedactingFilter, redact
from routeiq_operator.validation import InvalidSpec, load
from tests.k8s.emulator import ApiError, KubeEmulator
from tests.operator.conftest import OperatorProcess
from tests.operator.scenarios import gateway, has_condition, wait

ROUTEIQ = str(Path(sys.executable).with_name("routeiq"))
SECRET = "SUPERSECRET"  # every secret value below contains it


def _with(spec_path: str, value: Any, name: str = "gw", namespace: str = "default") -> dict[str, Any]:
    """A valid gateway with the value at spec_path (dots; [i] for list items) replaced."""
    obj = gateway(name, namespace)
    node: Any = obj["spec"]
    parts = spec_path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    node[parts[-1]] = value
    return obj


PARAMS = "litellm.modelList[0].litellm_params"
# (case, the spec path written, the value, the path the refusal must name)
CASES = [
    ("master-key", "secrets.masterKey", f"sk-{SECRET}-1", "spec.secrets.masterKey"),
    (
        "azure-password",
        f"{PARAMS}.azure_password",
        f"{SECRET}-2",
        "modelList[0].litellm_params.azure_password",
    ),
    (
        "vertex-credentials",
        f"{PARAMS}.vertex_credentials",
        f'{{"type": "service_account", "private_key": "{SECRET}-3"}}',  # LiteLLM takes the JSON as a string
        "modelList[0].litellm_params.vertex_credentials",
    ),
    (
        "aws-key-id",
        f"{PARAMS}.aws_access_key_id",
        f"AKIA{SECRET}4",
        "modelList[0].litellm_params.aws_access_key_id",
    ),
    (
        "aws-secret",
        f"{PARAMS}.aws_secret_access_key",
        f"{SECRET}-5",
        "modelList[0].litellm_params.aws_secret_access_key",
    ),
    (
        "api-base-password",
        f"{PARAMS}.api_base",
        f"https://me:{SECRET}-6@llm.example.com/v1",
        "litellm_params.api_base",
    ),
    (
        "redis-password",
        "litellm.routerSettings.redis_password",
        f"{SECRET}-7",
        "routerSettings.redis_password",
    ),
    (
        "redis-url",
        "litellm.routerSettings.redis_url",
        f"redis://:{SECRET}-8@redis:6379",
        "routerSettings.redis_url",
    ),
    ("api-key", f"{PARAMS}.api_key", f"sk-{SECRET}-9", "modelList[0].litellm_params.api_key"),
    (
        "nested",
        f"{PARAMS}.extra_body",
        {"auth": {"client_secret": f"{SECRET}-10"}},
        "litellm_params.extra_body.auth.client_secret",
    ),
]


@pytest.mark.parametrize(("case", "where", "value", "path"), CASES, ids=[c[0] for c in CASES])
def test_load_refuses_each_literal_credential_naming_path_and_rule_not_value(
    case: str, where: str, value: Any, path: str
) -> None:
    with pytest.raises(InvalidSpec) as refused:
        load(RouteIQGateway, _with(where, value))
    message = refused.value.message
    assert path in message, message
    assert SECRET not in message
    assert SECRET not in str(refused.value)
    if case != "master-key":
        assert "os.environ/<VARIABLE>" in message


def test_a_credential_written_as_a_mapping_is_refused() -> None:
    value = {"type": "service_account", "private_key": f"{SECRET}-11"}
    with pytest.raises(InvalidSpec) as refused:
        load(RouteIQGateway, _with(f"{PARAMS}.vertex_credentials", value))
    assert "modelList[0].litellm_params.vertex_credentials: a literal credential" in refused.value.message
    assert SECRET not in refused.value.message


def test_endpoints_outside_the_litellm_settings_hold_no_password() -> None:
    """The OTLP endpoint lands in the pod spec, an artifact's S3 endpoint in its status: neither
    may carry userinfo (the pattern refuses it, and the message quotes the pattern, not the value)."""
    with pytest.raises(InvalidSpec) as refused:
        load(
            RouteIQGateway,
            _with("observability.openTelemetry.endpoint", f"http://otel:{SECRET}@collector:4318"),
        )
    assert "spec.observability.openTelemetry.endpoint: must match the pattern" in refused.value.message
    assert SECRET not in str(refused.value)
    artifact = {
        "apiVersion": "routeiq.io/v1alpha1",
        "kind": "ModelArtifact",
        "metadata": {"name": "model", "namespace": "default"},
        "spec": {
            "strategy": "knn",
            "source": {
                "uri": "s3://models/knn/",
                "s3": {"endpointUrl": f"https://minio:{SECRET}@minio:9000"},
            },
        },
    }
    with pytest.raises(InvalidSpec) as refused:
        load(ModelArtifact, artifact)
    assert "endpointUrl: must match the pattern" in refused.value.message, refused.value.message
    assert SECRET not in str(refused.value)
    load(RouteIQGateway, _with("observability.openTelemetry.endpoint", "http://collector.monitoring:4318/v1"))


def test_references_and_plain_settings_are_accepted() -> None:
    obj = _with(f"{PARAMS}.azure_password", "os.environ/AZURE_PASSWORD")
    params = obj["spec"]["litellm"]["modelList"][0]["litellm_params"]
    params.update(
        api_base="https://llm.example.com/v1",
        vertex_credentials="os.environ/VERTEX_CREDENTIALS",
        max_tokens=100,
        input_cost_per_token=0.1,
        vertex_project="p",  # a provider argument LiteLLM passes through
    )
    obj["spec"]["litellm"]["routerSettings"] = {
        "redis_password": "os.environ/REDIS_PASSWORD",
        "redis_url": "redis://redis:6379",
        "num_retries": 2,
    }
    load(RouteIQGateway, obj)


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "azure_password",
        "vertex_credentials",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "client_secret",
        "redis_password",
        "azure_ad_token",
        "langfuse_secret_key",
        "my_service_key",
        "someApiKey",
        "db_passwd",
        "credentials",
        "access_token",
    ],
)
def test_credential_keys(key: str) -> None:
    assert is_credential_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "model",
        "api_base",
        "max_tokens",
        "input_cost_per_token",
        "output_cost_per_reasoning_token",
        "cache_key",
        "prompt_cache_key",
        "litellm_credential_name",
        "anthropic_identity_token_file",
        "client_id",
        "bos_token",
        "azure_ad_token_provider",
        "vertex_project",
    ],
)
def test_plain_keys(key: str) -> None:
    assert not is_credential_key(key)


def test_url_passwords() -> None:
    assert has_url_password("https://user:pw@host/x")
    assert has_url_password("redis://:pw@redis:6379/0")
    assert not has_url_password("https://user@host/x")
    assert not has_url_password("https://host/a:b@c")
    assert not has_url_password("os.environ/REDIS_URL")


def test_routeiq_validate_and_render_print_no_value(tmp_path: Path) -> None:
    documents = [_with(where, value, name=case) for case, where, value, _ in CASES]
    path = tmp_path / "gateways.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    validated = subprocess.run(
        [ROUTEIQ, "validate", "-f", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert validated.returncode == 1
    output = validated.stdout + validated.stderr
    assert f"{len(CASES)} RouteIQ resource(s) checked, {len(CASES)} invalid" in output
    for case, _, _, where in CASES:
        assert any(f"RouteIQGateway/{case}:" in line and where in line for line in output.splitlines()), case
    assert SECRET not in output
    for document in documents:
        single = tmp_path / f"{document['metadata']['name']}.yaml"
        single.write_text(yaml.safe_dump(document))
        rendered = subprocess.run(
            [ROUTEIQ, "render", "-f", str(single)], capture_output=True, text=True, timeout=120, check=False
        )
        assert rendered.returncode == 1, document["metadata"]["name"]
        assert SECRET not in rendered.stdout + rendered.stderr


def test_yaml_errors_name_the_place_not_the_text(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        f"apiVersion: routeiq.io/v1alpha1\nkind: RouteIQGateway\nspec:\n  api_key: sk-{SECRET}: x\n"
    )
    for command in ("validate", "render"):
        done = subprocess.run(
            [ROUTEIQ, command, "-f", str(path)], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 2
        assert f"{path} is not valid YAML at line 4" in done.stderr
        assert SECRET not in done.stdout + done.stderr


def test_log_lines_lose_url_passwords() -> None:
    assert (
        redact("connecting to redis://user:hunter2@redis:6379/0")
        == "connecting to redis://user:***@redis:6379/0"
    )
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "bad https://u:%s@h", (SECRET,), None)
    assert SECRET not in OperatorJsonFormatter().format(record)


def test_values_the_api_server_quotes_are_masked_before_kopf_posts_an_event() -> None:
    # an API error as kube.py raises it: the JSON body of a 422 quoting the refused value
    body = f'{{"message": "spec.litellm: Invalid value: \\"sk-{SECRET}\\": must match"}}'
    record = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, "failed: %s", (body,), None)
    assert RedactingFilter().filter(record)
    assert SECRET not in record.getMessage()
    assert 'Invalid value: \\"***\\"' in record.getMessage()
    assert redact(f'Invalid value: "{SECRET}": x') == 'Invalid value: "***": x'


# admission checks the keys LiteLLM names and the URL keys; a nested key is the operator's rule
ADMITTED_BY_CEL = {"nested"}


@pytest.mark.parametrize(("case", "where", "value", "path"), CASES, ids=[c[0] for c in CASES])
def test_admission_refuses_each_kind_it_can_name(
    emulator: KubeEmulator, namespace: str, case: str, where: str, value: Any, path: str
) -> None:
    obj = _with(where, value, name=case, namespace=namespace)
    if case in ADMITTED_BY_CEL:
        emulator.create_object("routeiqgateways", obj)
        return
    with pytest.raises(ApiError) as refused:
        emulator.create_object("routeiqgateways", obj)
    assert "os.environ/<VARIABLE>" in str(refused.value) or "masterKey" in str(refused.value), refused.value


# -- the operator, for objects that bypassed admission (stale CRDs, a direct write) ----------------


def _lax(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD with a spec that admits anything: an object stored before today's rules existed."""
    lax = copy.deepcopy(crd)
    for version in lax["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        schema["properties"]["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        schema.pop("x-kubernetes-validations", None)
    return lax


@pytest.mark.slow
def test_the_operator_reports_refusals_without_values(
    emulator: KubeEmulator, operator_process: OperatorProcess, namespace: str
) -> None:
    name = "routeiqgateways.routeiq.io"
    crd = emulator.get_object("customresourcedefinitions", name)
    assert crd is not None
    emulator.replace_object("customresourcedefinitions", name, _lax(crd))
    try:
        for case, where, value, _ in CASES:
            emulator.create_object("routeiqgateways", _with(where, value, name=case, namespace=namespace))
    finally:
        restored = emulator.get_object("customresourcedefinitions", name)
        assert restored is not None
        crd["metadata"]["resourceVersion"] = restored["metadata"]["resourceVersion"]
        emulator.replace_object("customresourcedefinitions", name, crd)
    for case, _, _, path in CASES:
        invalid = wait(
            emulator, "routeiqgateways", case, namespace, has_condition("Ready", "False", "InvalidSpec")
        )
        assert invalid is not None
        messages = " ".join(item["message"] for item in invalid["status"]["conditions"])
        assert path in messages, (case, messages)
        assert SECRET not in yaml.safe_dump(invalid["status"]), case
        assert (
            emulator.list_objects(
                "configmaps", namespace, label_selector=f"app.kubernetes.io/instance={case}"
            )
            == []
        )
    log = operator_process.log()
    assert "invalid spec, nothing applied" in log
    assert SECRET not in log
    events = emulator.list_objects("events", namespace)
    assert SECRET not in yaml.safe_dump(events)
    for configmap in emulator.list_objects("configmaps", namespace):
        assert SECRET not in yaml.safe_dump(configmap)
