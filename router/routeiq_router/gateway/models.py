"""The trained router models of one gateway worker: loaded verified, hot reloaded, reported.

The artifact comes from `ROUTEIQ_MODEL_S3_URI` (`s3://`, `gs://`) when set, else from
`ROUTEIQ_MODELS_PATH` (an artifact directory, a `.tar.gz`, or a `file://` URI). Every load is
verified first (file digests, `ROUTEIQ_MODEL_DIGEST`, the signature against
`ROUTEIQ_MODEL_PUBLIC_KEY`, SSRF policy); a refused artifact is logged, counted and never
replaces the model in service. With `ROUTEIQ_HOT_RELOAD=true` the source is checked every
`ROUTEIQ_RELOAD_INTERVAL` seconds and a changed artifact swaps in between two decisions, so no
request fails. Until a verified model is loaded, a worker whose `ROUTEIQ_STRATEGY` is a
trained one reports not ready, and keeps trying every interval. Such a worker refuses an
artifact trained for another strategy (reason `strategy`): it would otherwise route every
request round-robin while reporting ready.

The variant models (`ROUTEIQ_VARIANT_MODELS`, by model key) are loaded the same way, each
from its own source into its own slot, pinned to its entry's digest and verified against its
entry's public key (else `ROUTEIQ_MODEL_PUBLIC_KEY`); each serves under its model key in the
worker's ModelHolder, where an A/B variant naming that key finds it. A worker is not ready
until every variant model is loaded.

Fetching, verifying and decoding run in a thread: the worker's event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routeiq_router import metrics
from routeiq_router.settings import RouteIQSettings
from routeiq_router.strategies.catalog import TRAINED_STRATEGIES

if TYPE_CHECKING:
    from routeiq_router.artifacts.cache import ModelCache
    from routeiq_router.artifacts.loader import ArtifactSlot
    from routeiq_router.artifacts.verify import VerifiedArtifact
    from routeiq_router.ml.runtime import LoadedRouter, ModelHolder

__all__ = ["RouterModels"]

logger = logging.getLogger("routeiq.gateway")


def _public_key(value: str | None) -> str | None:
    """The PEM text of ROUTEIQ_MODEL_PUBLIC_KEY: the value itself, or the file it names."""
    if value is None or "BEGIN PUBLIC KEY" in value:
        return value
    path = Path(value)
    if path.is_file():
        return path.read_text()
    return value  # base64 of the raw key; load_public_key says what is wrong with it


@dataclass
class _Source:
    """One artifact this worker loads: the main model (`key` None: held under its manifest's
    strategy) or a variant model (held under its model key)."""

    key: str | None
    uri: str
    digest: str | None
    public_key: str | None
    slot: ArtifactSlot[LoadedRouter] | None = None
    error: str | None = None  # why it could not be set up at all (a bad key)

    @property
    def loaded(self) -> bool:
        return self.slot is not None and self.slot.current is not None

    def detail(self, error: str | None = None) -> dict[str, Any]:
        """What readiness reports about it (besides the source); `error`: one that stopped
        every model (it takes precedence)."""
        detail: dict[str, Any] = {}
        slot = self.slot
        current = slot.current if slot is not None else None
        if current is not None:
            detail.update(
                strategy=current.manifest.strategy,
                digest=current.digest,
                loaded_seconds_ago=round(time.time() - current.loaded_at, 1),
                candidates=current.manifest.candidates,
            )
        if slot is not None and slot.refusals:
            detail["refused"] = dict(slot.refusals)
        error = error or self.error or (slot.last_error if slot is not None else None)
        if error is not None:
            detail["last_error"] = error
        return detail


class RouterModels:
    """One worker's trained-model slots: the main model and the variant models (see the
    module docstring)."""

    def __init__(self, settings: RouteIQSettings, holder: ModelHolder | None = None) -> None:
        self.settings = settings
        self.uri = settings.model_s3_uri or settings.models_path
        self.required = settings.strategy in TRAINED_STRATEGIES
        explicit = settings.model_s3_uri is not None or "models_path" in settings.model_fields_set
        self.main_enabled = self.required or explicit
        self._main = _Source(None, self.uri, settings.model_digest, settings.model_public_key)
        self.variants = {
            key: _Source(key, entry.uri, entry.digest, entry.public_key or settings.model_public_key)
            for key, entry in settings.variant_models.items()
        }
        self.enabled = self.main_enabled or bool(self.variants)
        self._holder = holder
        self._decode: Callable[[VerifiedArtifact], LoadedRouter] | None = None
        self._cache: ModelCache[LoadedRouter] | None = None
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = None  # why no model could be set up at all (a missing extra)

    def _sources(self) -> list[_Source]:
        return ([self._main] if self.main_enabled else []) + list(self.variants.values())

    @property
    def ready(self) -> bool:
        main = not self.required or self._main.loaded
        return main and all(source.loaded for source in self.variants.values())

    def _build_decode(self) -> None:
        """What every slot shares: the holder, the decoder (one embedder per embedding model,
        one Redis embedding cache) and the cache of decoded models by digest."""
        from routeiq_router.artifacts.cache import ModelCache
        from routeiq_router.ml.runtime import default_holder, load_router

        holder = self._holder if self._holder is not None else default_holder()
        self._holder = holder
        settings = self.settings

        shared_cache = None
        if settings.cache_enabled and (settings.cache_redis_url or settings.redis_url) is not None:
            import redis

            secret = settings.cache_redis_url or settings.redis_url
            assert secret is not None
            # a slow cache must not slow routing: short timeouts, the embedder skips Redis after errors
            shared_cache = redis.Redis.from_url(
                secret.get_secret_value(), socket_timeout=0.05, socket_connect_timeout=0.05
            )

        def decode(artifact: VerifiedArtifact) -> LoadedRouter:
            embedder = None
            if artifact.manifest.embedding is not None and settings.embedding_model is None:
                embedder = holder.embedder_for(artifact.manifest.embedding.model)  # keep its cache warm
            return load_router(
                artifact,
                artifact.manifest,
                digest=artifact.digest,
                embedder=embedder,
                embedding_source=settings.embedding_model,
                cache_entries=settings.embedding_cache_size,
                redis=shared_cache,
            )

        self._decode = decode
        # an artifact serving under two keys (the main model and a variant) is decoded once;
        # room for each source's model and its successor during a reload
        self._cache = ModelCache(max_entries=max(4, 2 * len(self._sources())))

    def _build_slot(self, source: _Source) -> ArtifactSlot[LoadedRouter]:
        from routeiq_router.artifacts.loader import ArtifactSlot, ArtifactTrust

        assert self._decode is not None
        trust = ArtifactTrust.from_settings(
            self.settings, public_key=_public_key(source.public_key), expected_digest=source.digest
        )
        accept = self._same_strategy if source.key is None and self.required else None
        return ArtifactSlot(source.uri, self._decode, trust, cache=self._cache, accept=accept)

    def _same_strategy(self, artifact: VerifiedArtifact) -> None:
        """Refuse a main artifact trained for another strategy than ROUTEIQ_STRATEGY: serving
        it would route every request round-robin while reporting ready."""
        from routeiq_router.artifacts.manifest import ArtifactError

        trained_for = artifact.manifest.strategy
        if trained_for != self.settings.strategy:
            raise ArtifactError(
                f"artifact {artifact.digest} was trained for strategy '{trained_for}', "
                f"but ROUTEIQ_STRATEGY is '{self.settings.strategy}'",
                reason="strategy",
            )

    def _load(self, source: _Source, poll: bool) -> None:
        slot = source.slot
        if slot is None:
            return
        refusals = slot.refusals.total()
        started = time.perf_counter()
        changed = slot.poll() if poll else slot.load()  # poll: only when the source changed
        current = slot.current
        refused = slot.refusals.total() > refusals
        if changed or refused:
            if current is not None:
                strategy = current.manifest.strategy
            else:
                strategy = self.settings.strategy if source.key is None else ""
            metrics.model_load(strategy, time.perf_counter() - started, loaded=changed)
        if changed and current is not None and self._holder is not None:
            previous = self._holder.set(current.model, source.key)
            logger.info(
                "router model in service",
                extra={
                    "strategy": current.manifest.strategy,
                    "digest": current.digest,
                    "replaced": previous.digest if previous is not None else None,
                    "source": source.uri,
                    "model": source.key,
                },
            )

    async def start(self) -> None:
        """Set up and load each model (in a thread); never raises: a failure leaves the worker
        not ready (when its strategy or a variant needs the model) with the reason in readiness."""
        if not self.enabled:
            return
        try:
            await asyncio.to_thread(self._build_decode)
        except Exception as error:  # a missing extra: say so in readiness and logs
            self.error = f"{type(error).__name__}: {error}"
            logger.error("router model cannot be loaded", extra={"error": self.error, "source": self.uri})
            return
        for source in self._sources():
            try:
                source.slot = await asyncio.to_thread(self._build_slot, source)
                await asyncio.to_thread(self._load, source, False)
            except Exception as error:  # a bad key: this model never loads, the others do
                source.error = f"{type(error).__name__}: {error}"
                logger.error(
                    "router model cannot be loaded",
                    extra={"error": source.error, "source": source.uri, "model": source.key},
                )
        self._task = asyncio.create_task(self._reload_loop(), name="routeiq-model-reload")

    async def poll(self) -> None:
        """Check every model's source once (in a thread), as the reload loop does every
        `ROUTEIQ_RELOAD_INTERVAL` seconds: load a model not loaded yet, and with hot reload a
        changed artifact. Never raises."""
        for source in self._sources():
            slot = source.slot
            if slot is None:
                continue  # could not be set up: the reason is in readiness
            if slot.current is not None and not self.settings.hot_reload:
                continue  # loaded, and hot reload is off: the model stays until the pod rolls
            try:
                await asyncio.to_thread(self._load, source, True)
            except Exception:  # the loop is how the worker recovers: never let it die
                logger.exception("router model reload failed", extra={"model": source.key})

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            await self.poll()

    async def close(self, within: float = 2.0) -> None:
        """Stop the reload loop within `within` seconds. A load running in its thread is not
        waited for (a thread cannot be cancelled): it finishes on its own or dies with the
        process."""
        if self._task is not None:
            self._task.cancel()
            _, pending = await asyncio.wait({self._task}, timeout=within)
            if pending:
                logger.warning("router model reload loop did not stop within the close deadline; abandoned")
            self._task = None

    def health(self) -> dict[str, Any]:
        """The readiness detail under `model`: the main model's, and each variant model's
        under `variants`."""
        detail: dict[str, Any] = {}
        if self.main_enabled:
            detail = {"source": self.uri, "required": self.required, **self._main.detail(self.error)}
        if self.variants:
            detail["variants"] = {
                key: {"source": source.uri, "loaded": source.loaded, **source.detail(self.error)}
                for key, source in self.variants.items()
            }
        detail["hot_reload"] = self.settings.hot_reload
        return detail
