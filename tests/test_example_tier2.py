"""The tier-2 example (two gateways, Redis, PostgreSQL, nginx), tested without a container engine.

No Docker here, so these tests check what compose and nginx would be given: the compose file
against the Compose Specification's JSON schema (vendored by check-jsonschema) and against
RouteIQ's own settings; the LiteLLM config through RouteIQ's config check; nginx.conf through
crossplane (nginxinc's parser); and the Redis command and health checks by running them
against a real redis-server.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import crossplane  # type: ignore[import-untyped]
import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
import redis
import uvicorn
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from routeiq_router.gateway.config import load_litellm_config
from routeiq_router.settings import load_settings, not_yet_acted_on, unknown_variable_warnings
from routeiq_router.state.keys import GatewayKeys
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
TIER2 = ROOT / "examples" / "tier2"
COMPOSE_FILE = TIER2 / "docker-compose.yml"
CONFIG = TIER2 / "config.yaml"
NGINX_CONF = TIER2 / "nginx.conf"
ENV_EXAMPLE = TIER2 / ".env.example"
README = TIER2 / "README.md"
GATEWAYS = ("routeiq-gateway-1", "routeiq-gateway-2")
SECRETS = ("LITELLM_MASTER_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
# what a user puts in .env: the three secrets, hex as .env.example asks
FILLED = {
    "LITELLM_MASTER_KEY": "sk-test-tier2",
    "POSTGRES_PASSWORD": "0123456789abcdef",
    "REDIS_PASSWORD": "fedcba9876543210",
}


# ---- compose: reading and interpolating ---------------------------------------------------------


def compose_document() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def services() -> dict[str, dict[str, Any]]:
    found = compose_document()["services"]
    assert isinstance(found, dict)
    return found


_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's `$$`, `${VAR}`, `${VAR:-default}` and `${VAR:?error}`."""

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match[1], match[2], match[3]
        current = variables.get(name, "")
        if operator == "?" and not current:
            raise ValueError(f"required variable {name} is missing a value: {argument}")
        if operator == "-" and not current:
            return argument
        return current

    return _INTERPOLATION.sub(substitute, value)


def interpolated(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [interpolated(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(value, variables) for key, value in node.items()}
    return node


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example line without '=': {line!r}"
            values[key.strip()] = value.strip()
    return values


def filled_env() -> dict[str, str]:
    return {**env_example(), **FILLED}


def resolved_services() -> dict[str, dict[str, Any]]:
    result = interpolated(services(), filled_env())
    assert isinstance(result, dict)
    return result


def gateway_environment() -> dict[str, str]:
    return {key: str(value) for key, value in resolved_services()[GATEWAYS[0]]["environment"].items()}


def _seconds(duration: str) -> float:
    """A compose (`1m30s`) or nginx (`600s`, `10`) duration, in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", duration)
    assert "".join(number + unit for number, unit in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit or "s"] for number, unit in parts)


# ---- compose: the Compose Specification ----------------------------------------------------------


def compose_schema_errors(document: Mapping[str, Any]) -> list[str]:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    schema = json.loads(text)
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_is_valid_for_the_compose_specification() -> None:
    document = interpolated(compose_document(), filled_env())
    assert compose_schema_errors(document) == []
    # the schema does reject a misspelt service key (compose would refuse the file)
    document["services"]["redis"]["healthchek"] = document["services"]["redis"].pop("healthcheck")
    assert any("healthchek" in error for error in compose_schema_errors(document))


def test_compose_runs_the_five_tier2_services_on_one_network() -> None:
    document = compose_document()
    found = services()
    assert set(found) == {"postgres", "redis", *GATEWAYS, "nginx"}
    assert found["postgres"]["image"] == "postgres:16-alpine"
    assert found["redis"]["image"] == "redis:7-alpine"
    assert re.fullmatch(r"nginx:[\d.]*-?alpine", found["nginx"]["image"])
    assert document["networks"] == {"routeiq": {"driver": "bridge"}}
    for name, service in found.items():
        assert service["networks"] == ["routeiq"], name
        assert service["restart"] == "unless-stopped", name
        assert service["deploy"]["resources"]["limits"].keys() == {"cpus", "memory"}, name
        assert "no-new-privileges:true" in service["security_opt"], name
    # only nginx is reachable from the host
    assert {name for name, service in found.items() if "ports" in service} == {"nginx"}
    assert found["nginx"]["ports"] == ["8080:80"]
    assert set(document["volumes"]) == {"postgres_data", "redis_data"}
    assert "postgres_data:/var/lib/postgresql/data" in found["postgres"]["volumes"]
    assert "redis_data:/data" in found["redis"]["volumes"]


# ---- compose: the two gateways ------------------------------------------------------------------


def test_both_gateways_are_the_one_x_gateway_definition() -> None:
    document = compose_document()
    for name in GATEWAYS:
        assert document["services"][name] == document["x-gateway"], f"{name} differs from x-gateway"
    gateway = document["x-gateway"]
    assert gateway["image"] == "ghcr.io/routeiq/routeiq-gateway:latest"
    assert (COMPOSE_FILE.parent / gateway["build"]["context"]).resolve() == ROOT
    assert (ROOT / gateway["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile.gateway"


def test_gateways_share_one_identity_and_one_redis() -> None:
    resolved = resolved_services()
    identities = {resolved[name]["environment"]["ROUTEIQ_GATEWAY"] for name in GATEWAYS}
    redis_urls = {resolved[name]["environment"]["REDIS_URL"] for name in GATEWAYS}
    assert len(identities) == 1, f"the gateways would keep separate routing state: {identities}"
    assert len(redis_urls) == 1
    # the identity is fixed in the file, not left to a variable each gateway could set differently
    assert compose_document()["x-gateway"]["environment"]["ROUTEIQ_GATEWAY"] == "compose/routeiq"
    # the URL reaches the redis service with the password the server requires
    url = urlsplit(redis_urls.pop())
    command = resolved["redis"]["command"]
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)
    assert url.password == command[command.index("--requirepass") + 1] == FILLED["REDIS_PASSWORD"]


def test_gateway_database_url_reaches_the_postgres_service_as_its_user() -> None:
    postgres = resolved_services()["postgres"]["environment"]
    url = urlsplit(gateway_environment()["DATABASE_URL"])
    assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"] == FILLED["POSTGRES_PASSWORD"]
    assert url.path == f"/{postgres['POSTGRES_DB']}"


def test_gateway_environment_is_valid_for_routeiq() -> None:
    environment = gateway_environment()
    assert unknown_variable_warnings(environment) == []
    settings = load_settings(environment)
    assert not_yet_acted_on(settings) == [], "the gateways would warn that they ignore these"
    assert settings.gateway == "compose/routeiq"
    assert settings.redis_url is not None
    assert settings.database_url is not None
    assert settings.ab_testing_enabled is True
    assert settings.workers == 2
    assert settings.config_path == Path("/app/config/config.yaml")
    for variable in (
        "ROUTEIQ_CB_FAILURE_THRESHOLD",
        "ROUTEIQ_CB_TIMEOUT_SECONDS",
        "ROUTEIQ_AFFINITY_TTL_SECONDS",
    ):
        assert variable in environment
    assert settings.master_key is not None
    assert settings.master_key.get_secret_value() == FILLED["LITELLM_MASTER_KEY"]


def test_gateways_start_after_healthy_postgres_and_redis() -> None:
    for name in GATEWAYS:
        depends_on = services()[name]["depends_on"]
        assert depends_on == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
    nginx_depends_on = services()["nginx"]["depends_on"]
    assert nginx_depends_on == {name: {"condition": "service_healthy"} for name in GATEWAYS}


def test_gateways_are_hardened_and_outlive_their_drain() -> None:
    gateway = services()[GATEWAYS[0]]
    assert gateway["read_only"] is True
    assert any(entry.split(":")[0] == "/tmp" for entry in gateway["tmpfs"])
    assert gateway["cap_drop"] == ["ALL"]
    assert "cap_add" not in gateway
    assert "ports" not in gateway
    limits = gateway["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) >= 1
    assert limits["memory"].endswith("G")
    drain = load_settings(gateway_environment()).drain_timeout_seconds
    assert _seconds(gateway["stop_grace_period"]) > drain, "compose would SIGKILL a draining gateway"
    # the config is mounted read-only, at LITELLM_CONFIG_PATH
    (mount,) = [volume.split(":") for volume in gateway["volumes"] if not volume.startswith("#")]
    source, target, mode = mount
    assert (COMPOSE_FILE.parent / source).resolve() == CONFIG
    assert target == gateway["environment"]["LITELLM_CONFIG_PATH"]
    assert mode == "ro"


class _ReadinessStub:
    """Answers `status` on every path and records the paths asked for."""

    def __init__(self, status: int) -> None:
        paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.paths = paths
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _ReadinessStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_gateway_healthcheck_probes_readiness_with_python(free_port: int) -> None:
    test = services()[GATEWAYS[0]]["healthcheck"]["test"]
    assert test[0] == "CMD"
    command = [str(word) for word in test[1:]]
    assert command[:2] == ["python", "-c"], "the slim image has no curl"
    port = load_settings(gateway_environment()).port
    url = f"http://127.0.0.1:{port}/_health/ready"
    assert url in command[2]

    def probe(target_port: int) -> int:
        script = command[2].replace(f":{port}/", f":{target_port}/")
        return subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30).returncode

    with _ReadinessStub(200) as ready:
        assert probe(ready.port) == 0
    assert ready.paths == ["/_health/ready"]
    with _ReadinessStub(503) as draining:
        assert probe(draining.port) != 0
    assert probe(free_port) != 0


# ---- compose: secrets and .env.example -------------------------------------------------------------


def test_secrets_are_required_variables_never_defaults() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for secret in SECRETS:
        uses = re.findall(rf"\$\{{{secret}(?:(:[-?])[^}}]*)?\}}", text)
        assert uses, f"{secret} is not used"
        assert set(uses) == {":?"}, f"every use of {secret} must be ${{{secret}:?...}}, no default"
        missing = {key: value for key, value in filled_env().items() if key != secret}
        with pytest.raises(ValueError, match=secret):
            interpolated(compose_document(), missing)
    # the healthcheck of redis authenticates through the environment, not its command line
    redis_service = services()["redis"]
    assert "REDISCLI_AUTH" in redis_service["environment"]
    assert "-a" not in " ".join(redis_service["healthcheck"]["test"]).split()


def test_env_example_documents_exactly_the_variables_compose_reads_and_no_secret() -> None:
    used = {match[0] for match in _INTERPOLATION.findall(COMPOSE_FILE.read_text(encoding="utf-8"))} - {""}
    example = env_example()
    assert used == set(example)
    for secret in SECRETS:
        assert example[secret] == "", f".env.example must not ship a usable {secret}"


def test_git_ignores_the_env_file() -> None:
    git = shutil.which("git")
    assert git is not None, "git is needed to check .gitignore"
    ignored = subprocess.run(
        [git, "check-ignore", "--quiet", "--no-index", "examples/tier2/.env"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "examples/tier2/.env would be committable: add it to .gitignore"
    kept = subprocess.run(
        [git, "check-ignore", "--quiet", "--no-index", "examples/tier2/.env.example"], cwd=ROOT, check=False
    )
    assert kept.returncode == 1


# ---- redis: the compose command, run for real ------------------------------------------------------


def redis_flags() -> dict[str, str]:
    command = services()["redis"]["command"]
    assert isinstance(command, list), "use the list form of command"
    assert command[0] == "redis-server"
    words = [str(word) for word in command[1:]]
    assert [word.startswith("--") for word in words] == [True, False] * (len(words) // 2), words
    return dict(zip(words[::2], words[1::2], strict=True))


def test_redis_persists_and_evicts_only_keys_with_a_ttl() -> None:
    flags = redis_flags()
    assert flags["--appendonly"] == "yes"
    assert flags["--maxmemory"] == "256mb"
    # allkeys-lru (the usual cache policy) could evict ab:weights and ab:counters
    assert flags["--maxmemory-policy"] == "volatile-lru"
    assert re.fullmatch(r"\$\{REDIS_PASSWORD:\?[^}]+\}", flags["--requirepass"])


@dataclass(frozen=True, slots=True)
class RunningRedis:
    port: int
    password: str

    def client(self, password: str | None = None) -> redis.Redis:
        # no retries: a refused password fails at once (redis-py retries connection errors by default)
        return redis.Redis(
            port=self.port,
            password=password if password is not None else self.password,
            retry=Retry(NoBackoff(), 0),
        )


@pytest.fixture
def compose_redis(tmp_path: Path) -> Iterator[RunningRedis]:
    """redis-server started with the compose file's command (local port and directory added)."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not on PATH (apt-get install redis-server)"
    command = interpolated(services()["redis"]["command"], FILLED)
    port = free_port()
    local = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""]
    process = subprocess.Popen(
        [binary, *command[1:], *local], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    running = RunningRedis(port, FILLED["REDIS_PASSWORD"])
    try:
        client = running.client()
        for _ in range(250):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        else:
            pytest.fail(f"redis-server with the compose command did not answer: {command}")
        yield running
    finally:
        process.terminate()
        process.wait(10)


def test_redis_command_starts_a_server_that_requires_the_password(compose_redis: RunningRedis) -> None:
    client = compose_redis.client()
    config = client.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["maxmemory"] == str(256 * 1024 * 1024)
    assert config["maxmemory-policy"] == "volatile-lru"
    with pytest.raises(redis.AuthenticationError):
        compose_redis.client(password="").ping()
    with pytest.raises(redis.AuthenticationError):
        compose_redis.client(password="wrong").ping()


def test_redis_healthcheck_passes_only_with_the_password(compose_redis: RunningRedis) -> None:
    service = interpolated(services()["redis"], FILLED)
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert "redis-cli " in test[1]
    script = test[1].replace("redis-cli ", f"redis-cli -p {compose_redis.port} ", 1)
    redis_cli = shutil.which("redis-cli")
    assert redis_cli is not None, "redis-cli is not on PATH (apt-get install redis-tools)"
    path = f"{Path(redis_cli).parent}:/usr/bin:/bin"

    def check(auth: str | None) -> int:
        env = {"PATH": path} | ({"REDISCLI_AUTH": auth} if auth is not None else {})
        return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, timeout=30).returncode

    assert check(service["environment"]["REDISCLI_AUTH"]) == 0
    assert check("wrong") != 0
    assert check(None) != 0


def test_volatile_lru_keeps_routing_state_and_refuses_writes_rather_than_evict_it(
    compose_redis: RunningRedis,
) -> None:
    """What the policy comment promises, on a real server: the TTL keys go, the routing state stays."""
    client = compose_redis.client()
    client.config_set("maxmemory", "3mb")  # the compose policy, a smaller cap to fill quickly
    keys = GatewayKeys("compose/routeiq")
    routing_state = {
        keys.active_strategy: b"least-busy",
        keys.ab_weights: {b"control": b"70", b"candidate": b"30"},
        keys.ab_counters: {b"control": b"7", b"candidate": b"3"},
    }
    client.set(keys.active_strategy, "least-busy")
    client.hset(keys.ab_weights, mapping={"control": 70, "candidate": 30})
    client.hset(keys.ab_counters, mapping={"control": 7, "candidate": 3})

    def stored() -> dict[str, Any]:
        return {
            keys.active_strategy: client.get(keys.active_strategy),
            keys.ab_weights: client.hgetall(keys.ab_weights),
            keys.ab_counters: client.hgetall(keys.ab_counters),
        }

    written = 40_000
    for start in range(0, written, 2_000):
        pipe = client.pipeline(transaction=False)
        for index in range(start, start + 2_000):
            pipe.set(keys.affinity(f"conversation-{index:06d}"), "tier2-gpt-4o-mini-a" * 4, px=3_600_000)
        pipe.execute()
    assert int(client.info("stats")["evicted_keys"]) > 0
    assert client.dbsize() < written
    assert stored() == routing_state

    def fill_without_ttl() -> None:
        for batch in range(100):
            pipe = client.pipeline(transaction=False)
            for index in range(2_000):
                pipe.set(f"no-ttl-{batch}-{index}", "x" * 100)
            pipe.execute()

    # memory full of keys without a TTL: writes fail, nothing of the routing state is evicted
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        fill_without_ttl()
    assert stored() == routing_state


# ---- postgres and nginx services ---------------------------------------------------------------


def test_postgres_requires_a_password_and_reports_readiness() -> None:
    postgres = services()["postgres"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", postgres["environment"]["POSTGRES_PASSWORD"])
    test = postgres["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert test[1].startswith("pg_isready ")
    # `$$` leaves the variable to the container; a bare `$VAR` would be compose's, empty here
    assert "$$POSTGRES_USER" in test[1]


def test_nginx_service_mounts_the_config_read_only_and_checks_its_own_health() -> None:
    nginx = services()["nginx"]
    (mount,) = nginx["volumes"]
    source, target, mode = mount.split(":")
    assert (COMPOSE_FILE.parent / source).resolve() == NGINX_CONF
    assert (target, mode) == ("/etc/nginx/nginx.conf", "ro")
    test = nginx["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert "curl" not in test
    assert test[-1] == "http://127.0.0.1/health"
    assert health_location()  # nginx.conf answers that path itself
    # read-only: the pid file and the request-body buffers live on the tmpfs mounts
    assert nginx["read_only"] is True
    tmpfs = [entry.split(":")[0] for entry in nginx["tmpfs"]]
    (pid,) = directive_args(nginx_conf(), "pid")
    assert str(Path(pid[0]).parent) in tmpfs
    assert "/var/cache/nginx" in tmpfs
    assert nginx["cap_drop"] == ["ALL"]
    assert set(nginx["cap_add"]) <= {"CHOWN", "SETGID", "SETUID", "NET_BIND_SERVICE"}


# ---- nginx.conf, through crossplane -------------------------------------------------------------


Directive = dict[str, Any]


def nginx_conf(path: Path = NGINX_CONF) -> list[Directive]:
    """The parsed nginx.conf, with every directive checked against crossplane's table of nginx's.

    crossplane checks each known directive's context and argument count. Unknown directives it
    checks only in strict mode, which also rejects the entries of a `map` block, so they are
    checked here instead, outside `map` blocks.
    """
    parsed = crossplane.parse(str(path), single=True, comments=False)
    assert parsed["status"] == "ok", parsed["errors"]
    (config,) = parsed["config"]
    known = crossplane.analyzer.DIRECTIVES

    def check(block: list[Directive]) -> None:
        for item in block:
            assert item["directive"] in known, f"unknown nginx directive {item['directive']!r}"
            if "block" in item and item["directive"] != "map":
                check(item["block"])

    check(config["parsed"])
    result: list[Directive] = config["parsed"]
    return result


def find_blocks(block: list[Directive], directive: str, *args: str) -> list[list[Directive]]:
    """The bodies of every `directive args... { }` at any depth."""
    found: list[list[Directive]] = []
    for item in block:
        if "block" in item:
            if item["directive"] == directive and tuple(item["args"][: len(args)]) == args:
                found.append(item["block"])
            found += find_blocks(item["block"], directive, *args)
    return found


def directive_args(block: list[Directive], directive: str) -> list[list[str]]:
    return [item["args"] for item in block if item["directive"] == directive]


def every(block: list[Directive], directive: str) -> list[list[str]]:
    """The arguments of `directive` at any depth."""
    found = directive_args(block, directive)
    for item in block:
        found += every(item.get("block", []), directive)
    return found


def one(block: list[Directive], directive: str) -> list[str]:
    found = directive_args(block, directive)
    assert len(found) == 1, f"expected one {directive}, found {found}"
    return found[0]


def upstream() -> tuple[str, list[Directive]]:
    http = nginx_conf()
    upstreams = [item for item in find_blocks(http, "http")[0] if item["directive"] == "upstream"]
    assert len(upstreams) == 1
    return upstreams[0]["args"][0], upstreams[0]["block"]


def proxy_location() -> list[Directive]:
    (location,) = find_blocks(nginx_conf(), "location", "/")
    return location


def health_location() -> list[Directive]:
    (location,) = find_blocks(nginx_conf(), "location", "=", "/health")
    return location


def test_nginx_conf_parses_and_the_parse_check_catches_a_typo(tmp_path: Path) -> None:
    assert find_blocks(nginx_conf(), "events")
    broken = tmp_path / "nginx.conf"
    broken.write_text(
        NGINX_CONF.read_text(encoding="utf-8").replace("proxy_buffering off;", "proxy_bufering off;"),
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match="proxy_bufering"):
        nginx_conf(broken)


def test_nginx_balances_both_gateways_least_conn_over_keepalive() -> None:
    name, block = upstream()
    assert one(block, "least_conn") == []
    port = load_settings(gateway_environment()).port
    servers = directive_args(block, "server")
    assert {args[0] for args in servers} == {f"{gateway}:{port}" for gateway in GATEWAYS}
    for args in servers:
        options = dict(arg.split("=", 1) for arg in args[1:] if "=" in arg)
        assert int(options["max_fails"]) >= 1, args
        assert _seconds(options["fail_timeout"]) > 0, args
        if "resolve" in args[1:]:  # re-resolution needs shared memory and a resolver
            assert directive_args(block, "zone")
            assert every(nginx_conf(), "resolver")
    assert int(one(block, "keepalive")[0]) > 0
    # nginx must drop an idle connection before uvicorn does, or it may reuse one being closed
    uvicorn_keep_alive = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    assert _seconds(one(block, "keepalive_timeout")[0]) < uvicorn_keep_alive
    location = proxy_location()
    assert one(location, "proxy_pass") == [f"http://{name}"]
    assert one(location, "proxy_http_version") == ["1.1"]


def test_nginx_streams_responses_and_allows_long_generations() -> None:
    location = proxy_location()
    assert one(location, "proxy_buffering") == ["off"]
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        assert _seconds(one(location, directive)[0]) >= 600, directive
    (server,) = find_blocks(nginx_conf(), "server")
    assert one(server, "client_max_body_size") == ["50m"]
    # keep-alive: no "Connection: close" to the gateways (an upgrade passes for WebSockets)
    header = {args[0].lower(): args[1] for args in directive_args(location, "proxy_set_header")}
    variable = header["connection"].lstrip("$")
    (mapping,) = find_blocks(nginx_conf(), "map", "$http_upgrade", f"${variable}")
    assert {item["directive"]: item["args"] for item in mapping}[""] == [""]


def test_nginx_retries_a_draining_gateways_503_on_the_other_one() -> None:
    location = proxy_location()
    conditions = set(one(location, "proxy_next_upstream"))
    assert {"error", "http_503"} <= conditions
    # a completion is a POST: without non_idempotent, nginx would pass the drain's 503 to clients
    assert "non_idempotent" in conditions
    # never a status that may come after the provider was called
    assert not conditions & {"http_500", "http_502", "http_504", "http_429"}
    assert one(location, "proxy_next_upstream_tries") == ["2"]
    # a request that failed late (a cut-off generation) is not sent again
    retry_window = _seconds(one(location, "proxy_next_upstream_timeout")[0])
    assert 0 < retry_window < _seconds(one(location, "proxy_read_timeout")[0])
    # nginx can resend only a body it buffered
    assert directive_args(location, "proxy_request_buffering") in ([], [["on"]])


def test_nginx_answers_health_itself() -> None:
    (status, _body) = one(health_location(), "return")
    assert status == "200"
    assert not directive_args(health_location(), "proxy_pass")


def test_nginx_forwards_request_id_and_client_and_keeps_routeiq_headers() -> None:
    location = proxy_location()
    header = {args[0].lower(): args[1] for args in directive_args(location, "proxy_set_header")}
    for name in ("x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-real-ip", "host"):
        assert name in header, name
    assert header["x-forwarded-for"] == "$proxy_add_x_forwarded_for"
    # the request id goes back to the client too
    assert any(args[0].lower() == "x-request-id" for args in directive_args(location, "add_header"))
    hidden = [args[0].lower() for args in every(nginx_conf(), "proxy_hide_header")]
    assert not [name for name in hidden if name.startswith(("x-routeiq-", "x-litellm-"))]


# ---- config.yaml and README ---------------------------------------------------------------------


def test_tier2_config_passes_routeiq_check_with_two_mock_deployments_per_group() -> None:
    config = load_litellm_config(CONFIG)
    deployments: dict[str, list[str]] = {}
    for deployment in config.model_list:
        params = deployment.litellm_params.model_dump()
        assert params.get("mock_response"), f"{deployment.model_name} would call a real provider"
        assert deployment.model_info is not None
        deployments.setdefault(deployment.model_name, []).append(deployment.model_info["id"])
    assert len(deployments) >= 2
    for group, ids in deployments.items():
        assert len(ids) >= 2, f"{group}: a strategy needs two deployments to choose between"
    all_ids = [deployment_id for ids in deployments.values() for deployment_id in ids]
    assert len(set(all_ids)) == len(all_ids)


def test_tier2_config_documents_real_providers_that_read_keys_from_the_environment(tmp_path: Path) -> None:
    lines = []
    for line in CONFIG.read_text(encoding="utf-8").splitlines():
        # `  # - model_name: ...` and `  #     key: value` are YAML under model_list once "# " goes
        lines.append(line.replace("# ", "", 1) if re.match(r"^  # (- |  +\S)", line) else line)
    uncommented = tmp_path / "config.yaml"
    uncommented.write_text("\n".join(lines) + "\n", encoding="utf-8")
    real = [d.litellm_params.model_dump() for d in load_litellm_config(uncommented).model_list]
    real = [params for params in real if "mock_response" not in params]
    assert {params["model"].split("/")[0] for params in real} >= {"openai", "anthropic"}
    keys = {params["api_key"] for params in real}
    assert keys == {"os.environ/OPENAI_API_KEY", "os.environ/ANTHROPIC_API_KEY"}
    for key in keys:
        assert key.removeprefix("os.environ/") in gateway_environment()


def test_readme_commands_name_the_compose_gateway_and_services() -> None:
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"--gateway (\S+)", text))
    assert named == {gateway_environment()["ROUTEIQ_GATEWAY"]}
    exec_targets = set(re.findall(r"docker compose (?:exec|restart|logs -f|stop|start) (\S+)", text))
    assert exec_targets
    assert exec_targets <= set(services())
    for link in re.findall(r"\]\((\.\./[^)#]+)\)", text):
        assert (TIER2 / link).resolve().is_file(), link
