"""`routeiq gateway` with DATABASE_URL: LiteLLM's Prisma client is checked before any worker
starts, and LiteLLM's database is migrated once, as LiteLLM's own CLI does.

Prisma's engines (query engine, schema engine) are downloaded from Prisma's own servers, which
this machine cannot reach, so no test here migrates a real database. What runs for real:

- the installed, ungenerated client (as `pip install routeiq[gateway]` leaves it);
- a client generated from LiteLLM's schema by the real `prisma generate`, with stand-in engine
  binaries that only answer `--version` (needs node and Prisma's CLI in prisma-client-py's
  cache, which `prisma generate` or `prisma --version` installs from the npm registry once);
- LiteLLM's migration entry points, replaced by recorders, for the decisions `set_up_database`
  takes the way LiteLLM's CLI takes them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from routeiq_router.gateway import database as database_module
from routeiq_router.gateway import server
from routeiq_router.gateway.database import (
    REDACTED,
    DatabaseError,
    DatabaseSetup,
    litellm_schema_path,
    set_up_database,
)
from routeiq_router.gateway.server import plan_gateway
from routeiq_router.settings import RouteIQSettings, load_settings
from tests.gateway_process import MASTER_KEY, ROUTEIQ, gateway_environment
from tests.ports import free_port

VENV_BIN = Path(sys.executable).parent
PASSWORD = "s3cret-Pa55word"
ENGINE_VERSION = "393aa359c9ad4a4bb28630fb5613f9c281cde053"  # prisma-client-py 0.15.0's engines
CONFIG = """
model_list:
  - model_name: chat
    litellm_params: {model: openai/chat-a, api_key: sk-mock, mock_response: "hi"}
"""


def database_url(port: int = 1) -> str:
    return f"postgresql://litellm:{PASSWORD}@127.0.0.1:{port}/litellm"


def run_gateway_command(
    tmp_path: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    return subprocess.run(
        [ROUTEIQ, "gateway", "--config", str(config), "--host", "127.0.0.1", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        check=False,
    )


def installed_client_is_generated() -> bool:
    spec = importlib.util.find_spec("prisma")
    locations = spec.submodule_search_locations if spec is not None else None
    return bool(locations) and (Path(next(iter(locations or []))) / "client.py").is_file()


# ---- the installed client, not generated ----------------------------------------------------------


@pytest.mark.skipif(installed_client_is_generated(), reason="this venv's Prisma client has been generated")
def test_database_url_without_a_generated_client_exits_2_naming_the_fix(tmp_path: Path) -> None:
    result = run_gateway_command(tmp_path, gateway_environment(DATABASE_URL=database_url()))
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("routeiq: error: DATABASE_URL: LiteLLM's Prisma client has not been generated")
    assert f"prisma generate --schema {litellm_schema_path()}" in error
    assert "routeiq-gateway image" in error
    assert "unset DATABASE_URL" in error
    assert PASSWORD not in result.stdout + result.stderr
    assert "starting gateway" not in result.stdout  # refused before anything started


def test_litellm_schema_path_is_litellms_prisma_schema() -> None:
    schema = litellm_schema_path()
    assert schema.is_file()
    assert 'provider = "prisma-client-py"' in schema.read_text(encoding="utf-8")


@pytest.mark.skipif(installed_client_is_generated(), reason="this venv's Prisma client has been generated")
def test_plan_refuses_database_url_without_a_generated_client() -> None:
    settings = load_settings({"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": database_url()})
    with pytest.raises(DatabaseError, match="Prisma client has not been generated") as caught:
        plan_gateway(settings)
    assert PASSWORD not in str(caught.value)


# ---- planning --------------------------------------------------------------------------------------


def test_plan_without_database_url_sets_up_no_database() -> None:
    assert plan_gateway(load_settings({"LITELLM_MASTER_KEY": MASTER_KEY})).database is None


@pytest.mark.parametrize(("line", "expected"), [("", None), ("  disable_prisma_schema_update: true\n", True)])
def test_plan_with_database_url_carries_the_schema_update_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, expected: bool | None
) -> None:
    checked: list[bool] = []
    monkeypatch.setattr(server, "check_prisma_client", lambda: checked.append(True))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + "general_settings:\n  store_model_in_db: false\n" + line)
    settings = load_settings({"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": database_url()})
    plan = plan_gateway(settings, config=config)
    assert checked == [True]
    assert plan.database == DatabaseSetup(disable_prisma_schema_update=expected)
    assert PASSWORD not in repr(plan)


# ---- set_up_database: LiteLLM's CLI's decisions, LiteLLM's functions replaced by recorders -------


@dataclass
class LiteLLMDatabase:
    """Records the calls set_up_database makes into LiteLLM."""

    calls: list[tuple[Any, ...]]
    migrated: bool = True
    error: Exception | None = None


@pytest.fixture
def litellm_database(monkeypatch: pytest.MonkeyPatch) -> LiteLLMDatabase:
    from litellm.proxy.db import check_migration, prisma_client

    recorder = LiteLLMDatabase(calls=[])

    def setup_database(use_migrate: bool = False, use_v2_resolver: bool = False) -> bool:
        recorder.calls.append(("setup_database", use_migrate, use_v2_resolver))
        if recorder.error is not None:
            raise recorder.error
        return recorder.migrated

    monkeypatch.setattr(prisma_client.PrismaManager, "setup_database", staticmethod(setup_database))
    monkeypatch.setattr(
        prisma_client.PrismaManager,
        "start_request_log_index_build",
        staticmethod(lambda: recorder.calls.append(("start_request_log_index_build",))),
    )
    monkeypatch.setattr(
        check_migration,
        "check_prisma_schema_diff",
        lambda db_url=None: recorder.calls.append(("diff", db_url)),
    )
    monkeypatch.setattr(database_module, "configure_logging", lambda *args, **kwargs: None)
    for variable in ("DISABLE_SCHEMA_UPDATE", "USE_V2_MIGRATION_RESOLVER"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url())
    return recorder


def database_settings() -> RouteIQSettings:
    return load_settings({"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": database_url()})


def test_database_is_migrated_with_the_v2_resolver_then_indexes_built(
    litellm_database: LiteLLMDatabase,
) -> None:
    set_up_database(DatabaseSetup(), database_settings())
    assert litellm_database.calls == [("setup_database", True, True), ("start_request_log_index_build",)]


def test_use_v2_migration_resolver_false_selects_the_legacy_resolver(
    litellm_database: LiteLLMDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USE_V2_MIGRATION_RESOLVER", "false")
    set_up_database(DatabaseSetup(), database_settings())
    assert litellm_database.calls[0] == ("setup_database", True, False)


@pytest.mark.parametrize(("setting", "env"), [(True, None), ("true", None), (None, "true"), (True, "false")])
def test_disabled_schema_updates_only_check_the_difference(
    litellm_database: LiteLLMDatabase,
    monkeypatch: pytest.MonkeyPatch,
    setting: bool | str | None,
    env: str | None,
) -> None:
    if env is not None:
        monkeypatch.setenv("DISABLE_SCHEMA_UPDATE", env)
    set_up_database(DatabaseSetup(disable_prisma_schema_update=setting), database_settings())
    assert litellm_database.calls == [("diff", None)]


def test_config_setting_false_overrides_disable_schema_update(
    litellm_database: LiteLLMDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as in LiteLLM: general_settings.disable_prisma_schema_update wins over DISABLE_SCHEMA_UPDATE
    monkeypatch.setenv("DISABLE_SCHEMA_UPDATE", "true")
    set_up_database(DatabaseSetup(disable_prisma_schema_update=False), database_settings())
    assert litellm_database.calls[0] == ("setup_database", True, True)


def test_failed_migrations_are_a_database_error(litellm_database: LiteLLMDatabase) -> None:
    litellm_database.migrated = False
    with pytest.raises(DatabaseError, match="migrations failed after several attempts"):
        set_up_database(DatabaseSetup(), database_settings())
    assert ("start_request_log_index_build",) not in litellm_database.calls


def test_migration_error_names_the_cause_without_the_password(litellm_database: LiteLLMDatabase) -> None:
    litellm_database.error = RuntimeError(f"P1000: authentication failed for {database_url()} ({PASSWORD})")
    with pytest.raises(DatabaseError) as caught:
        set_up_database(DatabaseSetup(), database_settings())
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: LiteLLM's database migration cannot proceed: P1000")
    assert PASSWORD not in message
    assert REDACTED in message


def test_missing_prisma_cli_is_a_database_error(
    litellm_database: LiteLLMDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    from litellm_proxy_extras import prisma_toolchain

    monkeypatch.setattr(prisma_toolchain, "prisma_cli_available", lambda: False)
    with pytest.raises(DatabaseError, match="prisma CLI is neither on PATH nor importable"):
        set_up_database(DatabaseSetup(), database_settings())
    assert litellm_database.calls == []


# ---- a client generated from LiteLLM's schema, with stand-in engines ------------------------------


def _prisma_cli_cached() -> bool:
    from prisma import config

    return (Path(config.binary_cache_dir) / "node_modules" / "prisma" / "build" / "index.js").is_file()


@dataclass(frozen=True)
class GeneratedClient:
    path: Path  # put it first on PYTHONPATH: the `prisma` package with LiteLLM's generated client
    query_engine: Path  # where the generated client looks for the query engine
    schema_engine: Path

    def engine_answers(self, version: str | None) -> None:
        """Make the stand-in query engine answer `--version` with `version`, or remove it."""
        self.query_engine.unlink(missing_ok=True)
        if version is not None:
            write_engine(self.query_engine, f"query-engine {version}")

    def environment(self, **overrides: str) -> dict[str, str]:
        env = gateway_environment(PYTHONPATH=str(self.path), CHECKPOINT_DISABLE="1", **overrides)
        env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
        return env


def write_engine(path: Path, answer: str) -> None:
    path.write_text(f'#!/bin/sh\necho "{answer}"\n')
    path.chmod(0o755)


@pytest.fixture(scope="module")
def generated_client(tmp_path_factory: pytest.TempPathFactory) -> GeneratedClient:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: Prisma's CLI, which generates the client, is a node program")
    if not _prisma_cli_cached():
        pytest.skip(
            "Prisma's CLI is not in prisma-client-py's cache yet; `.venv/bin/prisma --version` installs it"
        )
    root = tmp_path_factory.mktemp("prisma")
    client = GeneratedClient(root / "generated", root / "query-engine", root / "schema-engine")
    client.engine_answers(ENGINE_VERSION)
    write_engine(client.schema_engine, f"schema-engine-cli {ENGINE_VERSION}")
    schema = root / "schema.prisma"
    schema.write_text(
        litellm_schema_path()
        .read_text(encoding="utf-8")
        .replace(
            'provider = "prisma-client-py"',
            f'provider = "prisma-client-py"\n  output = "{client.path}/prisma"',
            1,
        )
    )
    result = subprocess.run(
        [str(VENV_BIN / "prisma"), "generate", "--schema", str(schema)],
        env=client.environment(
            PRISMA_QUERY_ENGINE_BINARY=str(client.query_engine),
            PRISMA_SCHEMA_ENGINE_BINARY=str(client.schema_engine),
            PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING="1",
            PRISMA_HIDE_UPDATE_MESSAGE="1",
        ),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (client.path / "prisma" / "client.py").is_file()
    return client


def check_in_child(client: GeneratedClient) -> subprocess.CompletedProcess[str]:
    """check_prisma_client() in a process that imports the generated client, as a worker would."""
    return subprocess.run(
        [sys.executable, "-c", "from routeiq_router.gateway.database import check_prisma_client as c; c()"],
        env=client.environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_generated_client_with_its_query_engine_passes_the_check(generated_client: GeneratedClient) -> None:
    generated_client.engine_answers(ENGINE_VERSION)
    result = check_in_child(generated_client)
    assert result.returncode == 0, result.stderr


def test_query_engine_of_another_version_is_refused(generated_client: GeneratedClient) -> None:
    generated_client.engine_answers("0000000000000000000000000000000000000000")
    result = check_in_child(generated_client)
    assert result.returncode != 0
    assert (
        "DatabaseError: DATABASE_URL: LiteLLM's Prisma client cannot start its query engine" in result.stderr
    )
    assert "MismatchedVersionsError" in result.stderr
    assert ENGINE_VERSION in result.stderr


@pytest.mark.slow
def test_generated_client_without_its_query_engine_exits_2(
    generated_client: GeneratedClient, tmp_path: Path
) -> None:
    generated_client.engine_answers(None)
    # and none in prisma-client-py's own cache either (where `prisma py fetch` would put one)
    env = generated_client.environment(
        DATABASE_URL=database_url(), PRISMA_BINARY_CACHE_DIR=str(tmp_path / "no-engines")
    )
    result = run_gateway_command(tmp_path, env)
    assert result.returncode == 2, result.stdout + result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "routeiq: error: DATABASE_URL: LiteLLM's Prisma client cannot start its query engine"
    )
    assert "BinaryNotFoundError" in error
    assert "prisma generate --schema" in error
    assert PASSWORD not in result.stdout + result.stderr
    assert "starting gateway" not in result.stdout


@pytest.mark.slow
def test_unreachable_database_stops_the_migration_with_exit_2(
    generated_client: GeneratedClient, tmp_path: Path
) -> None:
    """The check passes, then LiteLLM's migration runs in the parent and fails on the database.

    The stand-in engines are passed to Prisma's CLI too, so it downloads nothing.
    """
    generated_client.engine_answers(ENGINE_VERSION)
    env = generated_client.environment(
        DATABASE_URL=database_url(free_port()),
        PRISMA_QUERY_ENGINE_BINARY=str(generated_client.query_engine),
        PRISMA_SCHEMA_ENGINE_BINARY=str(generated_client.schema_engine),
        PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING="1",
        ROUTEIQ_WORKERS="1",
    )
    result = run_gateway_command(tmp_path, env, timeout=280)
    assert result.returncode == 2, result.stdout + result.stderr
    error = result.stderr.strip().splitlines()
    (line,) = [item for item in error if item.startswith("routeiq: error:")]
    assert line.startswith("routeiq: error: DATABASE_URL: LiteLLM's database migration cannot proceed")
    assert "Can't reach database server" in line
    assert "migrating LiteLLM's database" in result.stdout
    assert "gateway worker ready" not in result.stdout  # no worker was started
    assert PASSWORD not in result.stdout + result.stderr
