"""A fuzz of one real gateway with ~300 malformed requests, generated from a fixed seed.

Whatever a client sends (non-object bodies, wrong types, deep nesting, huge or truncated
bodies, invalid UTF-8, odd content types, bad keys, missing or wrong credentials), the gateway
answers with a 4xx, never a 5xx; it is still alive afterwards and still routes a good request;
and neither the master key nor a provider key planted in the config ever appears in a response
or in the gateway's log."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.fake_openai import fake_openai
from tests.gateway_process import MASTER_KEY, GatewayProcess, gateway_environment
from tests.ports import free_port

pytestmark = pytest.mark.slow

SEED = 20261203
PLANTED = "sk-planted-provider-secret-7f3a9c1e5b"
MAX_BODY = 65536
CLIENT_TIMEOUT = "4"
GOOD: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
ROUTES = [
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/routeiq/feedback",
]
FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "metadata",
    "litellm_metadata",
    "user",
    "response_format",
    "tools",
    "tool_choice",
    "n",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "prompt",
    "input",
    "fallbacks",
]

CONFIG = """
model_list:
  - model_name: chat
    litellm_params: {{model: openai/chat-a, api_key: {planted}, api_base: "{api_base}"}}
    model_info: {{id: chat-a}}
  - model_name: embed
    litellm_params: {{model: openai/embed-a, api_key: {planted}, mock_response: [0.1, 0.2]}}
    model_info: {{id: embed-a}}
router_settings:
  num_retries: 0
"""


@dataclass
class Case:
    name: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "bool", "null", "list", "dict", "big", "unicode"]
    kind = rng.choice(kinds if depth < 3 else kinds[:5])
    if kind == "int":
        return rng.randint(-(2**70), 2**70)
    if kind == "float":
        return rng.uniform(-1e308, 1e308)
    if kind == "str":
        return "".join(rng.choice('abc{}[]"\\ \n\t') for _ in range(rng.randint(0, 20)))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "dict":
        return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randint(0, 4))}
    if kind == "big":
        return "x" * rng.randint(1000, 20000)
    return "".join(chr(rng.randint(0x80, 0x2FFFF)) for _ in range(rng.randint(1, 10)))


def _nested(rng: random.Random, depth: int) -> str:
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    return opener * depth + "1" + closer * depth


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def generate(rng: random.Random) -> list[Case]:
    """~300 malformed requests, the same ones on every run."""
    cases: list[Case] = []
    add = cases.append
    for text in ["null", "[]", "123", "true", "false", '"text"', "1.5", "-0", "[1, 2]", "[{}]"]:
        for path in rng.sample(ROUTES, 3):
            add(Case(f"non-object {text} {path}", path, text.encode()))
    for index in range(100):  # wrong types in the fields the gateway and LiteLLM read
        document: dict[str, Any] = json.loads(json.dumps(GOOD))
        for name in rng.sample(FIELDS, rng.randint(1, 3)):
            document[name] = _random_value(rng)
        if rng.random() < 0.4:  # or inside a message
            message: dict[str, Any] = {"role": _random_value(rng), "content": _random_value(rng)}
            if rng.random() < 0.5:
                message = {"role": "user", rng.choice(["content", "name", "tool_calls"]): _random_value(rng)}
            document["messages"] = [message]
        # not /v1/responses: the fake upstream speaks chat completions only
        add(Case(f"wrong types {index}", rng.choice(ROUTES[:4]), _dumps(document)))
    for _ in range(30):  # deep nesting, in every field and at the top
        depth = rng.choice([65, 100, 999, 1000, 1001, 5000, 20000])
        deep = _nested(rng, depth)
        where = rng.choice(["metadata", "messages", "content", "top", "tools", "feedback"])
        if where == "top":
            raw = deep
        elif where == "content":
            raw = '{"model": "chat", "messages": [{"role": "user", "content": ' + deep + "}]}"
        elif where == "feedback":
            add(Case(f"deep feedback {depth}", "/routeiq/feedback", deep.encode()[:4000]))
            continue
        else:
            raw = (
                '{"model": "chat", "messages": [{"role": "user", "content": "x"}], "'
                + where
                + '": '
                + deep
                + "}"
            )
        add(Case(f"deep {where} {depth}", rng.choice(ROUTES[:5]), raw.encode()))
    for index in range(4):  # over the size limit, declared or chunked
        add(
            Case(
                f"huge {index}",
                "/v1/chat/completions",
                b'{"model": "chat", "x": "' + b"a" * (MAX_BODY + 10) + b'"}',
            )
        )
    good = json.dumps(GOOD).encode()
    for index in range(30):  # truncated JSON
        cut = rng.randint(0, len(good) - 1)
        add(Case(f"truncated {index}", rng.choice(ROUTES), good[:cut]))
    for index in range(20):  # invalid UTF-8, lone surrogates, control characters
        choice = index % 4
        if choice == 0:
            body = (
                b'{"model": "chat", "messages": [{"role": "user", "content": "'
                + bytes(rng.randint(0x80, 0xFF) for _ in range(8))
                + b'"}]}'
            )
        elif choice == 1:
            body = b'{"model": "chat", "messages": [{"role": "user", "content": "\\ud800 lone"}]}'
        elif choice == 2:
            body = b'{"model": "\\udfff", "messages": [{"role": "user", "content": "x"}]}'
        else:
            body = b'{"model": "chat", "messages": [{"role": "user", "content": "a\x00b\x01"}]}'
        add(Case(f"encoding {index}", rng.choice(ROUTES[:5]), body))
    for index in range(20):  # odd keys: empty, long, non-ASCII, duplicated, numbers as text
        key = rng.choice(["", " ", "k" * 10000, "\u202e", "model", "messages", "__proto__", "$where"])
        body = (
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], '
            + _dumps(key)
            + b": "
            + _dumps(_random_value(rng))
            + b"}"
        )
        add(Case(f"keys {index}", rng.choice(ROUTES[:5]), body))
    for _ in range(18):  # odd numbers LiteLLM might trip over
        literal = rng.choice(
            ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "123456789012345678901234567890"]
        )
        name = rng.choice(["temperature", "max_tokens", "n", "top_p", "metadata"])
        body = (
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "'
            + name.encode()
            + b'": '
            + literal.encode()
            + b"}"
        )
        add(Case(f"numbers {name} {literal}", "/v1/chat/completions", body))
    content_types = [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
        "",
    ]
    for index in range(18):  # content types and garbage bytes
        body = rng.choice(
            [good, b"model=chat&messages=hi", bytes(rng.randint(0, 255) for _ in range(64)), b"--xyz--"]
        )
        add(
            Case(
                f"content-type {index}",
                rng.choice(ROUTES[:5]),
                body,
                {"content-type": rng.choice(content_types)},
            )
        )
    for index in range(24):  # credentials: missing, wrong, malformed, the key in odd places
        auth = rng.choice(
            [
                None,
                "Bearer sk-wrong-0123456789",
                "Bearer",
                "Basic dXNlcjpwYXNz",
                "bearer " + MASTER_KEY[:-1],
                "Bearer " + MASTER_KEY + "x",
                "Bearer " + "x" * 5000,
                MASTER_KEY,
            ]
        )
        headers = {"authorization": auth} if auth is not None else {"authorization": ""}
        add(Case(f"auth {index}", rng.choice(ROUTES), rng.choice([good, b"null", b"{"]), headers))
    for index in range(6):  # the wrong method on a guarded route
        add(
            Case(
                f"method {index}",
                rng.choice(ROUTES),
                good,
                method=rng.choice(["GET", "PUT", "DELETE", "PATCH"]),
            )
        )
    return cases


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("fuzz")
    with fake_openai({}) as api_base:
        config = directory / "config.yaml"
        config.write_text(CONFIG.format(planted=PLANTED, api_base=api_base))
        env = gateway_environment(
            ROUTEIQ_MAX_REQUEST_BODY_BYTES=str(MAX_BODY), ROUTEIQ_CLIENT_TIMEOUT_SECONDS=CLIENT_TIMEOUT
        )
        process = GatewayProcess(
            ["--config", str(config), "--workers", "1"], free_port(), directory / "gw.log", env
        )
        try:
            process.wait_ready()
            yield process
        finally:
            process.stop()


def _send(http: httpx.Client, case: Case) -> httpx.Response:
    headers = {"content-type": "application/json", "authorization": f"Bearer {MASTER_KEY}"}
    headers.update(case.headers)
    headers = {k: v for k, v in headers.items() if v}
    return http.request(case.method, case.path, content=case.body, headers=headers)


def _stalled(gateway: GatewayProcess, declared: int, sent: bytes) -> bytes:
    """A request whose body never completes: the answer, read until the gateway closes."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {MASTER_KEY}\r\ncontent-length: {declared}\r\n\r\n".encode()
            + sent
        )
        received = b""
        while chunk := connection.recv(4096):
            received += chunk
    return received


def test_malformed_requests_get_4xx_never_5xx_nor_a_secret(gateway: GatewayProcess) -> None:
    cases = generate(random.Random(SEED))
    assert len(cases) == 300
    failures: list[str] = []
    leaks: list[str] = []
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=gateway.base_url, timeout=60) as http:
        for case in cases:
            response = _send(http, case)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{case.name}: {response.status_code} {response.text[:300]}")
            if MASTER_KEY in response.text or PLANTED in response.text:
                leaks.append(case.name)
    for declared, sent in ((100, b'{"model"'), (MAX_BODY // 2, b"")):  # bodies that never complete
        answer = _stalled(gateway, declared, sent)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert MASTER_KEY.encode() not in answer

    assert not failures, "\n".join(failures)
    assert not leaks, leaks
    assert {400, 401, 413} <= set(statuses), statuses  # the cases reached the guard, auth and the limit
    assert all(400 <= status < 500 or status == 200 for status in statuses), statuses

    # still alive, still routing
    assert gateway.process.poll() is None
    good = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json=GOOD,
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        timeout=60,
    )
    assert good.status_code == 200, good.text
    assert good.json()["choices"][0]["message"]["content"] == "from chat-a"
    assert good.headers["x-routeiq-strategy"] == "round-robin"
    assert httpx.get(f"{gateway.base_url}/_health/ready", timeout=10).status_code == 200

    log = gateway.log()
    assert MASTER_KEY not in log
    assert PLANTED not in log
    assert "maximum recursion depth" not in log
