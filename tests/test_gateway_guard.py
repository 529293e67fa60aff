"""The request guard: client mistakes are 4xx with an OpenAI-style body, slow clients get 408,
a wrong key without a database is 401, the breaker 503 says circuit_open with Retry-After.

Unit tests drive the guard inside GatewayApp around a stand-in for LiteLLM; the last ones go
through a real gateway with the official openai client."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from routeiq_router.gateway import guard
from routeiq_router.gateway.app import GatewayApp, Message, Receive, Scope, Send
from routeiq_router.routing import AllBreakersOpenError
from routeiq_router.settings import load_settings
from tests.gateway_process import MASTER_KEY, GatewayProcess, gateway_environment
from tests.ports import free_port

GOOD = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


class Echo:
    """Stands in for LiteLLM: answers 200 with the body it received, or a canned error."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.answer: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        status, headers, payload = self.answer or (200, [(b"content-type", b"application/json")], body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def make_app(**env: str) -> tuple[GatewayApp, Echo]:
    inner = Echo()
    app = GatewayApp(inner, load_settings(env), lambda: None)
    return app, inner


def client(app: GatewayApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


async def post(
    app: GatewayApp, body: bytes | str, path: str = "/v1/chat/completions", **headers: str
) -> httpx.Response:
    async with client(app) as http:
        return await http.post(path, content=body, headers={"content-type": "application/json", **headers})


def error_of(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


# ---- the routes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/v1/chat/completions", "chat"),
        ("POST", "/chat/completions", "chat"),
        ("POST", "/openai/deployments/gpt/chat/completions", "chat"),
        ("POST", "/v1/completions", "completions"),
        ("POST", "/engines/gpt/completions/", "completions"),
        ("POST", "/v1/embeddings", "embeddings"),
        ("POST", "/embeddings", "embeddings"),
        ("POST", "/v1/responses", "responses"),
        ("GET", "/v1/chat/completions", None),
        ("POST", "/v1/models", None),
        ("POST", "/key/generate", None),
    ],
)
def test_the_openai_request_routes_are_guarded(method: str, path: str, kind: str | None) -> None:
    assert guard.guarded_kind(method, path) == kind


# ---- bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        ("null", "invalid_body", "must be a JSON object, not null"),
        ("[]", "invalid_body", "not an array"),
        ("123", "invalid_body", "not a number"),
        ("true", "invalid_body", "not a boolean"),
        ('"text"', "invalid_body", "not a string"),
        ("", "invalid_body", "empty"),
        ('{"model": "chat", "messages": [', "invalid_json", "not valid JSON"),
        (b'{"model": "\xff\xfe"}', "invalid_json", "not valid JSON"),
        ("[" * 5000 + "]" * 5000, "nesting_too_deep", "more than 64 levels"),
        # Python's parser takes these, JSON does not: LiteLLM would fail to send them on (500)
        ('{"model": "chat", "temperature": NaN}', "invalid_json", "NaN, Infinity or out of range"),
        ('{"model": "chat", "temperature": -Infinity}', "invalid_json", "NaN, Infinity or out of range"),
        ('{"model": "chat", "top_p": 1e400}', "invalid_json", "NaN, Infinity or out of range"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400_before_litellm(
    body: str | bytes, code: str, says: str
) -> None:
    app, inner = make_app()
    response = await post(app, body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert says in error["message"]
    assert inner.bodies == []


async def test_nesting_is_limited_to_64_levels_without_recursion() -> None:
    def nested(depth: int) -> dict[str, Any]:
        value: Any = 1
        for _ in range(depth - 1):
            value = {"a": value}
        return {"model": "chat", "messages": GOOD["messages"], "metadata": value}

    app, inner = make_app()
    assert (await post(app, json.dumps(nested(64)))).status_code == 200  # the body itself is level 1
    response = await post(app, json.dumps(nested(65)))
    assert response.status_code == 400
    assert error_of(response)["code"] == "nesting_too_deep"
    assert len(inner.bodies) == 1
    # far deeper than the interpreter's recursion limit: parsed or refused, never a crash
    deep = '{"model": "chat", "metadata": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001
    assert (await post(app, deep)).status_code == 400


@pytest.mark.parametrize(
    ("change", "param", "expected"),
    [
        ({"messages": 5}, "messages", "an array of message objects"),
        ({"messages": "hello"}, "messages", "an array of message objects"),
        ({"messages": [5]}, "messages[0]", "an object"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role", "a string"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "a string, an array"),
        ({"messages": [{"role": "user", "content": {"a": 1}}]}, "messages[0].content", "a string"),
        ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]", "an object"),
        (
            {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages[0].content[0].type",
            "a string",
        ),
        ({"messages": [{"role": "user", "content": "x", "name": 1}]}, "messages[0].name", "a string"),
        ({"messages": [{"role": "assistant", "tool_calls": "x"}]}, "messages[0].tool_calls", "an array"),
        ({"model": 5}, "model", "a string"),
        ({"model": ["chat"]}, "model", "a string"),
        ({"stream": "yes"}, "stream", "a boolean"),
        ({"stream_options": []}, "stream_options", "an object"),
        ({"metadata": 5}, "metadata", "an object"),
        ({"metadata": '{"a": 1}'}, "metadata", "an object"),
        ({"metadata": []}, "metadata", "an object"),
        ({"response_format": "json"}, "response_format", "an object"),
        ({"tools": {}}, "tools", "an array of objects"),
        ({"tools": [1]}, "tools", "an array of objects"),
        ({"tool_choice": 1}, "tool_choice", "a string or an object"),
        ({"user": 1}, "user", "a string"),
        ({"n": True}, "n", "an integer"),
        ({"max_tokens": "10"}, "max_tokens", "an integer"),
        ({"temperature": "hot"}, "temperature", "a number"),
        ({"stop": [1]}, "stop", "a string or an array of strings"),
    ],
)
async def test_wrong_types_in_the_fields_read_are_400_naming_the_field(
    change: dict[str, Any], param: str, expected: str
) -> None:
    app, inner = make_app()
    response = await post(app, json.dumps({**GOOD, **change}))
    assert response.status_code == 400
    error = error_of(response)
    assert error == {
        "message": error["message"],
        "type": "invalid_request_error",
        "param": param,
        "code": "invalid_type",
    }
    assert error["message"].startswith(f"'{param}' must be {expected}")
    assert inner.bodies == []


async def test_the_message_names_the_problem_never_the_value() -> None:
    secret = "sk-planted-secret-value-0123456789"
    app, _ = make_app()
    for change in ({"model": [secret]}, {"messages": secret}, {"metadata": [secret]}, {"user": {secret: 1}}):
        response = await post(app, json.dumps({**GOOD, **change}))
        assert response.status_code == 400
        assert secret not in response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": "m", "prompt": 5}),
        ("/v1/embeddings", {"model": "m", "input": {"text": "x"}}),
        ("/v1/responses", {"model": "m", "input": 5}),
        ("/v1/completions", {"model": "m", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}),
    ],
)
async def test_the_input_of_other_routes_is_checked(path: str, body: dict[str, Any]) -> None:
    app, _ = make_app()
    response = await post(app, json.dumps(body), path=path)
    assert response.status_code == 400
    assert error_of(response)["param"] in {"prompt", "input", "messages"}


@pytest.mark.parametrize(
    "body",
    [
        GOOD,
        {
            **GOOD,
            "stream": True,
            "metadata": {"conversation_id": "c1"},
            "response_format": {"type": "json_object"},
        },
        {**GOOD, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        {**GOOD, "messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]},
        {**GOOD, "temperature": 0, "top_p": 0.5, "n": 1, "stop": "x", "user": "u", "tool_choice": "auto"},
        {**GOOD, "model": None, "stream": None, "extra_field": {"anything": [1, "x"]}},
        {"model": "chat"},  # missing messages: LiteLLM's own 400
    ],
)
async def test_a_good_body_reaches_litellm_byte_for_byte(body: dict[str, Any]) -> None:
    app, inner = make_app()
    raw = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    response = await post(app, raw)
    assert response.status_code == 200
    assert inner.bodies == [raw]


async def test_form_bodies_pass_unchecked_and_other_routes_are_untouched() -> None:
    app, inner = make_app()
    form = await post(app, "model=chat", **{"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 200
    other = await post(app, "null", path="/key/generate")
    assert other.status_code == 200
    assert inner.bodies == [b"model=chat", b"null"]


# ---- size and time ----------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_declared_or_streamed() -> None:
    app, inner = make_app(ROUTEIQ_MAX_REQUEST_BODY_BYTES="2048")
    big = json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * 3000}]})
    response = await post(app, big)
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert error_of(response)["code"] == "request_too_large"
    assert "ROUTEIQ_MAX_REQUEST_BODY_BYTES" in error_of(response)["message"]

    async def chunks() -> Any:  # no Content-Length: counted while it arrives
        for _ in range(10):
            yield b" " * 500

    async with client(app) as http:
        streamed = await http.post("/v1/chat/completions", content=chunks())
    assert streamed.status_code == 413
    assert inner.bodies == []
    fits = await post(app, json.dumps(GOOD))
    assert fits.status_code == 200


async def test_a_slow_body_gets_408_within_the_client_timeout() -> None:
    app, inner = make_app(ROUTEIQ_CLIENT_TIMEOUT_SECONDS="0.2")
    sent: list[Message] = []
    never = asyncio.Event()
    first = True

    async def receive() -> Message:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"model"', "more_body": True}
        await never.wait()  # the client stalls
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json")],
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "request_timeout"
    assert "ROUTEIQ_CLIENT_TIMEOUT_SECONDS" in error["message"]
    assert inner.bodies == []


async def test_feedback_refuses_deep_or_malformed_bodies_with_400() -> None:
    app, _ = make_app(LITELLM_MASTER_KEY=MASTER_KEY)
    auth = {"authorization": f"Bearer {MASTER_KEY}"}
    for body in ("[" * 2000 + "]" * 2000, "null", "{", '{"variant": ' * 100 + "1" + "}" * 100):
        response = await post(app, body, path="/routeiq/feedback", **auth)
        assert response.status_code == 400, body[:20]
    too_big = await post(app, "x" * 5000, path="/routeiq/feedback", **auth)
    assert too_big.status_code == 413
    assert "larger than 4096 bytes (the limit of a feedback body)" in error_of(too_big)["message"]


# ---- LiteLLM's answers, corrected -------------------------------------------------------------


async def test_no_connected_db_becomes_401_authentication_error() -> None:
    app, inner = make_app()
    litellm_body = json.dumps(
        {"error": {"message": "No connected db.", "type": "no_db_connection", "param": None, "code": "400"}}
    ).encode()
    inner.answer = (400, [(b"content-type", b"application/json")], litellm_body)
    response = await post(app, json.dumps(GOOD), authorization="Bearer sk-not-the-key")
    assert response.status_code == 401
    error = error_of(response)
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    assert "sk-not-the-key" not in response.text
    assert int(response.headers["content-length"]) == len(response.content)


async def test_other_400s_pass_unchanged() -> None:
    app, inner = make_app()
    body = b'{"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": "400"}}'
    inner.answer = (400, [(b"content-type", b"application/json")], body)
    response = await post(app, json.dumps(GOOD))
    assert response.status_code == 400
    assert response.content == body


async def test_the_breaker_503_is_coded_circuit_open_with_a_clean_message() -> None:
    app, inner = make_app()
    litellm_body = json.dumps(
        {
            "error": {
                "message": "litellm.ServiceUnavailableError: RouteIQ: every deployment of model group "
                "'chat' has an open circuit breaker (a); the first half-opens in 9.2s\n\nLiteLLM: no fallback",
                "type": "service_unavailable",
                "param": None,
                "code": "503",
            }
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"retry-after", b"10"),
        (b"x-routeiq-error", b"circuit_open"),
    ]
    inner.answer = (503, headers, litellm_body)
    response = await post(app, json.dumps(GOOD))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "10"
    assert "x-routeiq-error" not in response.headers
    assert error_of(response) == {
        "message": "every deployment of model group 'chat' has an open circuit breaker (a); "
        "the first half-opens in 9.2s",
        "type": "service_unavailable",
        "param": None,
        "code": "circuit_open",
    }


def test_all_breakers_open_carries_retry_after_in_whole_seconds() -> None:
    error = AllBreakersOpenError(message="m", llm_provider="routeiq", model="chat", retry_after=9.2)
    assert error.status_code == 503
    assert error.headers == {"retry-after": "10", "x-routeiq-error": "circuit_open"}
    assert error.type == "service_unavailable"
    soon = AllBreakersOpenError(message="m", llm_provider="routeiq", model="chat", retry_after=0.01)
    assert soon.headers["retry-after"] == "1"


# ---- through a real gateway -------------------------------------------------------------------

CONFIG = """
model_list:
  - model_name: chat
    litellm_params: {{model: openai/chat-a, api_key: sk-mock, mock_response: "answer"}}
    model_info: {{id: chat-a}}
  - model_name: down
    litellm_params: {{model: openai/down, api_key: sk-mock, api_base: "http://127.0.0.1:{dead}/v1"}}
    model_info: {{id: down-a}}
router_settings:
  num_retries: 0
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("guard")
    config = directory / "config.yaml"
    config.write_text(CONFIG.format(dead=free_port()))
    env = gateway_environment(
        ROUTEIQ_CB_FAILURE_THRESHOLD="1",
        ROUTEIQ_CLIENT_TIMEOUT_SECONDS="3",
        ROUTEIQ_MAX_REQUEST_BODY_BYTES="65536",
    )
    process = GatewayProcess(
        ["--config", str(config), "--workers", "1"], free_port(), directory / "gw.log", env
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def openai_client(gateway: GatewayProcess, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0, timeout=30)


@pytest.mark.slow
def test_the_openai_client_sees_bad_request_and_authentication_errors(gateway: GatewayProcess) -> None:
    client = openai_client(gateway)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": 5}])  # type: ignore[misc,list-item]
    assert bad.value.code == "invalid_type"
    assert bad.value.param == "messages[0].content"
    with pytest.raises(openai.AuthenticationError) as denied:
        openai_client(gateway, "sk-wrong-key-0123456789").chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    assert denied.value.status_code == 401
    assert "sk-wrong-key-0123456789" not in str(denied.value)
    answer = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "answer"


@pytest.mark.slow
def test_all_breakers_open_is_503_circuit_open_with_retry_after(gateway: GatewayProcess) -> None:
    client = openai_client(gateway)
    with pytest.raises(openai.APIError):  # the refused connection opens the breaker (threshold 1)
        client.chat.completions.create(model="down", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="down", messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 503
    assert 1 <= int(failed.value.response.headers["retry-after"]) <= 31
    assert failed.value.code == "circuit_open"
    assert failed.value.type == "service_unavailable"
    assert "every deployment of model group 'down' has an open circuit breaker" in failed.value.message


@pytest.mark.slow
def test_a_stalled_body_is_answered_408_and_the_connection_closed(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"model"'
        )
        received = b""
        while chunk := connection.recv(4096):  # until the gateway closes the connection
            received += chunk
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b'"request_timeout"' in received


@pytest.mark.slow
def test_an_oversized_body_is_413_through_the_gateway(gateway: GatewayProcess, tmp_path: Path) -> None:
    response = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        content=b"{" + b" " * 70_000 + b"}",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
