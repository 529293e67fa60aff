"""`routeiq gateway`: check everything, then run the workers under uvicorn."""

from __future__ import annotations

import atexit
import gc
import logging
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
from uvicorn.supervisors import Multiprocess

from routeiq_router.gateway.config import demo_config_path, load_litellm_config
from routeiq_router.gateway.database import DatabaseSetup, check_prisma_client, set_up_database
from routeiq_router.gateway.workers import available_cpus, default_workers
from routeiq_router.settings import RouteIQSettings, SettingsError, not_yet_acted_on
from routeiq_router.strategies import strategy_class

__all__ = ["GatewayPlan", "exit_without_final_collection", "plan_gateway", "run_gateway"]

logger = logging.getLogger("routeiq.gateway")

APP = "routeiq_router.gateway.asgi:app"
STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that failed before serving


@dataclass(frozen=True, slots=True)
class GatewayPlan:
    """What `routeiq gateway` will run, decided before any worker starts."""

    config_path: Path
    host: str
    port: int
    workers: int
    environment: dict[str, str]
    # set when DATABASE_URL is: LiteLLM's database is migrated before the workers start
    database: DatabaseSetup | None = None


def plan_gateway(
    settings: RouteIQSettings,
    *,
    config: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> GatewayPlan:
    """Check the settings, the LiteLLM config and, with DATABASE_URL, LiteLLM's Prisma client;
    raise SettingsError/GatewayConfigError/DatabaseError naming the cause."""
    if settings.master_key is None:
        raise SettingsError(
            "LITELLM_MASTER_KEY: required by the gateway (LiteLLM refuses to start without it); "
            'generate one with: export LITELLM_MASTER_KEY="sk-$(openssl rand -hex 32)"'
        )
    if workers is not None and workers < 1:
        raise SettingsError(f"--workers: must be at least 1 (got {workers})")
    config_path = config or settings.config_path
    if config_path is None:
        config_path = demo_config_path()
        logger.warning(
            "no LITELLM_CONFIG_PATH or --config: serving the embedded demo config (mock responses)"
        )
    litellm_config = load_litellm_config(config_path)
    for setting in litellm_config.overridden_settings:
        logger.warning(
            f"{setting} in {config_path} has no effect: RouteIQ's {settings.strategy} routes every request"
        )
    if settings.cb_enabled:
        for setting in litellm_config.cooldown_settings:
            logger.warning(
                f"{setting} in {config_path} has no effect: RouteIQ's circuit breakers (ROUTEIQ_CB_*) "
                "replace LiteLLM's cooldowns; set ROUTEIQ_CB_ENABLED=false to keep LiteLLM's"
            )
    for variable in not_yet_acted_on(settings):
        logger.warning(f"{variable} is set, but this RouteIQ version does not act on it yet")
    database = None
    if settings.database_url is not None:
        check_prisma_client()
        database = DatabaseSetup(litellm_config.general_settings.get("disable_prisma_schema_update"))
    profile = strategy_class(settings.strategy).cpu_profile
    count = workers or settings.workers or default_workers(profile, available_cpus())
    environment = {
        "CONFIG_FILE_PATH": str(config_path.resolve()),
        "LITELLM_CONFIG_PATH": str(config_path.resolve()),
        # no network at start-up: LiteLLM would otherwise fetch its model cost map
        "LITELLM_LOCAL_MODEL_COST_MAP": os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        "JSON_LOGS": "True",
    }
    return GatewayPlan(
        config_path, host or settings.host, port or settings.port, count, environment, database
    )


def exit_without_final_collection() -> None:
    """Make this process's exit skip the interpreter's last garbage collection.

    At exit, Python collects every object still alive: in a gateway process (LiteLLM, and torch
    with a trained router) that is millions of objects and took seconds of CPU after the server
    had finished, more on a loaded machine (gateways took 14-15 s to exit after SIGTERM, their
    workers waiting to be reaped). Freezing the heap moves it out of the collector's reach; the
    atexit handlers registered after this one (LiteLLM's flushes, OpenTelemetry's shutdown) still
    run before it, and the operating system frees the memory. Call it early: atexit handlers run
    last-registered first.
    """
    atexit.register(gc.freeze)


def _exit_after_shutdown(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def run_gateway(plan: GatewayPlan, settings: RouteIQSettings) -> int:
    """Set up LiteLLM's database (with DATABASE_URL), then run the workers until they stop.

    Returns the process exit code; raises DatabaseError when the database cannot be set up.
    """
    os.environ.update(plan.environment)
    exit_without_final_collection()  # the supervisor, and the only worker with --workers 1
    logger.info(
        "starting gateway",
        extra={
            "host": plan.host,
            "port": plan.port,
            "workers": plan.workers,
            "strategy": settings.strategy,
            "config": str(plan.config_path),
        },
    )
    if plan.database is not None:
        set_up_database(plan.database, settings)  # once, before any worker connects to it
    config = uvicorn.Config(
        APP,
        host=plan.host,
        port=plan.port,
        workers=plan.workers,
        log_config=None,
        lifespan="on",
        # RouteIQ drains first (see GatewayApp.drain, bounded by ROUTEIQ_DRAIN_TIMEOUT_SECONDS);
        # this only bounds what is left after it, so that a worker exits within the drain
        # timeout plus about a second
        timeout_graceful_shutdown=1,
        proxy_headers=True,
        # the multi-worker supervisor restarts a worker that does not answer its ping in time;
        # uvicorn's 5 s kills workers that start on a starved CPU or load a trained router
        timeout_worker_healthcheck=math.ceil(settings.worker_healthcheck_timeout_seconds),  # typed int
    )
    if plan.workers == 1:
        # uvicorn re-raises a handled SIGTERM once it has shut down, to whatever handler it found
        # installed; make that a clean exit, as the multi-worker supervisor's is
        signal.signal(signal.SIGTERM, _exit_after_shutdown)
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return STARTUP_FAILURE if failed else 0
