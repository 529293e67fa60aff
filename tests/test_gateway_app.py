"""GatewayApp as pure ASGI around a stand-in for LiteLLM's app: health, drain, limits, headers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from litellm.router import Router

from routeiq_router import decisions
from routeiq_router.gateway.app import GatewayApp, Message, Receive, Scope, Send
from routeiq_router.routing import installed_strategy
from routeiq_router.settings import load_settings

MODEL_LIST = [
    {
        "model_name": "chat",
        "litellm_params": {"model": "openai/a", "mock_response": "hi"},
        "model_info": {"id": "a"},
    }
]


class StandIn:
    """Answers 200 after `release` is set; records a routing decision like the strategy does."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.lifespan_messages: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            self.lifespan_messages.append(message["type"])
            await send({"type": "lifespan.startup.complete"})
            return
        await self.release.wait()
        decisions.record(decisions.Decision("round-robin", "chat", "a", 0.25))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


def make_app(router: Any, **env: str) -> tuple[GatewayApp, StandIn]:
    inner = StandIn()
    app = GatewayApp(inner, load_settings(env), lambda: router)
    return app, inner


async def run_lifespan(app: GatewayApp) -> Message:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    return sent[-1]


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


def client(app: GatewayApp) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_not_ready_until_started_then_ready_with_the_strategy_installed() -> None:
    router = Router(model_list=MODEL_LIST)
    app, _ = make_app(router, ROUTEIQ_STRATEGY="least-busy")
    async with client(app) as http:
        assert (await http.get("/_health/live")).status_code == 200
        before = await http.get("/_health/ready")
        assert before.status_code == 503
        assert before.json()["checks"]["strategy_installed"] is False
        assert (await run_lifespan(app))["type"] == "lifespan.startup.complete"
        after = await http.get("/_health/ready")
        assert after.status_code == 200
        body = after.json()
        assert body["status"] == "ready"
        assert body["strategy"] == "least-busy"
        assert body["checks"] == {
            "config_loaded": True,
            "strategy_installed": True,
            "draining": False,
            "redis": "disabled",  # no REDIS_URL: in-memory state
        }
        assert body["state"]["gateway"] == "default/routeiq"
        assert body["state"]["open_breakers"] == []
    installed = installed_strategy(router)
    assert installed is not None
    assert installed.strategy.name == "least-busy"


async def test_start_up_fails_with_the_cause_when_litellm_loaded_no_router() -> None:
    app, _ = make_app(None)
    last = await run_lifespan(app)
    assert last["type"] == "lifespan.startup.failed"
    assert "LiteLLM loaded no router" in last["message"]
    async with client(app) as http:
        ready = await http.get("/_health/ready")
    assert ready.status_code == 503
    assert "LiteLLM loaded no router" in ready.json()["error"]


async def test_decision_headers_are_added_to_the_response() -> None:
    app, _ = make_app(Router(model_list=MODEL_LIST))
    await run_lifespan(app)
    async with client(app) as http:
        response = await http.post("/v1/chat/completions", json={})
    assert response.headers["x-routeiq-strategy"] == "round-robin"
    assert response.headers["x-routeiq-decision-ms"] == "0.250"
    assert "x-routeiq-variant" not in response.headers


async def test_unknown_health_path_is_404_with_a_message() -> None:
    app, _ = make_app(None)
    async with client(app) as http:
        response = await http.get("/_health/startup")
    assert response.status_code == 404
    assert "/_health/live or /_health/ready" in response.json()["error"]["message"]


async def test_router_replaced_by_the_proxy_gets_the_strategy_too() -> None:
    routers = [Router(model_list=MODEL_LIST)]
    inner = StandIn()
    app = GatewayApp(inner, load_settings({}), lambda: routers[-1])
    await run_lifespan(app)
    routers.append(Router(model_list=MODEL_LIST))
    async with client(app) as http:
        await http.post("/v1/chat/completions", json={})
    assert installed_strategy(routers[-1]) is not None


async def test_concurrency_limit_answers_503_beyond_it() -> None:
    app, inner = make_app(Router(model_list=MODEL_LIST), ROUTEIQ_MAX_CONCURRENT_REQUESTS="2")
    await run_lifespan(app)
    inner.release.clear()
    async with client(app) as http:
        held = [asyncio.create_task(http.post("/v1/chat/completions", json={})) for _ in range(2)]
        await until(lambda: app.state.in_flight >= 2)
        rejected = await http.post("/v1/chat/completions", json={})
        inner.release.set()
        served = await asyncio.gather(*held)
    assert rejected.status_code == 503
    assert "ROUTEIQ_MAX_CONCURRENT_REQUESTS" in rejected.json()["error"]["message"]
    assert [response.status_code for response in served] == [200, 200]


async def started_app_holding_requests(drain_timeout: str) -> tuple[GatewayApp, StandIn, list[int]]:
    """A started app whose requests wait for `inner.release`; SIGTERM hand-overs land in the list."""
    app, inner = make_app(Router(model_list=MODEL_LIST), ROUTEIQ_DRAIN_TIMEOUT_SECONDS=drain_timeout)
    await run_lifespan(app)
    handed_over: list[int] = []
    app._previous_sigterm = lambda signum, frame: handed_over.append(signum)
    inner.release.clear()
    return app, inner, handed_over


async def test_drain_rejects_new_requests_and_waits_for_those_in_flight() -> None:
    app, inner, handed_over = await started_app_holding_requests("5")
    async with client(app) as http:
        in_flight = asyncio.create_task(http.post("/v1/chat/completions", json={}))
        await until(lambda: app.state.in_flight >= 1)
        drain = asyncio.create_task(app.drain())
        await asyncio.sleep(0.05)
        assert (await http.get("/_health/ready")).status_code == 503
        rejected = await http.post("/v1/chat/completions", json={})
        assert handed_over == []  # still waiting for the request in flight
        inner.release.set()
        assert (await in_flight).status_code == 200
        await asyncio.wait_for(drain, 2)
    assert rejected.status_code == 503
    assert rejected.headers["connection"] == "close"
    assert "shutting down" in rejected.json()["error"]["message"]
    assert handed_over == [15]


async def test_drain_gives_up_after_the_timeout() -> None:
    app, inner, handed_over = await started_app_holding_requests("0.2")
    async with client(app) as http:
        stuck = asyncio.create_task(http.post("/v1/chat/completions", json={}))
        await until(lambda: app.state.in_flight >= 1)
        await asyncio.wait_for(app.drain(), 2)
        assert handed_over == [15]
        inner.release.set()
        await stuck


@pytest.fixture(autouse=True)
def _restore_sigterm() -> Any:
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


async def test_feedback_is_counted_for_the_variant_through_redis(redis_server: Any) -> None:
    """`POST /routeiq/feedback` with the master key adds the score to the variant's counters."""
    from redis.asyncio import Redis

    from routeiq_router.state.admin import StateAdmin
    from routeiq_router.state.counters import parse_counters
    from routeiq_router.state.keys import as_text
    from routeiq_router.state.store import VariantSpec

    redis = Redis.from_url(redis_server.url)
    admin = StateAdmin(redis, "default/feedback")
    await admin.set_weights(
        [VariantSpec("control", "round-robin", 50), VariantSpec("candidate", "least-busy", 50)],
        reset_counters=True,
    )
    app, _ = make_app(
        Router(model_list=MODEL_LIST),
        LITELLM_MASTER_KEY="sk-feedback-test",
        REDIS_URL=redis_server.url,
        ROUTEIQ_GATEWAY="default/feedback",
        ROUTEIQ_AB_TESTING_ENABLED="true",
    )
    await run_lifespan(app)
    try:
        await app.routing_state.resync()
        auth = {"authorization": "Bearer sk-feedback-test"}
        async with client(app) as http:
            for score in (4, 5, 0):
                answer = await http.post(
                    "/routeiq/feedback", json={"variant": "candidate", "score": score}, headers=auth
                )
                assert answer.status_code == 200, answer.text
            refused = await http.post("/routeiq/feedback", json={"variant": "candidate", "score": 1})
            assert refused.status_code == 401
            unknown = await http.post("/routeiq/feedback", json={"variant": "nope", "score": 1}, headers=auth)
            assert unknown.status_code == 400
            assert "'nope' is not in the running split (variants: candidate, control)" in unknown.text
            outside = await http.post(
                "/routeiq/feedback", json={"variant": "control", "score": 11}, headers=auth
            )
            assert outside.status_code == 400
            assert "within -10..10" in outside.text
            malformed = await http.post("/routeiq/feedback", content=b"{", headers=auth)
            assert malformed.status_code == 400
            assert (await http.get("/routeiq/feedback", headers=auth)).status_code == 405
        assert await app.routing_state.flush()
        raw = await redis.hgetall(admin.keys.ab_counters)
        counters = parse_counters({as_text(k): int(v) for k, v in raw.items()})
        assert counters["candidate"].feedback_count == 3
        assert counters["candidate"].feedback_milli_sum == 9000
        assert counters["candidate"].feedback_milli_sq == 41_000_000
        assert counters.get("control") is None or counters["control"].feedback_count == 0
    finally:
        await app.routing_state.close()
        await redis.aclose()
