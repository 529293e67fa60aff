"""What `routeiq gateway` checks before any worker starts, and how it fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from routeiq_router.gateway.config import GatewayConfigError, demo_config_path, load_litellm_config
from routeiq_router.gateway.server import plan_gateway
from routeiq_router.gateway.workers import available_cpus, default_workers
from routeiq_router.settings import SettingsError, load_settings
from routeiq_router.strategies import CpuProfile
from tests.gateway_process import MASTER_KEY, ROUTEIQ, gateway_environment

GOOD = """
model_list:
  - model_name: chat
    litellm_params: {model: openai/a, mock_response: hi, weight: 2}
  - model_name: chat
    litellm_params: {model: openai/b, mock_response: hi}
router_settings:
  fallbacks: [{chat: [chat]}]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_demo_config_is_valid_and_needs_no_provider_key() -> None:
    config = load_litellm_config(demo_config_path())
    assert config.model_groups == {"gpt-4o-mini", "claude-haiku"}
    assert all("mock_response" in d.litellm_params.model_extra for d in config.model_list)  # type: ignore[operator]


def test_good_config_loads(tmp_path: Path) -> None:
    config = load_litellm_config(write(tmp_path, GOOD))
    assert [d.litellm_params.weight for d in config.model_list] == [2, None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_list: [\n  - model_name: chat\n    litellm_params: {model: x", "is not valid YAML at line"),
        ("- just\n- a list\n", "must be a YAML mapping with a model_list"),
        ("general_settings: {}\n", "model_list: Field required"),
        ("model_list: []\n", "model_list: List should have at least 1 item"),
        (
            "model_list:\n  - model_name: chat\n    litellm_params: {api_key: x}\n",
            "model_list[0].litellm_params.model: Field required",
        ),
        ("model_list:\n  - litellm_params: {model: openai/a}\n", "model_list[0].model_name: Field required"),
        (
            "model_list:\n  - model_name: chat\n    litellm_params: {model: openai/a, weight: 0}\n",
            "model_list[0].litellm_params.weight: Input should be greater than 0",
        ),
        (
            "model_list:\n  - model_name: auto\n    litellm_params: {model: auto_router/complexity_router}\n",
            "model_list[0].litellm_params.model: LiteLLM's own routers (auto_router/...) cannot be combined",
        ),
        (
            GOOD.replace("fallbacks: [{chat: [chat]}]", "routing_groups: [{group_name: g, models: [chat]}]"),
            "router_settings.routing_groups: LiteLLM's routing groups cannot be combined with RouteIQ routing",
        ),
        (
            GOOD.replace("fallbacks: [{chat: [chat]}]", "fallbacks: [{chat: [gpt-5]}]"),
            "router_settings.fallbacks[0] names model group 'gpt-5', which has no deployments",
        ),
    ],
)
def test_bad_config_is_refused_with_the_field_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(GatewayConfigError) as caught:
        load_litellm_config(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_litellm_routing_strategy_is_reported_as_overridden(tmp_path: Path) -> None:
    config = load_litellm_config(
        write(tmp_path, GOOD.replace("router_settings:", "router_settings:\n  routing_strategy: least-busy"))
    )
    assert config.overridden_settings == ["router_settings.routing_strategy"]
    assert load_litellm_config(write(tmp_path, GOOD)).overridden_settings == []


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(
        GatewayConfigError, match=r"missing.yaml does not exist \(set LITELLM_CONFIG_PATH or --config\)"
    ):
        load_litellm_config(tmp_path / "missing.yaml")


def test_plan_requires_a_master_key() -> None:
    with pytest.raises(SettingsError, match="LITELLM_MASTER_KEY: required by the gateway"):
        plan_gateway(load_settings({}))


def test_plan_uses_the_demo_config_and_the_worker_table() -> None:
    plan = plan_gateway(load_settings({"LITELLM_MASTER_KEY": MASTER_KEY}))
    assert plan.config_path == demo_config_path()
    assert plan.workers == default_workers(CpuProfile.IO, available_cpus())
    assert plan.environment["CONFIG_FILE_PATH"] == str(demo_config_path().resolve())
    assert plan.environment["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


def test_command_line_overrides_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {"LITELLM_MASTER_KEY": MASTER_KEY, "ROUTEIQ_WORKERS": "4", "ROUTEIQ_PORT": "5000"}
    )
    assert plan_gateway(settings).workers == 4
    plan = plan_gateway(settings, config=write(tmp_path, GOOD), host="127.0.0.1", port=4999, workers=2)
    assert (plan.host, plan.port, plan.workers) == ("127.0.0.1", 4999, 2)
    assert plan.config_path == tmp_path / "config.yaml"


@pytest.mark.parametrize(
    ("profile", "cpus", "workers"),
    [
        (CpuProfile.IO, 2, 5),
        (CpuProfile.LIGHT, 2, 3),
        (CpuProfile.MODERATE, 4, 4),
        (CpuProfile.HEAVY, 4, 2),
        (CpuProfile.HEAVY, 1, 1),
    ],
)
def test_default_workers_follow_the_design_table(profile: CpuProfile, cpus: int, workers: int) -> None:
    assert default_workers(profile, cpus) == workers


def test_available_cpus_honours_a_cgroup_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == min(len(os.sched_getaffinity(0)), 2)  # ceil(1.5 CPUs)
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) >= 1


@pytest.mark.parametrize(
    ("env", "config", "message"),
    [
        ({"LITELLM_MASTER_KEY": ""}, GOOD, "LITELLM_MASTER_KEY: must start with 'sk-'"),
        ({"ROUTEIQ_STRATEGY": "fastest"}, GOOD, "ROUTEIQ_STRATEGY: unknown routing strategy 'fastest'"),
        ({}, "model_list: [", "is not valid YAML"),
        (
            {},
            "model_list:\n  - model_name: chat\n    litellm_params: {}\n",
            "litellm_params.model: Field required",
        ),
    ],
)
def test_gateway_command_exits_non_zero_naming_the_cause(
    tmp_path: Path, env: dict[str, str], config: str, message: str
) -> None:
    path = write(tmp_path, config)
    result = subprocess.run(
        [ROUTEIQ, "gateway", "--config", str(path), "--port", "1"],
        env=gateway_environment(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_gateway_command_without_master_key(tmp_path: Path) -> None:
    env = gateway_environment()
    del env["LITELLM_MASTER_KEY"]
    result = subprocess.run(
        [ROUTEIQ, "gateway", "--config", str(write(tmp_path, GOOD))], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "LITELLM_MASTER_KEY: required by the gateway" in result.stderr


def test_plan_warns_about_settings_it_does_not_act_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write(
        tmp_path,
        GOOD.replace(
            "router_settings:", "router_settings:\n  routing_strategy: least-busy\n  cooldown_time: 5"
        ),
    )
    settings = load_settings({"LITELLM_MASTER_KEY": MASTER_KEY, "ROUTEIQ_POLICY_ENABLED": "true"})
    with caplog.at_level("WARNING", logger="routeiq.gateway"):
        plan_gateway(settings, config=config)
    messages = [record.getMessage() for record in caplog.records]
    assert "ROUTEIQ_POLICY_ENABLED is set, but this RouteIQ version does not act on it yet" in messages
    assert any("router_settings.routing_strategy" in m and "has no effect" in m for m in messages)
    assert any("router_settings.cooldown_time" in m and "ROUTEIQ_CB_ENABLED=false" in m for m in messages)
    caplog.clear()
    without_breakers = load_settings({"LITELLM_MASTER_KEY": MASTER_KEY, "ROUTEIQ_CB_ENABLED": "false"})
    with caplog.at_level("WARNING", logger="routeiq.gateway"):
        plan_gateway(without_breakers, config=config)
    assert not any("cooldown_time" in record.getMessage() for record in caplog.records)
