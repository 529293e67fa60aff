"""The serving model of one artifact URI: a refused artifact never replaces the one in service.

    slot = ArtifactSlot(uri, decode=KnnRouter.from_artifact, trust=ArtifactTrust.from_settings(settings))
    slot.load()                     # at start-up: False (and slot.current is None) if refused
    ...
    slot.poll()                     # every ROUTEIQ_RELOAD_INTERVAL s: reloads when the source changed
    model = slot.current.model      # what the request path uses

Every refusal is logged with its reason, counted in `slot.refusals[reason]` and passed to
`on_refused(reason, message)` (for a metric); the previous model keeps serving. A refused
version is not fetched again until the source changes; a failed fetch (network) is retried on
the next poll. Decoded models are shared through a `ModelCache` keyed by digest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from routeiq_router.artifacts.archive import DEFAULT_LIMITS, Limits
from routeiq_router.artifacts.cache import ModelCache
from routeiq_router.artifacts.manifest import ArtifactError, Manifest
from routeiq_router.artifacts.sources import fetch_artifact, source_version
from routeiq_router.artifacts.ssrf import SsrfPolicy
from routeiq_router.artifacts.verify import VerifiedArtifact, normalize_digest, read_artifact

if TYPE_CHECKING:
    from routeiq_router.artifacts.signing import Ed25519PublicKey
    from routeiq_router.settings import RouteIQSettings

__all__ = ["ArtifactSlot", "ArtifactTrust", "Loaded"]

T = TypeVar("T")
logger = logging.getLogger(__name__)
_RETRIED_REASONS = frozenset({"fetch", "ssrf"})  # about reaching the source, not the artifact itself


@dataclass(frozen=True)
class ArtifactTrust:
    """What an artifact must satisfy to be loaded, and where it may come from."""

    ssrf: SsrfPolicy
    public_key: Ed25519PublicKey | None = None  # set: only artifacts signed with its private key
    expected_digest: str | None = None  # set: only this exact artifact
    limits: Limits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if self.expected_digest is not None:
            object.__setattr__(self, "expected_digest", normalize_digest(self.expected_digest))

    @classmethod
    def from_settings(
        cls,
        settings: RouteIQSettings,
        *,
        public_key: Ed25519PublicKey | bytes | str | None = None,
        expected_digest: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> ArtifactTrust:
        key = None
        if public_key is not None:
            from routeiq_router.artifacts.signing import load_public_key

            key = load_public_key(public_key) if isinstance(public_key, bytes | str) else public_key
        return cls(SsrfPolicy.from_settings(settings), key, expected_digest, limits)


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """A model in service and the artifact it came from."""

    model: T
    digest: str
    manifest: Manifest
    uri: str
    version: str  # source_version at the time it was fetched
    loaded_at: float  # time.time()


class ArtifactSlot(Generic[T]):
    """The model loaded from `uri`, replaced only by one that verifies and decodes."""

    def __init__(
        self,
        uri: str,
        decode: Callable[[VerifiedArtifact], T],
        trust: ArtifactTrust,
        *,
        cache: ModelCache[T] | None = None,
        on_refused: Callable[[str, str], None] | None = None,
        accept: Callable[[VerifiedArtifact], None] | None = None,
    ) -> None:
        self.uri = uri
        # what the caller requires of a verified artifact before it is decoded (e.g. its
        # strategy); raises ArtifactError to refuse it
        self.accept = accept
        self.decode = decode
        self.trust = trust
        self.cache: ModelCache[T] = cache if cache is not None else ModelCache()
        self.on_refused = on_refused
        self.current: Loaded[T] | None = None
        self.refusals: Counter[str] = Counter()
        self.last_error: str | None = None
        self._attempted_version: str | None = None
        self._lock = threading.Lock()

    def _refuse(self, reason: str, message: str) -> None:
        self.refusals[reason] += 1
        self.last_error = message
        serving = f"; still serving {self.current.digest}" if self.current else "; no model is loaded"
        logger.warning("router model refused (%s): %s%s", reason, message, serving)
        if self.on_refused is not None:
            self.on_refused(reason, message)

    def poll(self) -> bool:
        """Load the artifact if its source changed since the last attempt; True if a new model serves."""
        try:
            version = source_version(self.uri, ssrf=self.trust.ssrf)
        except ArtifactError as error:
            self._refuse(error.reason, str(error))
            return False
        if version == self._attempted_version:
            return False
        return self.load(version)

    def load(self, version: str | None = None) -> bool:
        """Fetch, verify and decode the artifact now; True if a new model serves. `version`: the
        source's version when the caller just read it.

        False when it is the model already serving, or when it was refused (the previous one
        keeps serving, the reason is counted).
        """
        with self._lock:
            trust = self.trust
            try:
                if version is None:  # poll() asked already: do not ask the source twice
                    version = source_version(self.uri, ssrf=trust.ssrf)
                files = fetch_artifact(self.uri, ssrf=trust.ssrf, limits=trust.limits)
                artifact = read_artifact(
                    files,
                    expected_digest=trust.expected_digest,
                    public_key=trust.public_key,
                    limits=trust.limits,
                )
                if self.accept is not None:
                    self.accept(artifact)
            except ArtifactError as error:
                if error.reason not in _RETRIED_REASONS:
                    self._attempted_version = version  # not fetched again until the source changes
                self._refuse(error.reason, str(error))
                return False
            assert version is not None
            self._attempted_version = version
            if self.current is not None and self.current.digest == artifact.digest:
                return False
            try:
                model = self.cache.get_or_load(artifact.digest, lambda: self.decode(artifact))
            except ArtifactError as error:
                self._refuse(error.reason, str(error))
                return False
            except Exception as error:  # a decoder bug must not take the serving model down
                logger.exception("decoding router model %s failed", artifact.digest)
                self._refuse("decode", f"{type(error).__name__}: {error}")
                return False
            self.current = Loaded(model, artifact.digest, artifact.manifest, self.uri, version, time.time())
            logger.info(
                "router model %s (%s) loaded from %s", artifact.digest, artifact.manifest.strategy, self.uri
            )
            return True
