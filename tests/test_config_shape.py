"""LiteLLM's config shape: generated from LiteLLM on the router side, shipped with the operator,
and checked offline by `routeiq validate`/`render` and the operator, as strictly as the pod."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.litellm_checks import shape_problems
from routeiq_operator.schema import custom_resource_definition
from routeiq_operator.validation import InvalidSpec, load, validate_custom_resource
from routeiq_router.gateway.config import load_litellm_config
from routeiq_router.gateway.config_schema import SHAPE_FILE, config_shape_text
from tests.operator.scenarios import gateway

ROOT = Path(__file__).resolve().parents[1]
ROUTEIQ = str(Path(sys.executable).with_name("routeiq"))


def test_the_shipped_shape_is_generated_and_current() -> None:
    shipped = resources.files("routeiq_operator.gateway").joinpath(SHAPE_FILE).read_text("utf-8")
    assert shipped == config_shape_text(), (
        f"operator/routeiq_operator/gateway/{SHAPE_FILE} is stale: run "
        f"`python -m routeiq_router.gateway.config_schema operator/routeiq_operator/gateway/{SHAPE_FILE}`"
    )


def _typo() -> dict[str, Any]:
    obj = gateway("typo", "default")
    obj["spec"]["litellm"]["modelList"][0] = {
        "model_name": "chat",
        "litellm_parms": {"model": "openai/gpt-4o"},
    }
    return obj


def test_the_pod_refuses_the_typo_and_so_does_validate(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": _typo()["spec"]["litellm"]["modelList"]}))
    with pytest.raises(ValueError, match="litellm_params"):
        load_litellm_config(config)  # what the pod does: it would crash-loop
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_typo()))
    done = subprocess.run(
        [ROUTEIQ, "validate", "-f", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1
    assert (
        "spec.litellm.modelList[0].litellm_parms: unknown key (LiteLLM has no such setting); "
        "did you mean litellm_params?"
    ) in done.stdout
    assert "spec.litellm.modelList[0].litellm_params: required by LiteLLM" in done.stdout


def test_admission_refuses_the_typo() -> None:
    violations = validate_custom_resource(_typo(), custom_resource_definition(RouteIQGateway))
    assert any("every modelList entry needs model_name and litellm_params" in v.message for v in violations)


def test_the_operator_refuses_the_typo() -> None:
    with pytest.raises(InvalidSpec, match=r"litellm_parms: unknown key .*did you mean litellm_params\?"):
        load(RouteIQGateway, _typo())


def test_router_settings_keys_are_strict_and_litellm_params_typos_are_caught() -> None:
    problems = dict(
        shape_problems(
            [
                {
                    "model_name": "chat",
                    "litellm_params": {
                        "model": "m",
                        "api_bse": "https://x",
                        "vertex_project": "p",
                        "my_arg": 1,
                    },
                    "model_info": {"id": "a"},
                }
            ],
            {"num_retrys": 2, "num_retries": 2, "routing_strategy": "simple-shuffle"},
        )
    )
    assert problems == {
        "modelList[0].litellm_params.api_bse": "unknown key (LiteLLM has no such setting); did you mean api_base? "
        "(provider arguments pass through, this one looks like a typo)",
        "routerSettings.num_retrys": "unknown key (LiteLLM has no such setting); did you mean num_retries?",
    }


def test_entries_need_a_model() -> None:
    problems = dict(shape_problems([{"model_name": "", "litellm_params": {}}], None))
    assert problems == {
        "modelList[0].litellm_params.model": "required by LiteLLM",
        "modelList[0].model_name": "must be a non-empty string",
    }


@pytest.mark.parametrize("config", ["examples/tier1/config.yaml", "examples/tier2/config.yaml"])
def test_shipped_litellm_configs_have_the_shape(config: str) -> None:
    document = yaml.safe_load((ROOT / config).read_text())
    assert list(shape_problems(document["model_list"], document.get("router_settings"))) == []


def test_every_shipped_gateway_validates() -> None:
    done = subprocess.run(
        [ROUTEIQ, "validate", "-f", str(ROOT / "examples")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
