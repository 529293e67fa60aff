"""The import target of every uvicorn worker: `routeiq_router.gateway.asgi:app`.

`routeiq gateway` validates the settings and the LiteLLM config before it starts the
workers and hands them the config path through `CONFIG_FILE_PATH`, LiteLLM's own variable.
"""

from __future__ import annotations

from typing import Any

from routeiq_router.gateway.app import GatewayApp
from routeiq_router.gateway.logs import configure_logging
from routeiq_router.gateway.server import exit_without_final_collection
from routeiq_router.settings import load_settings

__all__ = ["app"]

exit_without_final_collection()  # before LiteLLM registers its exit handlers, so after them at exit

settings = load_settings()

from litellm._logging import SecretRedactionFilter  # noqa: E402
from litellm.proxy import proxy_server  # noqa: E402

# after LiteLLM has installed its own handlers, which this replaces (keeping its secret redaction)
configure_logging(settings.log_level, settings.otel_service_name, [SecretRedactionFilter()])
otel = None
if settings.otel_exporter_otlp_endpoint is not None:  # OTLP push of traces and metrics
    from routeiq_router.gateway.otel import configure_otel

    otel = configure_otel(settings)


def _current_router() -> Any:
    return proxy_server.llm_router


def _database() -> Any:
    return proxy_server.prisma_client


app = GatewayApp(proxy_server.app, settings, _current_router, _database, otel)
