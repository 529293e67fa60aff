"""The gateway's Deployment: secure pods, health probes, its identity and strategy in the env, the
checksums that roll the pods, the LiteLLM config it mounts, its progress deadline."""

from __future__ import annotations

from routeiq_operator.gateway.children import ClusterFacts, DesiredState
from routeiq_operator.gateway.models import template_models
from tests.operator.gateway_render import build, by_kind, container, env


def test_pods_are_secure_by_default() -> None:
    state = build(tier="standard")
    pod = by_kind(state)["Deployment"]["spec"]["template"]["spec"]
    security = container(state)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert by_kind(state)["ServiceAccount"]["automountServiceAccountToken"] is False
    assert container(state)["resources"]["requests"]
    assert container(state)["resources"]["limits"]
    assert {v["name"] for v in pod["volumes"]} == {"config", "tmp"}
    assert pod["terminationGracePeriodSeconds"] == 30 + 15


def test_probes_use_the_health_endpoints_with_a_startup_budget_for_model_loading() -> None:
    probes = container(build(probes={"startup": {"failureThreshold": 60}}))
    assert probes["startupProbe"]["httpGet"]["path"] == "/_health/live"
    assert probes["startupProbe"]["periodSeconds"] * probes["startupProbe"]["failureThreshold"] == 300
    assert probes["readinessProbe"]["httpGet"]["path"] == "/_health/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/_health/live"


def test_gateway_identity_and_strategy_reach_the_pods() -> None:
    variables = env(build(routing={"strategy": "least-busy"}))
    assert variables["ROUTEIQ_GATEWAY"] == "routeiq/gw"
    assert variables["ROUTEIQ_STRATEGY"] == "least-busy"
    assert variables["LITELLM_CONFIG_PATH"] == "/app/config/config.yaml"


def test_checksums_roll_the_pods_on_config_and_secret_changes() -> None:
    def annotations(state: DesiredState) -> dict[str, str]:
        result: dict[str, str] = by_kind(state)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
        return result

    base = annotations(build())
    assert annotations(build()) == base, "the builder is deterministic"
    other_models = build(
        litellm={"modelList": [{"model_name": "x", "litellm_params": {"model": "openai/x"}}]}
    )
    assert annotations(other_models)["routeiq.io/config-checksum"] != base["routeiq.io/config-checksum"]
    rotated = build(ClusterFacts(secret_versions={"routeiq-secrets": "42"}))
    assert annotations(rotated)["routeiq.io/secrets-checksum"] != base["routeiq.io/secrets-checksum"]
    assert annotations(rotated)["routeiq.io/config-checksum"] == base["routeiq.io/config-checksum"]


def test_config_map_reference_is_mounted_instead_of_rendered() -> None:
    state = build(litellm={"configMapRef": {"name": "team-litellm", "key": "litellm.yaml"}})
    assert "ConfigMap" not in by_kind(state)
    volume = next(
        v
        for v in by_kind(state)["Deployment"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "config"
    )
    assert volume["configMap"] == {
        "name": "team-litellm",
        "items": [{"key": "litellm.yaml", "path": "config.yaml"}],
    }


def test_progress_deadline_comes_from_the_spec() -> None:
    assert by_kind(build())["Deployment"]["spec"]["progressDeadlineSeconds"] == 600
    tuned = by_kind(build(progressDeadlineSeconds=120))["Deployment"]
    assert tuned["spec"]["progressDeadlineSeconds"] == 120


def test_a_gateway_without_models_keeps_its_pod_template() -> None:
    state = build()
    template = by_kind(state)["Deployment"]["spec"]["template"]
    assert set(template["metadata"]["annotations"]) == {
        "routeiq.io/config-checksum",
        "routeiq.io/secrets-checksum",
    }
    assert {v["name"] for v in template["spec"]["volumes"]} == {"config", "tmp"}
    assert template_models(by_kind(state)["Deployment"]) == {}
