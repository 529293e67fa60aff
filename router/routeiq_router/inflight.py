"""Requests in flight per deployment, as seen by this worker."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

__all__ = ["InFlightTracker"]


class InFlightTracker:
    """Thread-safe counts of the requests each deployment is serving right now.

    LiteLLM calls the pre-call hook from worker threads for sync calls and from the
    event loop for async ones, so the counter is guarded by a lock.
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def started(self, deployment_id: str) -> None:
        with self._lock:
            self._counts[deployment_id] += 1

    def finished(self, deployment_id: str) -> None:
        with self._lock:
            remaining = self._counts[deployment_id] - 1
            if remaining > 0:
                self._counts[deployment_id] = remaining
            else:
                # never below zero: a finish without a start (e.g. a callback registered mid-request)
                del self._counts[deployment_id]

    def count(self, deployment_id: str) -> int:
        return self._counts.get(deployment_id, 0)

    def counts(self, deployment_ids: Iterable[str]) -> list[int]:
        counts = self._counts
        return [counts.get(deployment_id, 0) for deployment_id in deployment_ids]
