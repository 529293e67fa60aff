"""What this process remembers per object, in one place: a lock per object and small caches.

The timer, the change handlers, a Deployment's events and follow-up passes of one object may fire
together; one pass at a time per object (a gateway pass that rendered a digest another pass just
rejected would roll it out again). The caches only save API or Redis calls: a restarted operator
starts with none and converges all the same. Everything is dropped when the object is deleted.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

__all__ = ["OBJECTS", "ObjectMemory"]


class ObjectMemory:
    def __init__(self) -> None:
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._values: defaultdict[str, dict[str, Any]] = defaultdict(dict)

    def lock(self, uid: str) -> asyncio.Lock:
        return self._locks[uid]

    def get(self, uid: str, key: str) -> Any:
        """The value remembered under `key` for the object, or None."""
        values = self._values.get(uid)
        return None if values is None else values.get(key)

    def remember(self, uid: str, key: str, value: Any) -> None:
        self._values[uid][key] = value

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self._values.pop(uid, None)


# the operator's one instance (kopf runs one operator per process)
OBJECTS = ObjectMemory()
