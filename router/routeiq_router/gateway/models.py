"""The trained router model of one gateway worker: loaded verified, hot reloaded, reported.

The artifact comes from `ROUTEIQ_MODEL_S3_URI` (`s3://`, `gs://`) when set, else from
`ROUTEIQ_MODELS_PATH` (an artifact directory, a `.tar.gz`, or a `file://` URI). Every load is
verified first (file digests, `ROUTEIQ_MODEL_DIGEST`, the signature against
`ROUTEIQ_MODEL_PUBLIC_KEY`, SSRF policy); a refused artifact is logged, counted and never
replaces the model in service. With `ROUTEIQ_HOT_RELOAD=true` the source is checked every
`ROUTEIQ_RELOAD_INTERVAL` seconds and a changed artifact swaps in between two decisions, so no
request fails. Until a verified model is loaded, a worker whose `ROUTEIQ_STRATEGY` is a
trained one reports not ready, and keeps trying every interval.

Fetching, verifying and decoding run in a thread: the worker's event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routeiq_router.settings import RouteIQSettings

if TYPE_CHECKING:
    from routeiq_router.artifacts.loader import ArtifactSlot
    from routeiq_router.ml.runtime import LoadedRouter, ModelHolder

__all__ = ["TRAINED_STRATEGIES", "RouterModels"]

logger = logging.getLogger("routeiq.gateway")

TRAINED_STRATEGIES = frozenset({"knn", "mlp", "svm", "elo", "mf"})


def _public_key(value: str | None) -> str | None:
    """The PEM text of ROUTEIQ_MODEL_PUBLIC_KEY: the value itself, or the file it names."""
    if value is None or "BEGIN PUBLIC KEY" in value:
        return value
    path = Path(value)
    if path.is_file():
        return path.read_text()
    return value  # base64 of the raw key; load_public_key says what is wrong with it


class RouterModels:
    """One worker's trained-model slot (see the module docstring)."""

    def __init__(self, settings: RouteIQSettings, holder: ModelHolder | None = None) -> None:
        self.settings = settings
        self.uri = settings.model_s3_uri or settings.models_path
        self.required = settings.strategy in TRAINED_STRATEGIES
        explicit = settings.model_s3_uri is not None or "models_path" in settings.model_fields_set
        self.enabled = self.required or explicit
        self._holder = holder
        self._slot: ArtifactSlot[LoadedRouter] | None = None
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = None  # why no model could be set up at all (bad key, missing extra)

    @property
    def ready(self) -> bool:
        return not self.required or (self._slot is not None and self._slot.current is not None)

    def _build_slot(self) -> ArtifactSlot[LoadedRouter]:
        from routeiq_router.artifacts.loader import ArtifactSlot, ArtifactTrust
        from routeiq_router.artifacts.verify import VerifiedArtifact
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

        trust = ArtifactTrust.from_settings(
            settings,
            public_key=_public_key(settings.model_public_key),
            expected_digest=settings.model_digest,
        )
        return ArtifactSlot(self.uri, decode, trust)

    def _load(self, poll: bool) -> None:
        slot = self._slot
        if slot is None:
            return
        changed = slot.poll() if poll else slot.load()  # poll: only when the source changed
        current = slot.current
        if changed and current is not None and self._holder is not None:
            previous = self._holder.set(current.model)
            logger.info(
                "router model in service",
                extra={
                    "strategy": current.manifest.strategy,
                    "digest": current.digest,
                    "replaced": previous.digest if previous is not None else None,
                    "source": self.uri,
                },
            )

    async def start(self) -> None:
        """Set up and load (in a thread); never raises: a failure leaves the worker not ready
        (when its strategy needs the model) with the reason in readiness."""
        if not self.enabled:
            return
        try:
            self._slot = await asyncio.to_thread(self._build_slot)
            await asyncio.to_thread(self._load, False)
        except Exception as error:  # a bad key, a missing extra: say so in readiness and logs
            self.error = f"{type(error).__name__}: {error}"
            logger.error("router model cannot be loaded", extra={"error": self.error, "source": self.uri})
            return
        self._task = asyncio.create_task(self._reload_loop(), name="routeiq-model-reload")

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            slot = self._slot
            if slot is None:
                return
            if slot.current is not None and not self.settings.hot_reload:
                continue  # loaded, and hot reload is off: the model stays until the pod rolls
            try:
                await asyncio.to_thread(self._load, True)
            except Exception:  # the loop is how the worker recovers: never let it die
                logger.exception("router model reload failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def health(self) -> dict[str, Any]:
        """The readiness detail under `model`."""
        detail: dict[str, Any] = {"source": self.uri, "required": self.required}
        slot = self._slot
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
        error = self.error or (slot.last_error if slot is not None else None)
        if error is not None:
            detail["last_error"] = error
        detail["hot_reload"] = self.settings.hot_reload
        return detail
