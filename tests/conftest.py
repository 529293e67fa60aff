"""Shared fixtures. Tests never touch the network: LiteLLM reads its bundled cost map."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Iterator

import pytest

from tests import ports
from tests.redis_server import RedisServer


@pytest.fixture
def free_port() -> int:
    return ports.free_port()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests use their own keys (a gateway name each)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server
