"""LiteLLM's database (`DATABASE_URL`): checked before any worker starts, migrated once per start.

With `DATABASE_URL` set, LiteLLM keeps virtual keys, teams, budgets and spend in PostgreSQL
through prisma-client-py, which needs two things that `pip install` does not provide: the
client generated from LiteLLM's schema (`prisma generate`) and Prisma's query engine binary.
LiteLLM's own CLI (`litellm`) also migrates the database before it starts uvicorn;
`routeiq gateway` starts LiteLLM's app directly, so it does the same here:
`check_prisma_client` while planning, `set_up_database` once in the parent process before the
workers start.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from routeiq_router.gateway.logs import configure_logging

if TYPE_CHECKING:
    from routeiq_router.settings import RouteIQSettings

__all__ = ["DatabaseError", "DatabaseSetup", "check_prisma_client", "litellm_schema_path", "set_up_database"]

logger = logging.getLogger("routeiq.gateway")

REDACTED = "**********"
PROBE_TIMEOUT_SECONDS = 120.0

# What a worker's LiteLLM does when it connects: import the generated client, then find the
# query engine and check its version (prisma.engine.QueryEngine._ensure_file). Run in a child
# process: importing LiteLLM's generated client takes seconds and a lot of memory, which the
# supervisor process should not keep for its whole life.
_QUERY_ENGINE_PROBE = """
import sys
try:
    from prisma.client import BINARY_PATHS
    from prisma.engine.utils import ensure
    ensure(BINARY_PATHS.query_engine)
except Exception as error:
    print(f"{type(error).__name__}: {error}", file=sys.stderr)
    sys.exit(1)
"""


class DatabaseError(ValueError):
    """LiteLLM's database cannot be used or set up; the message names the cause and the fix."""


@dataclass(frozen=True, slots=True)
class DatabaseSetup:
    """What `set_up_database` needs from the LiteLLM config, read while planning."""

    # general_settings.disable_prisma_schema_update; None leaves it to LiteLLM's DISABLE_SCHEMA_UPDATE
    disable_prisma_schema_update: bool | str | None = None


def litellm_schema_path() -> Path:
    """LiteLLM's Prisma schema (`litellm/proxy/schema.prisma`), found without importing LiteLLM."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return Path("litellm/proxy/schema.prisma")
    return Path(next(iter(spec.submodule_search_locations))) / "proxy" / "schema.prisma"


def _fix() -> str:
    return (
        f"generate it with `prisma generate --schema {litellm_schema_path()}` (it downloads Prisma's "
        "engines, so it needs network access), or run the routeiq-gateway image, which generates it at "
        "build time; or unset DATABASE_URL to run the gateway without virtual keys, teams and spend tracking"
    )


def check_prisma_client() -> None:
    """Raise DatabaseError unless LiteLLM's Prisma client is generated and its query engine runs.

    Without them every worker fails at start-up ("Unable to find Prisma binaries").
    """
    spec = importlib.util.find_spec("prisma")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseError(
            "DATABASE_URL: LiteLLM needs the prisma package (prisma-client-py) for its database, and it "
            "is not installed; install routeiq[gateway], then " + _fix()
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    if not (package / "client.py").is_file():
        raise DatabaseError(
            "DATABASE_URL: LiteLLM's Prisma client has not been generated (there is no client in "
            f"{package}), so no worker could connect to the database; " + _fix()
        )
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _QUERY_ENGINE_PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        cause = f"loading it took more than {PROBE_TIMEOUT_SECONDS:.0f}s"
    else:
        if probe.returncode == 0:
            return
        lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
        cause = " ".join(lines[-2:]) or f"the check exited with {probe.returncode}"
    raise DatabaseError(
        "DATABASE_URL: LiteLLM's Prisma client cannot start its query engine "
        f"({_redacted(cause)}), so no worker could connect to the database; " + _fix()
    )


def _redacted(text: str) -> str:
    """`text` without the database URLs' passwords (as written and URL-decoded) or the URLs.

    DIRECT_URL is LiteLLM's optional second URL, which its migrations use when it is set.
    """
    for variable in ("DATABASE_URL", "DIRECT_URL"):
        url = os.environ.get(variable, "")
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        for secret in (url, password, unquote(password) if password else None):
            if secret:
                text = text.replace(secret, REDACTED)
    return text


def set_up_database(setup: DatabaseSetup, settings: RouteIQSettings) -> None:
    """Migrate LiteLLM's database as LiteLLM's CLI does before it starts uvicorn.

    Mirrors litellm/proxy/proxy_cli.py (1.108.7): with schema updates disabled (the config's
    general_settings.disable_prisma_schema_update, else DISABLE_SCHEMA_UPDATE) it only logs the
    difference between the database and the schema; otherwise it runs `prisma migrate deploy`
    with LiteLLM's migrations (litellm-proxy-extras), with the v2 migration resolver unless
    USE_V2_MIGRATION_RESOLVER=false, then builds the request-log indexes in the background.
    Raises DatabaseError when the migrations cannot run or fail.
    """
    from litellm._logging import SecretRedactionFilter
    from litellm.proxy.db.check_migration import check_prisma_schema_diff
    from litellm.proxy.db.prisma_client import PrismaManager, should_update_prisma_schema
    from litellm.proxy.proxy_cli import resolve_v2_migration_resolver
    from litellm_proxy_extras.prisma_toolchain import prisma_cli_available

    # importing LiteLLM installed its own log handlers; route them through RouteIQ's JSON one again
    configure_logging(settings.log_level, settings.otel_service_name, [SecretRedactionFilter()])
    if not prisma_cli_available():
        raise DatabaseError(
            "DATABASE_URL: the prisma CLI is neither on PATH nor importable, so LiteLLM's "
            "database cannot be migrated; install routeiq[gateway] (it pins prisma) or run the "
            "routeiq-gateway image"
        )
    if not should_update_prisma_schema(setup.disable_prisma_schema_update):
        logger.info("database schema updates are disabled: checking the schema difference only")
        check_prisma_schema_diff(db_url=None)
        return
    use_v2_resolver = resolve_v2_migration_resolver(
        use_legacy_flag=False, env_value=os.environ.get("USE_V2_MIGRATION_RESOLVER")
    )
    logger.info("migrating LiteLLM's database", extra={"v2_migration_resolver": use_v2_resolver})
    try:
        migrated = PrismaManager.setup_database(use_migrate=True, use_v2_resolver=use_v2_resolver)
    except Exception as error:  # LiteLLM raises RuntimeError for unrecoverable migrations; name any cause
        raise DatabaseError(
            "DATABASE_URL: LiteLLM's database migration cannot proceed: "
            f"{_redacted(str(error)) or type(error).__name__}"
        ) from None
    if not migrated:
        raise DatabaseError(
            "DATABASE_URL: LiteLLM's database migrations failed after several attempts (see the log "
            "above); check that the database is reachable and that its user may create tables, or set "
            "general_settings.disable_prisma_schema_update: true in the LiteLLM config when the "
            "database is migrated separately"
        )
    logger.info("LiteLLM's database is migrated")
    PrismaManager.start_request_log_index_build()
