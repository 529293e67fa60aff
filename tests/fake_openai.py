"""A local OpenAI-compatible upstream for tests: real HTTP, a configurable delay per model.

LiteLLM's `mock_delay` sleeps before LiteLLM's pre-call hooks run, so a request is not
"in flight" during it; a real upstream holds the request where a provider would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read responses, not logs."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        model = str(body.get("model", ""))
        self.server.arrived.set()
        time.sleep(self.server.delays.get(model, 0.0))
        payload = json.dumps(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"from {model}"},
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    delays: dict[str, float]
    arrived: threading.Event


@contextmanager
def fake_openai(delays: dict[str, float], arrived: threading.Event | None = None) -> Iterator[str]:
    """Serve until the block ends; yields the `api_base` (`http://127.0.0.1:PORT/v1`). `arrived`
    is set when a request reaches the upstream (it is then in flight in the gateway)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.delays = delays
    server.arrived = arrived or threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
