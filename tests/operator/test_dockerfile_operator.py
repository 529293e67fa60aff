"""The operator image (Dockerfile.operator), tested without a container engine.

The approach and the helpers are tests/test_dockerfile.py's: hadolint, the Dockerfile read as
Docker reads it, the builder's wheel-build and install commands run offline with this venv
standing in for /opt/venv, and the HEALTHCHECK run against a stand-in server. The builder is the
gateway's with another extra, and a test keeps it that way.
"""

from __future__ import annotations

import shlex
import shutil
from importlib import metadata
from pathlib import Path

import pytest

from tests.test_dockerfile import (
    VENV_BIN,
    Stage,
    _HealthServer,
    docker_ignores,
    env_of,
    exec_form,
    hadolint,
    healthcheck_command,
    parse_stages,
    run_check,
    venv_env,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile.operator"
GATEWAY_DOCKERFILE = ROOT / "Dockerfile.gateway"
LIVENESS_PORT = 8080  # the default of `routeiq operator --liveness-port`


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    parsed = parse_stages(DOCKERFILE.read_text(encoding="utf-8"))
    assert list(parsed) == ["builder", "runtime"], f"expected stages builder and runtime, got {list(parsed)}"
    return parsed


@pytest.fixture(scope="module")
def gateway_stages() -> dict[str, Stage]:
    return parse_stages(GATEWAY_DOCKERFILE.read_text(encoding="utf-8"))


def test_hadolint_reports_nothing_on_the_operator_dockerfile(tmp_path: Path) -> None:
    findings = hadolint(DOCKERFILE, tmp_path)
    report = "\n".join(f"line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert findings == [], f"hadolint findings on Dockerfile.operator:\n{report}"


def test_same_pinned_base_as_the_gateway(stages: dict[str, Stage], gateway_stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        assert stage.base == gateway_stages["runtime"].base, f"stage {stage.name} is based on {stage.base!r}"


def test_builder_is_the_gateways_with_the_operator_extra(
    stages: dict[str, Stage], gateway_stages: dict[str, Stage]
) -> None:
    """Same pins, cache settings and checks as the reviewed gateway builder; only the extra differs,
    and the gateway's image also generates LiteLLM's Prisma client, which the operator has no use for."""
    builder, gateway = stages["builder"], gateway_stages["builder"]
    assert builder.all("RUN") == [
        run.replace('"${ROUTEIQ_EXTRAS}"', "operator") for run in gateway.all("RUN")
    ]
    assert env_of(builder) == env_of(gateway)
    assert builder.all("WORKDIR") == ["/src"]
    assert builder.all("COPY") == [
        "pyproject.toml README.md ./",
        "router/ router/",
        "operator/ operator/",
        "scripts/image-install.sh /usr/local/bin/routeiq-image-install",
    ]
    assert [a for a in builder.all("ARG") if a.startswith("WHEELHOUSE")] == ["WHEELHOUSE="]


def test_copied_sources_exist_and_are_in_the_build_context(stages: dict[str, Stage]) -> None:
    for arguments in stages["builder"].all("COPY"):
        for source in arguments.split()[:-1]:
            relative = source.strip("/")
            assert (ROOT / relative).exists(), f"COPY source {source} does not exist"
            assert not docker_ignores(relative), f".dockerignore excludes {source}, which is copied"


def test_runtime_installs_nothing_and_runs_as_a_fixed_non_root_user(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    for command in runtime.all("RUN"):
        assert "pip " not in command, f"the runtime stage must not install packages: {command}"
        assert "apt-get" not in command, f"the runtime stage must not install packages: {command}"
    assert runtime.one("USER") == "10001:10001"
    (useradd,) = [command for command in runtime.all("RUN") if "useradd" in command]
    assert "--uid 10001" in useradd
    assert "--gid 10001" in useradd
    assert runtime.all("COPY") == ["--from=builder /opt/venv /opt/venv"]
    assert runtime.one("EXPOSE") == str(LIVENESS_PORT)


def test_runtime_env_is_read_only_friendly(stages: dict[str, Stage]) -> None:
    env = env_of(stages["runtime"])
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    expected = {
        "VIRTUAL_ENV": "/opt/venv",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "ROUTEIQ_OPERATOR_LOG_LEVEL": "INFO",
    }
    assert {key: env.get(key) for key in expected} == expected
    assert not [key for key in env if key.startswith("LITELLM_")], "the operator image runs no LiteLLM"


def test_oci_labels_and_version_match_the_project(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    labels = dict(word.split("=", 1) for label in runtime.all("LABEL") for word in shlex.split(label))
    assert labels["org.opencontainers.image.title"] == "routeiq-operator"
    assert labels["org.opencontainers.image.version"] == "${ROUTEIQ_VERSION}"
    args = dict(arg.partition("=")[::2] for arg in runtime.all("ARG"))
    assert args["ROUTEIQ_VERSION"] == metadata.version("routeiq")


def test_entrypoint_is_the_operator_command_in_exec_form(stages: dict[str, Stage]) -> None:
    entrypoint = exec_form(stages["runtime"].one("ENTRYPOINT"))
    assert entrypoint == ["routeiq", "operator"]
    assert stages["runtime"].all("CMD") == [], "arguments come from the chart's args"
    assert shutil.which(entrypoint[0], path=venv_env()["PATH"]) == str(VENV_BIN / entrypoint[0])


def test_healthcheck_probes_healthz_without_curl(stages: dict[str, Stage], free_port: int) -> None:
    command = healthcheck_command(stages["runtime"].one("HEALTHCHECK"))
    assert command[0] == "python"
    assert "curl" not in command
    script = command[-1]
    address = f"http://127.0.0.1:{LIVENESS_PORT}/healthz"
    assert address in script

    def probe(port: int) -> list[str]:
        return [*command[:-1], script.replace(f":{LIVENESS_PORT}/", f":{port}/")]

    with _HealthServer(200) as healthy:
        assert run_check(probe(healthy.port), venv_env()) == 0
    assert healthy.paths == ["/healthz"]
    with _HealthServer(500) as unhealthy:
        assert run_check(probe(unhealthy.port), venv_env()) != 0
    assert run_check(probe(free_port), venv_env()) != 0  # nothing listening
