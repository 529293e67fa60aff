"""Settings: parsing, errors that name the variable, unknown-variable warnings, redaction, docs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from routeiq_router.configuration import effective_configuration, render_settings_reference
from routeiq_router.settings import (
    RouteIQSettings,
    SettingsError,
    TracesSampler,
    env_name,
    load_settings,
    not_yet_acted_on,
    unknown_variable_warnings,
)

ROOT = Path(__file__).resolve().parents[1]
ROUTEIQ = str(Path(sys.executable).parent / "routeiq")


def test_defaults_without_any_variable() -> None:
    settings = load_settings({})
    assert settings.strategy == "round-robin"
    assert settings.master_key is None
    assert settings.redis_url is None
    assert settings.drain_timeout_seconds == 30
    assert settings.cb_failure_threshold == 5
    assert settings.port == 4000
    assert settings.otel_traces_sampler is TracesSampler.PARENTBASED_ALWAYS_ON


def test_reads_every_kind_of_variable() -> None:
    settings = load_settings(
        {
            "LITELLM_MASTER_KEY": "sk-abc",
            "LITELLM_CONFIG_PATH": "/etc/litellm.yaml",
            "DATABASE_URL": "postgresql://u:p@db:5432/litellm",
            "REDIS_URL": "rediss://:secret@redis:6380/0",
            "ROUTEIQ_STRATEGY": "least-busy",
            "ROUTEIQ_WORKERS": "3",
            "ROUTEIQ_AB_TESTING_ENABLED": "true",
            "ROUTEIQ_SSRF_HOST_ALLOWLIST": "models.internal, s3.local",
            "ROUTEIQ_SSRF_CIDR_ALLOWLIST": "10.0.0.0/8,fd00::/8",
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_SERVICE_NAME": "gw-eu",
        }
    )
    assert settings.master_key is not None
    assert settings.master_key.get_secret_value() == "sk-abc"
    assert settings.config_path == Path("/etc/litellm.yaml")
    assert settings.strategy == "least-busy"
    assert settings.workers == 3
    assert settings.ab_testing_enabled is True
    assert settings.ssrf_host_allowlist == ["models.internal", "s3.local"]
    assert settings.ssrf_cidr_allowlist == ["10.0.0.0/8", "fd00::/8"]
    assert settings.otel_traces_sampler is TracesSampler.TRACEIDRATIO
    assert settings.otel_traces_sampler_arg == 0.25
    assert settings.otel_service_name == "gw-eu"


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("ROUTEIQ_DRAIN_TIMEOUT_SECONDS", "-1", "greater than 0"),
        ("ROUTEIQ_DRAIN_TIMEOUT_SECONDS", "soon", "valid number"),
        ("ROUTEIQ_CB_FAILURE_THRESHOLD", "0", "greater than or equal to 1"),
        ("ROUTEIQ_RELOAD_INTERVAL", "1", "greater than or equal to 5"),
        ("ROUTEIQ_WORKERS", "0", "greater than or equal to 1"),
        ("ROUTEIQ_PORT", "70000", "less than or equal to 65535"),
        ("ROUTEIQ_HOT_RELOAD", "perhaps", "valid boolean"),
        (
            "ROUTEIQ_STRATEGY",
            "fastest",
            "valid strategies: elo, knn, least-busy, mf, mlp, round-robin, svm, weighted-random",
        ),
        ("ROUTEIQ_GATEWAY", "no-namespace", "should match pattern"),
        ("ROUTEIQ_MODEL_S3_URI", "https://bucket/key", "should match pattern"),
        ("ROUTEIQ_SSRF_CIDR_ALLOWLIST", "10.0.0.0/8,not-a-cidr", "'not-a-cidr' is not a CIDR"),
        ("REDIS_URL", "http://redis:6379", "scheme must be redis://"),
        ("DATABASE_URL", "mysql://db/x", "scheme must be postgresql://"),
        ("LITELLM_MASTER_KEY", "admin", "must start with 'sk-'"),
        ("OTEL_TRACES_SAMPLER", "sometimes", "always_on"),
        ("OTEL_TRACES_SAMPLER_ARG", "2", "less than or equal to 1"),
    ],
)
def test_invalid_value_names_the_variable_and_the_problem(variable: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    message = str(caught.value)
    line = next(line for line in message.splitlines() if variable in line)
    assert line.strip().startswith(f"{variable}:")
    assert problem in line


def test_every_invalid_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"ROUTEIQ_PORT": "x", "ROUTEIQ_WORKERS": "-2"})
    assert "ROUTEIQ_PORT:" in str(caught.value)
    assert "ROUTEIQ_WORKERS:" in str(caught.value)


def test_secret_values_never_appear_in_errors() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"LITELLM_MASTER_KEY": "hunter2-very-secret"})
    assert "hunter2" not in str(caught.value)


def test_unknown_routeiq_variable_names_the_closest_known_one() -> None:
    warnings = unknown_variable_warnings(
        {"ROUTEIQ_STRATEGIE": "knn", "ROUTEIQ_STRATEGY": "knn", "PATH": "/bin"}
    )
    assert warnings == ["unknown variable ROUTEIQ_STRATEGIE is ignored; did you mean ROUTEIQ_STRATEGY?"]
    assert unknown_variable_warnings({"ROUTEIQ_CB_TIMEOUT": "3"})[0].endswith(
        "did you mean ROUTEIQ_CB_TIMEOUT_SECONDS?"
    )
    assert unknown_variable_warnings({"OPENAI_API_KEY": "x", "ROUTEIQ_PORT": "1"}) == []


def test_effective_configuration_redacts_secrets_and_url_passwords() -> None:
    settings = load_settings(
        {
            "LITELLM_MASTER_KEY": "sk-topsecret",
            "DATABASE_URL": "postgresql://litellm:dbpass@db:5432/litellm",
            "REDIS_URL": "redis://:redispass@redis:6379/0",
        }
    )
    shown = dict(effective_configuration(settings))
    assert shown["LITELLM_MASTER_KEY"] == "**********"
    assert shown["DATABASE_URL"] == "postgresql://litellm:**********@db:5432/litellm"
    assert shown["REDIS_URL"] == "redis://:**********@redis:6379/0"
    text = repr(shown)
    for secret in ("topsecret", "dbpass", "redispass"):
        assert secret not in text
    assert set(shown) == {env_name(name) for name in RouteIQSettings.model_fields}


def test_routeiq_config_command_prints_redacted_configuration() -> None:
    env = {"PATH": "/usr/bin:/bin", "LITELLM_MASTER_KEY": "sk-cli-secret", "ROUTEIQ_STRATEGY": "least-busy"}
    result = subprocess.run([ROUTEIQ, "config"], env=env, capture_output=True, text=True, check=True)
    assert "sk-cli-secret" not in result.stdout
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines() if len(line.split(None, 1)) == 2)
    assert rows["ROUTEIQ_STRATEGY"] == "least-busy"
    assert rows["LITELLM_MASTER_KEY"] == "**********"


def test_routeiq_config_command_fails_naming_the_variable() -> None:
    env = {"PATH": "/usr/bin:/bin", "ROUTEIQ_CB_TIMEOUT_SECONDS": "-5", "ROUTEIQ_STRATEGIE": "x"}
    result = subprocess.run([ROUTEIQ, "config"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "ROUTEIQ_CB_TIMEOUT_SECONDS: Input should be greater than 0" in result.stderr
    assert "did you mean ROUTEIQ_STRATEGY?" in result.stderr


def test_configuration_reference_is_generated_and_current() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render_settings_reference(), (
        "docs/configuration.md is stale: run `routeiq config --reference > docs/configuration.md`"
    )


def test_configuration_reference_documents_every_variable() -> None:
    reference = render_settings_reference()
    for name in RouteIQSettings.model_fields:
        assert f"| `{env_name(name)}` |" in reference


def test_variables_whose_feature_is_not_built_yet_are_reported_when_set() -> None:
    settings = load_settings({"ROUTEIQ_POLICY_ENABLED": "true", "REDIS_URL": "redis://redis:6379/0"})
    assert not_yet_acted_on(settings) == ["ROUTEIQ_POLICY_ENABLED"]
    assert not_yet_acted_on(load_settings({"ROUTEIQ_DRAIN_TIMEOUT_SECONDS": "5"})) == []
    reference = render_settings_reference()
    reload_row = next(
        line for line in reference.splitlines() if line.startswith("| `ROUTEIQ_POLICY_ENABLED` |")
    )
    redis_row = next(line for line in reference.splitlines() if line.startswith("| `REDIS_URL` |"))
    assert "not acted on yet" in reload_row
    assert "not acted on yet" not in redis_row
