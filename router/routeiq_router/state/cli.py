"""`routeiq state ...`: read and change a gateway's shared routing state in Redis (REDIS_URL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import typer
from redis.asyncio import Redis
from redis.exceptions import RedisError

from routeiq_router.settings import RouteIQSettings, SettingsError, load_settings
from routeiq_router.state.admin import StateAdmin
from routeiq_router.state.breakers import BreakerPolicy
from routeiq_router.state.variants import StateError, parse_variant_argument
from routeiq_router.strategies import registry
from routeiq_router.strategies.registry import names

__all__ = ["state_app"]

state_app = typer.Typer(
    name="state",
    help="Read and change a gateway's shared routing state in Redis (REDIS_URL).",
    no_args_is_help=True,
)
weights_app = typer.Typer(help="The A/B split between strategies (ab:weights).", no_args_is_help=True)
strategy_app = typer.Typer(help="The active strategy override (strategy:active).", no_args_is_help=True)
state_app.add_typer(weights_app, name="weights")
state_app.add_typer(strategy_app, name="strategy")

T = TypeVar("T")

GatewayOption = Annotated[
    str | None,
    typer.Option("--gateway", "-g", help="NAMESPACE/NAME of the gateway (default: ROUTEIQ_GATEWAY)"),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"routeiq: error: {message}", err=True)
    return typer.Exit(2)


def _settings() -> RouteIQSettings:
    try:
        return load_settings()
    except SettingsError as error:
        raise _fail(str(error)) from None


def _run(gateway: str | None, action: Callable[[StateAdmin, RouteIQSettings], Awaitable[T]]) -> T:
    settings = _settings()
    if settings.redis_url is None:
        raise _fail(
            "REDIS_URL is not set: the shared routing state lives in Redis (redis://[:password@]host:port/db)"
        )
    target = gateway or settings.gateway
    try:
        RouteIQSettings.model_validate({"gateway": target})
    except Exception:
        raise _fail(
            f"--gateway {target!r}: expected NAMESPACE/NAME in lowercase DNS labels, e.g. prod/routeiq"
        ) from None
    url = settings.redis_url.get_secret_value()
    where = urlsplit(url).netloc.rpartition("@")[2] or url.split("://", 1)[0]  # never the password

    async def main() -> T:
        client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            return await action(StateAdmin(client, target, registry.is_known), settings)
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    except StateError as error:
        raise _fail(str(error)) from None
    except RedisError as error:
        raise _fail(f"Redis at {where}: {type(error).__name__}: {error}") from None


def _policy(settings: RouteIQSettings) -> BreakerPolicy:
    return BreakerPolicy(
        failure_threshold=settings.cb_failure_threshold,
        window_seconds=settings.cb_window_seconds,
        open_seconds=settings.cb_timeout_seconds,
        half_open_probes=settings.cb_half_open_probes,
    )


@state_app.command("show")
def show(gateway: GatewayOption = None) -> None:
    """Print the gateway's variants, strategy override, per-variant counters and open breakers (JSON)."""

    async def action(admin: StateAdmin, settings: RouteIQSettings) -> dict[str, Any]:
        return await admin.show(_policy(settings))

    typer.echo(json.dumps(_run(gateway, action), indent=2))


@weights_app.command("set")
def weights_set(
    variants: Annotated[
        list[str],
        typer.Argument(
            help="VARIANT=STRATEGY:WEIGHT ..., e.g. control=round-robin:70 candidate=least-busy:30"
        ),
    ],
    gateway: GatewayOption = None,
    reset_counters: Annotated[
        bool, typer.Option("--reset-counters", help="Also zero the per-variant outcome counters")
    ] = False,
) -> None:
    """Replace the A/B split; every worker applies it within a second (pub/sub)."""
    try:
        parsed = [parse_variant_argument(argument) for argument in variants]
    except StateError as error:
        raise _fail(str(error)) from None

    async def action(admin: StateAdmin, settings: RouteIQSettings) -> None:
        await admin.set_weights(parsed, reset_counters=reset_counters)

    _run(gateway, action)
    total = sum(v.weight for v in parsed)
    shares = ", ".join(f"{v.name}={v.strategy} {100 * v.weight / total:.1f}%" for v in parsed)
    typer.echo(f"weights set: {shares}")
    if not _settings().ab_testing_enabled:
        typer.echo(
            "routeiq: note: gateways apply the split only with ROUTEIQ_AB_TESTING_ENABLED=true", err=True
        )


@weights_app.command("clear")
def weights_clear(gateway: GatewayOption = None) -> None:
    """End the A/B split: every worker goes back to the active or configured strategy."""

    async def action(admin: StateAdmin, settings: RouteIQSettings) -> None:
        await admin.set_weights([])

    _run(gateway, action)
    typer.echo("weights cleared")


@strategy_app.command("set")
def strategy_set(
    name: Annotated[str, typer.Argument(help="A strategy name, see `routeiq strategies`")],
    gateway: GatewayOption = None,
) -> None:
    """Override the gateway's configured strategy on every worker (unless an A/B split runs)."""

    async def action(admin: StateAdmin, settings: RouteIQSettings) -> None:
        await admin.set_active_strategy(name)

    if not registry.is_known(name):
        raise _fail(f"unknown strategy {name!r}; known: {', '.join(names())}")
    _run(gateway, action)
    typer.echo(f"active strategy set: {name}")


@strategy_app.command("clear")
def strategy_clear(gateway: GatewayOption = None) -> None:
    """Remove the override: workers use ROUTEIQ_STRATEGY again."""

    async def action(admin: StateAdmin, settings: RouteIQSettings) -> None:
        await admin.set_active_strategy(None)

    _run(gateway, action)
    typer.echo("active strategy cleared")
