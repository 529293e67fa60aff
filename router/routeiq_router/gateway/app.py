"""The ASGI application of one gateway worker: LiteLLM's proxy app wrapped by RouteIQ.

The wrapper owns what LiteLLM does not:
- `/_health/live` and `/_health/ready`, answered before LiteLLM's auth;
- installing `RouteIQRoutingStrategy` on the proxy's router once LiteLLM's start-up has
  loaded the config (and again whenever the proxy replaces its router);
- the routing decision headers on every response;
- with `OTEL_EXPORTER_OTLP_ENDPOINT`, a server span per request (continuing the client's W3C
  `traceparent`), current while LiteLLM serves it, so the routing decision span is its child;
- draining on SIGTERM: readiness turns 503, new requests get 503, requests in flight finish
  within `ROUTEIQ_DRAIN_TIMEOUT_SECONDS`, then uvicorn's own shutdown proceeds;
- the per-worker concurrency limit `ROUTEIQ_MAX_CONCURRENT_REQUESTS`;
- the request guard (`guard.py`): bodies of the OpenAI routes read within
  `ROUTEIQ_MAX_REQUEST_BODY_BYTES` (413) and `ROUTEIQ_CLIENT_TIMEOUT_SECONDS` (408), checked
  (JSON object, bounded nesting, field types: 400) and replayed to LiteLLM unchanged; a wrong key
  without a database answered 401; the circuit-breaker 503 coded `circuit_open`;
- the worker's `RoutingState` (shared through Redis when `REDIS_URL` is set): started after
  LiteLLM's start-up, flushed on shutdown, reported in readiness, and told the outcome of each
  request that an A/B variant served (counted once per client request, whatever the retries).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from routeiq_router import decisions, metrics
from routeiq_router.gateway import guard
from routeiq_router.gateway.models import RouterModels
from routeiq_router.settings import RouteIQSettings
from routeiq_router.state.store import RoutingState, StateError, StateOptions
from routeiq_router.strategies import StrategyContext, registry

if TYPE_CHECKING:  # the SDK is imported only where OTEL_EXPORTER_OTLP_ENDPOINT is set
    from routeiq_router.gateway.otel import OtelPipeline

__all__ = ["GatewayApp", "GatewayState", "RouterSource"]

logger = logging.getLogger("routeiq.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RouterSource = Callable[[], Any]
"""Returns the proxy's current `litellm.Router` (or None before the config is loaded)."""

DATABASE_CHECK_SECONDS = 15.0
DATABASE_CHECK_TIMEOUT_SECONDS = 5.0

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class GatewayState:
    """What readiness reports, and the requests in flight, per worker."""

    def __init__(self) -> None:
        self.config_loaded = False
        self.strategy_installed = False
        self.draining = False
        self.startup_error: str | None = None
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def ready(self) -> bool:
        return self.config_loaded and self.strategy_installed and not self.draining

    def request_started(self) -> None:
        self.in_flight += 1
        metrics.requests_in_flight(1)
        self.idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        metrics.requests_in_flight(-1)
        if self.in_flight == 0:
            self.idle.set()


def _json_response(
    status: int, body: dict[str, Any], extra_headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[Message, Message]:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    return (
        {"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])},
        {"type": "http.response.body", "body": payload},
    )


FEEDBACK_PATH = "/routeiq/feedback"
FEEDBACK_MAX_BYTES = 4096


def _is_form(scope: Scope) -> bool:
    for key, value in scope.get("headers") or []:
        if key.lower() == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind in {b"multipart/form-data", b"application/x-www-form-urlencoded"}
    return False


def _error(status: int, message: str, kind: str) -> dict[str, Any]:
    # the shape of LiteLLM's (and OpenAI's) error bodies, so clients parse it as usual
    return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}


class GatewayApp:
    """Pure ASGI middleware around LiteLLM's FastAPI app (no task per request, no body buffering)."""

    def __init__(
        self,
        inner: ASGIApp,
        settings: RouteIQSettings,
        router_source: RouterSource,
        database_source: Callable[[], Any] | None = None,
        otel: OtelPipeline | None = None,
    ) -> None:
        self.inner = inner
        self.otel = otel  # traces and metrics pushed over OTLP, when configured
        self.settings = settings
        self.router_source = router_source
        # LiteLLM's Prisma client (or None), checked for routeiq_database_up with DATABASE_URL
        self.database_source = database_source
        self._database_task: asyncio.Task[None] | None = None
        self.state = GatewayState()
        self.context = StrategyContext()
        self.routing_state = RoutingState(
            StateOptions.from_settings(settings), strategy_known=registry.is_known
        )
        self.models = RouterModels(settings)
        self._installed_on: Any = None
        self._previous_sigterm: _SignalHandler = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        else:
            await self.inner(scope, receive, send)

    # ---- start-up -----------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_after_startup(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await self._on_started()
                except Exception as error:  # start-up must fail with the cause, not hang
                    self.state.startup_error = str(error)
                    logger.error("gateway start-up failed", extra={"error": str(error)})
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
            elif message["type"] == "lifespan.startup.failed":
                logger.error("LiteLLM start-up failed", extra={"error": message.get("message", "")})
            elif message["type"] in {"lifespan.shutdown.complete", "lifespan.shutdown.failed"}:
                await self.routing_state.close()  # flushes the counters still pending
                await self.models.close()
                if self._database_task is not None:
                    self._database_task.cancel()
                if self.otel is not None:  # flush the spans and metrics still queued, bounded
                    await asyncio.to_thread(self.otel.shutdown)
            await send(message)

        await self.inner(scope, receive, send_after_startup)

    async def _on_started(self) -> None:
        router = self.router_source()
        if router is None:
            raise RuntimeError("LiteLLM loaded no router: the config has no model_list")
        self.state.config_loaded = True
        await self.routing_state.start()
        await self.models.start()
        self._ensure_installed(router)
        self._install_drain_handler()
        if self.settings.database_url is not None and self.database_source is not None:
            self._database_task = asyncio.create_task(self._database_loop(), name="routeiq-database-up")
        logger.info(
            "gateway worker ready",
            extra={
                "strategy": self.settings.strategy,
                "drain_timeout_seconds": self.settings.drain_timeout_seconds,
                "gateway": self.settings.gateway,
                "redis": str(self.routing_state.status),
            },
        )

    async def check_database(self) -> bool:
        """Whether LiteLLM's database answers LiteLLM's own health query now (routeiq_database_up)."""
        client = self.database_source() if self.database_source is not None else None
        up = False
        if client is not None:
            try:
                await asyncio.wait_for(client.health_check(), DATABASE_CHECK_TIMEOUT_SECONDS)
                up = True
            except Exception:  # down, slow or refusing: all the same to the gauge
                up = False
        metrics.database_up(up)
        return up

    async def _database_loop(self) -> None:
        while True:
            await self.check_database()
            await asyncio.sleep(DATABASE_CHECK_SECONDS)

    def _ensure_installed(self, router: Any) -> None:
        if router is self._installed_on:
            return
        from routeiq_router.routing import install  # imports litellm; kept off the module's import path

        install(router, self.settings.strategy, self.context, self.routing_state)
        self._installed_on = router
        self.state.strategy_installed = True

    # ---- drain --------------------------------------------------------------------------------

    def _install_drain_handler(self) -> None:
        # uvicorn installed its own SIGTERM handler before the lifespan ran; chain in front of it
        self._loop = asyncio.get_running_loop()
        try:
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread (an embedding server); uvicorn handles SIGTERM as usual
            logger.warning("SIGTERM drain not installed: the gateway does not run in the main thread")

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.state.draining:
            # Supervisors and `timeout` may signal the whole process group as well as the parent,
            # which signals us again: a repeated SIGTERM must not cut the drain short.
            # SIGINT (Ctrl+C) still goes straight to uvicorn's shutdown.
            return
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(lambda: loop.create_task(self.drain(signum, frame)))

    async def drain(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        """Stop taking requests, let those in flight finish (bounded), then shut down."""
        self.state.draining = True
        metrics.draining(True)
        timeout = self.settings.drain_timeout_seconds
        logger.info("draining", extra={"in_flight": self.state.in_flight, "drain_timeout_seconds": timeout})
        try:
            await asyncio.wait_for(self.state.idle.wait(), timeout)
            logger.info("drained")
        except TimeoutError:
            logger.warning("drain timeout reached", extra={"in_flight": self.state.in_flight})
        self._hand_over(signum, frame)

    def _hand_over(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_sigterm
        if callable(previous):
            previous(signum, frame)

    # ---- requests -----------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path.startswith("/_health/"):
            await self._health(path, send)
            return
        if self.otel is None:
            await self._serve(scope, receive, send)
            return
        await self._traced(scope, receive, send)

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`_serve` inside the request's server span."""
        from opentelemetry import propagate, trace

        method = str(scope.get("method", "HTTP"))
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope.get("headers") or []
        }
        parent = propagate.extract(headers)  # W3C traceparent / tracestate (OTEL_PROPAGATORS)
        tracer = trace.get_tracer("routeiq_router.gateway")
        path = str(scope.get("path", ""))
        status = 0

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message.get("status", 0))
            await send(message)

        # FastAPI's native telemetry would start a second server span, outside this one's trace
        scope["fastapi.telemetry"] = None
        with tracer.start_as_current_span(
            f"{method} {path}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": path,
                "url.scheme": str(scope.get("scheme", "http")),
            },
        ) as span:
            try:
                await self._serve(scope, receive, send_with_status)
            finally:
                if status:
                    span.set_attribute("http.response.status_code", status)
                if status >= 500 or not status:
                    span.set_status(trace.StatusCode.ERROR)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path == FEEDBACK_PATH:
            await self._feedback(scope, receive, send)
            return
        if self.state.draining:
            await self._reject(
                send,
                503,
                "the gateway is shutting down; retry the request",
                "service_unavailable",
                [(b"connection", b"close"), (b"retry-after", b"1")],
            )
            return
        limit = self.settings.max_concurrent_requests
        if limit and self.state.in_flight >= limit:
            await self._reject(
                send,
                503,
                f"this worker is serving its limit of {limit} concurrent requests "
                "(ROUTEIQ_MAX_CONCURRENT_REQUESTS); retry the request",
                "service_unavailable",
                [(b"retry-after", b"1")],
            )
            return
        kind = guard.guarded_kind(str(scope.get("method", "")), str(path))
        if kind is not None:
            try:
                body = await guard.read_body(
                    receive,
                    list(scope.get("headers") or []),
                    self.settings.max_request_body_bytes,
                    self.settings.client_timeout_seconds,
                )
                if not _is_form(scope):  # LiteLLM reads form bodies too; those pass unchecked
                    guard.validate_fields(guard.parse_json_object(body), kind)
            except guard.GuardError as error:
                # 408 and 413 leave the rest of the body unread: the connection cannot be reused
                await error.send(send, close=error.status in {408, 413})
                return
            receive = guard.replaying(body, receive)
        send = guard.ErrorRewriter(send)
        router = self.router_source()
        if router is not None and router is not self._installed_on:
            self._ensure_installed(router)  # the proxy rebuilt its router (models added through the API)
        slot = decisions.open_slot()
        started = time.perf_counter()
        status = 500

        async def send_with_decision(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message.get("status", 500))
            if message["type"] == "http.response.start" and slot.decision is not None:
                decision = slot.decision
                headers = list(message.get("headers", []))
                headers.append((b"x-routeiq-strategy", decision.strategy.encode()))
                headers.append((b"x-routeiq-decision-ms", f"{decision.duration_ms:.3f}".encode()))
                if decision.variant is not None:
                    headers.append((b"x-routeiq-variant", decision.variant.encode()))
                message["headers"] = headers
            await send(message)

        self.state.request_started()
        completed = False
        try:
            await self.inner(scope, receive, send_with_decision)
            completed = True
        finally:
            self.state.request_finished()
            decision = slot.decision
            if decision is not None and decision.variant is not None:
                self.routing_state.record_request(
                    decision.variant,
                    time.perf_counter() - started,
                    error=not completed or status >= 500 or status == 429,
                )

    async def _health(self, path: str, send: Send) -> None:
        body: dict[str, Any]
        if path == "/_health/live":
            status, body = 200, {"status": "alive"}
        elif path == "/_health/ready":
            state = self.state
            shared = self.routing_state
            checks = {
                "config_loaded": state.config_loaded,
                "strategy_installed": state.strategy_installed,
                "draining": state.draining,
                # degraded Redis keeps the worker ready: it serves on its last known state
                "redis": str(shared.status),
            }
            ready = state.ready and self.models.ready
            if self.models.required or self.models.variants:
                checks["model_loaded"] = self.models.ready
            body = {
                "status": "ready" if ready else "not ready",
                "worker": shared.worker_id,  # which worker process answered: host:pid:nonce
                "strategy": shared.active_strategy or self.settings.strategy,
                "checks": checks,
                "state": shared.health(),
            }
            if self.models.enabled:
                body["model"] = self.models.health()
            if self._installed_on is not None:  # round-robin in place of a strategy: counted and shown
                from routeiq_router.routing import installed_strategy

                installed = installed_strategy(self._installed_on)
                if installed is not None and (fallbacks := installed.fallbacks()):
                    body["fallbacks"] = fallbacks
            if state.startup_error:
                body["error"] = state.startup_error
            status = 200 if ready else 503
        else:
            status, body = (
                404,
                _error(
                    404, f"unknown health endpoint {path}; use /_health/live or /_health/ready", "not_found"
                ),
            )
        start, payload = _json_response(status, body)
        await send(start)
        await send(payload)

    async def _feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /routeiq/feedback` `{"variant": ..., "score": ...}`: a client's score for a response,
        whose `x-routeiq-variant` header named the variant; counted for the experiment's
        `feedbackScore` metric. Needs the master key (`Authorization: Bearer <LITELLM_MASTER_KEY>`)."""
        if scope.get("method") != "POST":
            await self._reject(send, 405, "use POST", "method_not_allowed", [(b"allow", b"POST")])
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1").removeprefix("Bearer ").strip()
        master = self.settings.master_key
        if master is None or not hmac.compare_digest(given.encode(), master.get_secret_value().encode()):
            await self._reject(
                send, 401, "feedback needs the master key (Authorization: Bearer ...)", "auth_error", []
            )
            return
        try:
            body = await guard.read_body(
                receive,
                list(scope.get("headers") or []),
                FEEDBACK_MAX_BYTES,
                self.settings.client_timeout_seconds,
                "the limit of a feedback body",
            )
            document: Any = guard.parse_json_object(body)
        except guard.GuardError as error:
            if error.status in {408, 413}:
                await error.send(send, close=True)
                return
            document = None
        variant = document.get("variant") if isinstance(document, dict) else None
        score = document.get("score") if isinstance(document, dict) else None
        if not isinstance(variant, str) or isinstance(score, bool) or not isinstance(score, int | float):
            await self._reject(
                send,
                400,
                'expected {"variant": "<the x-routeiq-variant header of the response>", "score": <number>}',
                "invalid_request_error",
                [],
            )
            return
        known = {v.name for v in self.routing_state.variants}
        if variant not in known:
            names = ", ".join(sorted(known)) or "none: no experiment is running"
            await self._reject(
                send,
                400,
                f"variant {variant!r} is not in the running split (variants: {names})",
                "invalid_request_error",
                [],
            )
            return
        try:
            self.routing_state.record_feedback(variant, float(score))
        except StateError as error:
            await self._reject(send, 400, f"score: {error}", "invalid_request_error", [])
            return
        start, payload = _json_response(200, {"status": "recorded", "variant": variant})
        await send(start)
        await send(payload)

    @staticmethod
    async def _reject(
        send: Send, status: int, message: str, kind: str, extra_headers: list[tuple[bytes, bytes]]
    ) -> None:
        start, payload = _json_response(status, _error(status, message, kind), extra_headers)
        await send(start)
        await send(payload)
