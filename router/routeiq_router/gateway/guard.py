"""The request guard: client mistakes answered with a 4xx before LiteLLM sees them.

For the OpenAI request routes (chat completions, completions, embeddings, responses and the
RouteIQ feedback route) the gateway reads the body itself, within
`ROUTEIQ_MAX_REQUEST_BODY_BYTES` (413) and `ROUTEIQ_CLIENT_TIMEOUT_SECONDS` (408), checks that
it is a JSON object of bounded nesting whose fields the gateway and LiteLLM read have the
right types (400), and replays the unchanged bytes to LiteLLM. Every rejection has an
OpenAI-style body naming the field and the problem, never the value.

`ErrorRewriter` corrects two of LiteLLM's own answers on the way out: a wrong key without a
database (LiteLLM: `400 No connected db`) becomes `401 authentication_error`, and the
circuit-breaker 503 gets its `circuit_open` code (its `Retry-After` comes with the error).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "CIRCUIT_OPEN_HEADER",
    "MAX_DEPTH",
    "ErrorRewriter",
    "GuardError",
    "guarded_kind",
    "parse_json_object",
    "read_body",
    "replaying",
    "validate_fields",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays a request body may have."""

CIRCUIT_OPEN_HEADER = b"x-routeiq-error"
"""Set (with the value `circuit_open`) by the breaker's 503; consumed by `ErrorRewriter`."""

_KINDS = {
    "chat/completions": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
    "responses": "responses",
}


def guarded_kind(method: str, path: str) -> str | None:
    """The kind of OpenAI request `method path` is ("chat", "completions", "embeddings",
    "responses"), or None when the guard leaves it alone. Matches LiteLLM's spellings:
    `/v1/chat/completions`, `/chat/completions`, `/openai/deployments/<model>/chat/completions`,
    `/engines/<model>/completions` ..."""
    if method != "POST":
        return None
    path = path.rstrip("/")
    for suffix, kind in _KINDS.items():
        if path == "/" + suffix or path.endswith("/" + suffix):
            if kind == "completions" and path.endswith("/chat/completions"):
                return "chat"
            return kind
    return None


class GuardError(Exception):
    """A client mistake: the status, an OpenAI error type and code, the field (if any)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.kind = kind

    def body(self) -> bytes:
        return json.dumps(
            {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        ).encode()

    async def send(self, send: Send, *, close: bool = False) -> None:
        payload = self.body()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


async def read_body(
    receive: Receive,
    headers: list[tuple[bytes, bytes]],
    limit: int,
    seconds: float,
    limit_name: str = "ROUTEIQ_MAX_REQUEST_BODY_BYTES",
) -> bytes:
    """The whole request body: at most `limit` bytes (413, checked against Content-Length up
    front too), complete within `seconds` of the call (408). Raises GuardError."""
    declared = _header(headers, b"content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length > limit:
            raise _too_large(limit, limit_name)
    chunks: list[bytes] = []
    size = 0
    try:
        # one timeout over the whole body (no task per receive, unlike wait_for)
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise GuardError(
                        400, "the client disconnected before sending the whole body", "client_disconnected"
                    )
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit, limit_name)
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise _timed_out(seconds) from None


def _too_large(limit: int, limit_name: str) -> GuardError:
    return GuardError(
        413,
        f"the request body is larger than {limit} bytes ({limit_name})",
        "request_too_large",
    )


def _timed_out(timeout: float) -> GuardError:
    return GuardError(
        408,
        f"the request body did not arrive within {timeout:g} seconds (ROUTEIQ_CLIENT_TIMEOUT_SECONDS)",
        "request_timeout",
    )


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands `body` over once, then the client's own messages (disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def parse_json_object(body: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """`body` as a JSON object nested at most `max_depth` deep. Raises GuardError (400)."""
    if not body.strip():
        raise GuardError(400, "the request body is empty; expected a JSON object", "invalid_body")
    # a body with fewer brackets than the limit cannot nest deeper than it: skip the walk
    deep_possible = body.count(b"[") + body.count(b"{") > max_depth
    try:
        document = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except _NotFinite:
        raise GuardError(
            400,
            "the request body holds a number JSON cannot represent (NaN, Infinity or out of range)",
            "invalid_json",
        ) from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise GuardError(400, "the request body is not valid JSON", "invalid_json") from None
    if not isinstance(document, dict):
        raise GuardError(
            400, f"the request body must be a JSON object, not {_json_type(document)}", "invalid_body"
        )
    if deep_possible and _depth_exceeds(document, max_depth):
        raise _too_deep(max_depth)
    return document


class _NotFinite(Exception):
    """NaN, Infinity or a float out of range: Python's parser takes them, JSON does not, and
    LiteLLM then fails to send the request on (a 500 that would count against the deployment)."""


def _no_constant(name: str) -> Any:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotFinite(text)
    return value


def _too_deep(max_depth: int) -> GuardError:
    return GuardError(
        400, f"the request body is nested more than {max_depth} levels deep", "nesting_too_deep"
    )


_CONTAINERS = frozenset({dict, list})


def _depth_exceeds(document: Any, max_depth: int) -> bool:
    """Whether objects/arrays nest more than `max_depth` deep (iterative: no recursion limit)."""
    level: list[Any] = [document]
    depth = 1
    while level:  # breadth first, one level at a time; C-speed scans of each container
        if depth > max_depth:
            return True
        below: list[Any] = []
        for value in level:
            children = value.values() if type(value) is dict else value
            kinds = set(map(type, children))  # json.loads makes exact dicts and lists
            if dict in kinds or list in kinds:
                below.extend([child for child in children if type(child) in _CONTAINERS])
        level = below
        depth += 1
    return False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _wrong(param: str, expected: str, value: Any) -> GuardError:
    return GuardError(400, f"'{param}' must be {expected}, not {_json_type(value)}", "invalid_type", param)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# optional top-level fields (null allowed): name -> (check, what it must be)
_COMMON: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (lambda v: isinstance(v, str), "a string"),
    "stream": (lambda v: isinstance(v, bool), "a boolean"),
    "stream_options": (lambda v: isinstance(v, dict), "an object"),
    # a JSON string passes on some of LiteLLM's routes and fails with a 500 on others
    "metadata": (lambda v: isinstance(v, dict), "an object"),
    "litellm_metadata": (lambda v: isinstance(v, dict), "an object"),
    "user": (lambda v: isinstance(v, str), "a string"),
    "response_format": (lambda v: isinstance(v, dict), "an object"),
    "tools": (lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v), "an array of objects"),
    "tool_choice": (lambda v: isinstance(v, str | dict), "a string or an object"),
    "functions": (
        lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v),
        "an array of objects",
    ),
    "n": (_is_integer, "an integer"),
    "max_tokens": (_is_integer, "an integer"),
    "max_completion_tokens": (_is_integer, "an integer"),
    "temperature": (_is_number, "a number"),
    "top_p": (_is_number, "a number"),
    "stop": (
        lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v)),
        "a string or an array of strings",
    ),
    "previous_response_id": (lambda v: isinstance(v, str), "a string"),
    "fallbacks": (lambda v: isinstance(v, list), "an array"),
}

_PROMPT = (
    lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str | int | list) for s in v)),
    "a string or an array",
)
_BY_KIND: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "completions": {"prompt": _PROMPT},
    "embeddings": {"input": _PROMPT},
    "responses": {"input": (lambda v: isinstance(v, str | list), "a string or an array")},
}


def validate_fields(document: dict[str, Any], kind: str) -> None:
    """Raises GuardError (400) for a field of the wrong type among those the gateway and
    LiteLLM read; other fields pass through unchecked (LiteLLM or the provider judges them)."""
    if kind == "completions" and "messages" in document:
        # LiteLLM builds `messages` from `prompt` and fails with a 500 when both are given
        raise GuardError(
            400,
            "'messages' is not a parameter of /completions: send 'prompt', or use /chat/completions",
            "unsupported_parameter",
            "messages",
        )
    checks = {**_COMMON, **_BY_KIND.get(kind, {})}
    for name, (check, expected) in checks.items():
        value = document.get(name)
        if value is not None and not check(value):
            raise _wrong(name, expected, value)
    if kind == "chat" or "messages" in document:
        _validate_messages(document.get("messages"))


def _validate_messages(messages: Any) -> None:
    if messages is None:
        return  # LiteLLM answers a missing `messages` with its own 400
    if not isinstance(messages, list):
        raise _wrong("messages", "an array of message objects", messages)
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _wrong(where, "an object", message)
        role = message.get("role")
        if not isinstance(role, str):
            raise _wrong(f"{where}.role", "a string", role)
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            if not isinstance(content, list):
                raise _wrong(f"{where}.content", "a string, an array of content parts or null", content)
            for part_index, part in enumerate(content):
                if not isinstance(part, dict):
                    raise _wrong(f"{where}.content[{part_index}]", "an object", part)
                if not isinstance(part.get("type"), str):
                    raise _wrong(f"{where}.content[{part_index}].type", "a string", part.get("type"))
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise _wrong(f"{where}.name", "a string", name)
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and not (
            isinstance(tool_calls, list) and all(isinstance(call, dict) for call in tool_calls)
        ):
            raise _wrong(f"{where}.tool_calls", "an array of objects", tool_calls)


# ---- responses on the way out ---------------------------------------------------------------

_REWRITE_MAX = 65536  # error bodies are small; anything larger passes through untouched


class ErrorRewriter:
    """A `send` wrapper that corrects two of LiteLLM's error answers (only 400s and 503s with a
    JSON body are held back, until their body is complete):

    - `400 no_db_connection` (a key that is not the master key, and no database for virtual
      keys) -> `401 authentication_error`, as with a database;
    - the circuit-breaker 503 (marked by the `x-routeiq-error: circuit_open` header, which is
      removed) -> `code: "circuit_open"`.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._start: Message | None = None
        self._chunks: list[bytes] = []
        self._size = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = int(message.get("status", 0))
            headers = list(message.get("headers", []))
            marked = _header(headers, CIRCUIT_OPEN_HEADER) is not None
            if status in {400, 503} or marked:
                self._start = message
                return
            await self._send(message)
            return
        if message["type"] != "http.response.body" or self._start is None:
            await self._send(message)
            return
        self._chunks.append(message.get("body", b""))
        self._size += len(self._chunks[-1])
        if self._size > _REWRITE_MAX:
            await self._flush(message.get("more_body", False))
            return
        if not message.get("more_body", False):
            await self._finish()

    async def _flush(self, more_body: bool) -> None:
        start, self._start = self._start, None
        assert start is not None
        start["headers"] = [(k, v) for k, v in start.get("headers", []) if k.lower() != CIRCUIT_OPEN_HEADER]
        await self._send(start)
        body = b"".join(self._chunks)
        self._chunks = []
        await self._send({"type": "http.response.body", "body": body, "more_body": more_body})

    async def _finish(self) -> None:
        start = self._start
        assert start is not None
        headers = list(start.get("headers", []))
        body = b"".join(self._chunks)
        marked = _header(headers, CIRCUIT_OPEN_HEADER) is not None
        rewritten = _rewrite(int(start.get("status", 0)), body, marked)
        if rewritten is not None:
            status, body = rewritten
            headers = [
                (k, v) for k, v in headers if k.lower() not in {b"content-length", CIRCUIT_OPEN_HEADER}
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            start = {**start, "status": status, "headers": headers}
            self._start, self._chunks = start, [body]
        await self._flush(False)


def _rewrite(status: int, body: bytes, marked: bool) -> tuple[int, bytes] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    if status == 400 and error.get("type") == "no_db_connection":
        replaced = {
            "message": (
                "invalid API key: it is not the master key, and no database is configured for virtual keys"
            ),
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
        return 401, json.dumps({"error": replaced}).encode()
    if marked:
        message = error.get("message")
        if isinstance(message, str) and "RouteIQ: " in message:
            # LiteLLM wraps the breaker's message in its class name and a note on fallbacks
            error["message"] = message.split("RouteIQ: ", 1)[1].split("\n", 1)[0]
        error["type"] = "service_unavailable"
        error["code"] = "circuit_open"
        return status, json.dumps(document).encode()
    return None
