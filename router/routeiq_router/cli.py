"""The `routeiq` command."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Annotated

import typer

from routeiq_router.configuration import effective_configuration, render_settings_reference
from routeiq_router.settings import RouteIQSettings, SettingsError, load_settings, unknown_variable_warnings
from routeiq_router.strategies import names, strategy_class

__all__ = ["app", "main"]

app = typer.Typer(
    name="routeiq",
    help="RouteIQ: trained LLM routing inside LiteLLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"routeiq: error: {message}", err=True)
    return typer.Exit(code)


def _settings() -> RouteIQSettings:
    for warning in unknown_variable_warnings():
        typer.echo(f"routeiq: warning: {warning}", err=True)
    try:
        return load_settings()
    except SettingsError as error:
        raise _fail(str(error)) from None


@app.command()
def gateway(
    config: Annotated[Path | None, typer.Option(help="LiteLLM config (default: LITELLM_CONFIG_PATH)")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default: ROUTEIQ_HOST)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default: ROUTEIQ_PORT)")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Worker processes (default: ROUTEIQ_WORKERS or per CPU)")
    ] = None,
) -> None:
    """Run the LiteLLM proxy with RouteIQ routing in every worker."""
    settings = _settings()
    from routeiq_router.gateway.config import GatewayConfigError
    from routeiq_router.gateway.database import DatabaseError
    from routeiq_router.gateway.logs import configure_logging
    from routeiq_router.gateway.server import plan_gateway, run_gateway
    from routeiq_router.gateway.telemetry import MetricsDirectory

    configure_logging(settings.log_level, settings.otel_service_name)
    # before anything imports prometheus_client: every worker then writes its metrics there
    metrics = MetricsDirectory.create() if settings.metrics_port else None
    try:
        plan = plan_gateway(settings, config=config, host=host, port=port, workers=workers)
        if metrics is not None:
            if settings.metrics_port == plan.port:
                raise SettingsError(
                    f"ROUTEIQ_METRICS_PORT: {settings.metrics_port} is the gateway's serving port; "
                    "choose another port, or 0 to turn the metrics listener off"
                )
            metrics.serve(plan.host, settings.metrics_port)  # a busy port stops us before any worker
        code = run_gateway(plan, settings)
    except (SettingsError, GatewayConfigError, DatabaseError) as error:
        raise _fail(str(error)) from None
    finally:
        if metrics is not None:
            metrics.close()
    raise typer.Exit(code)


@app.command("config")
def show_config(
    reference: Annotated[
        bool, typer.Option("--reference", help="Print the Markdown reference of every variable instead")
    ] = False,
) -> None:
    """Print the effective configuration, secrets redacted."""
    if reference:
        typer.echo(render_settings_reference(), nl=False)
        return
    settings = _settings()
    rows = effective_configuration(settings)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name.ljust(width)}  {value}")


@app.command()
def strategies() -> None:
    """List the routing strategies and their CPU profile."""
    for name in names():
        typer.echo(f"{name}\t{strategy_class(name).cpu_profile.value}")


@app.command("version")
def show_version() -> None:
    """Print RouteIQ's version."""
    typer.echo(version("routeiq"))


def _register_state() -> None:
    try:
        from routeiq_router.state.cli import state_app
    except ImportError:  # installed without the redis client (an operator-only install)
        return

    app.add_typer(state_app, name="state")


def _register_builtin(module_name: str) -> None:
    """Commands of a RouteIQ module whose dependencies come with an extra (`ml`): a module
    exposes `register(app)`; it is skipped when its extra is not installed."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # a third-party dependency of the extra is missing: skip; a broken RouteIQ import: raise
        missing = error.name or ""
        if missing.startswith("routeiq_router") and not module_name.startswith(missing):
            raise
        return
    module.register(app)


def _register_plugins() -> None:
    """Subcommands of installed extras (the operator's `crds`, `validate`, ...), by entry point."""
    for entry_point in entry_points(group="routeiq.commands"):
        try:
            register = entry_point.load()
        except ImportError:  # the extra's dependencies are not installed
            continue
        register(app)


def main() -> None:
    _register_state()
    for module_name in ("routeiq_router.artifacts.cli", "routeiq_router.ml.cli"):
        _register_builtin(module_name)
    _register_plugins()
    app(prog_name="routeiq")


if __name__ == "__main__":
    main()
