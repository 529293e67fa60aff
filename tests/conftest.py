"""Shared fixtures. Tests never touch the network: LiteLLM reads its bundled cost map."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import socket
from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests use their own keys (a gateway name each)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server
