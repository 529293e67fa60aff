"""A per-worker LRU of loaded router models, keyed by artifact digest.

The digest (sha256 of manifest.json) pins every byte of an artifact, so a model loaded from
one digest can be reused whatever URI it came from: switching A/B variants or reloading an
unchanged artifact costs nothing. Bounded by entries (default 4): the least recently used
model is dropped when a new one comes in.

    cache: ModelCache[Router] = ModelCache(max_entries=4)
    router = cache.get_or_load(artifact.digest, lambda: Router.from_artifact(artifact))
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ModelCache"]

T = TypeVar("T")


class ModelCache(Generic[T]):
    """Thread-safe; a digest is loaded at most once at a time (other callers wait for it)."""

    def __init__(self, max_entries: int = 4) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def get(self, digest: str) -> T | None:
        """The model for `digest` if cached (marking it most recently used), else None."""
        with self._lock:
            if digest not in self._entries:
                return None
            self._entries.move_to_end(digest)
            return self._entries[digest]

    def get_or_load(self, digest: str, loader: Callable[[], T]) -> T:
        """The cached model for `digest`, or `loader()`'s result, cached. A loader's exception
        propagates and nothing is cached."""
        with self._lock:
            if digest in self._entries:
                self.hits += 1
                self._entries.move_to_end(digest)
                return self._entries[digest]
            key_lock = self._loading.setdefault(digest, threading.Lock())
        with key_lock:
            with self._lock:  # another thread may have loaded it while this one waited
                if digest in self._entries:
                    self.hits += 1
                    self._entries.move_to_end(digest)
                    return self._entries[digest]
                self.misses += 1
            try:
                model = loader()
            except BaseException:
                with self._lock:
                    self._loading.pop(digest, None)
                raise
            with self._lock:
                self._entries[digest] = model
                self._entries.move_to_end(digest)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
                self._loading.pop(digest, None)
            return model

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            return digest in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def digests(self) -> list[str]:
        """Cached digests, least recently used first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
