"""Watches: events kept per resource, streamed to watches as newline-delimited JSON.

`?watch=true` on one namespace or all, by name too: synthetic ADDED events for the current state
when no resourceVersion is given, else only the events after it (410 Expired, as an ERROR event,
once `expire` dropped them); selector transitions as ADDED/DELETED; `timeoutSeconds`; no bookmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import aiohttp.web

from tests.k8s.emulator.errors import ApiError
from tests.k8s.emulator.objects import Obj, RKey, meta_of
from tests.k8s.emulator.records import RequestRecord
from tests.k8s.emulator.resources import ResourceType
from tests.k8s.emulator.selectors import Filter

if TYPE_CHECKING:
    from tests.k8s.emulator.state import StoreState


@dataclasses.dataclass(frozen=True)
class Event:
    """One change of an object, as watches see it."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    old: Obj | None  # the previous state for MODIFIED, for selector transitions


@dataclasses.dataclass(eq=False)
class Watcher:
    """An open watch: events reach it through its queue, on its loop; None ends it."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event | None]


class WatchHub:
    """Per resource, the past events (for resuming watches) and the open watches; used under the store's lock."""

    def __init__(self) -> None:
        self.history: dict[RKey, list[Event]] = {}
        self.expired_below: dict[RKey, int] = {}
        self.watchers: dict[RKey, set[Watcher]] = {}
        self.closing = False

    def publish(self, key: RKey, event: Event) -> None:
        self.history.setdefault(key, []).append(event)
        for watcher in list(self.watchers.get(key, ())):
            with contextlib.suppress(RuntimeError):  # the emulator's loop is closed
                watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, event)

    def expire(self, rv: int) -> None:
        """Forget past events: watches resuming from a resourceVersion before `rv` get a 410 Expired ERROR."""
        for key in self.history:
            self.expired_below[key] = rv + 1
            self.history[key] = []

    def close(self) -> None:
        """End every open watch and refuse new ones (the server is stopping); call on the server's loop."""
        self.closing = True
        for watchers in self.watchers.values():
            for watcher in watchers:
                watcher.queue.put_nowait(None)


async def serve_watch(
    store: StoreState,
    raw: aiohttp.web.BaseRequest,
    rt: ResourceType,
    selection: Filter,
    query: Mapping[str, str],
    record: RequestRecord,
) -> aiohttp.web.StreamResponse:
    """One watch: its backlog, then events as they come until the timeout, the client leaves or the server stops."""
    hub = store.watches
    loop = asyncio.get_running_loop()
    watcher = Watcher(loop=loop, queue=asyncio.Queue())
    since = query.get("resourceVersion") or ""
    backlog: list[Event] = []
    expired: str | None = None
    with store.lock:
        if hub.closing:
            raise ApiError(503, "the emulator is shutting down")
        if since and since != "0":
            try:
                since_rv = int(since)
            except ValueError as exc:
                raise ApiError(400, f"invalid resource version: {since!r}") from exc
            if since_rv < hub.expired_below.get(rt.key, 0) - 1:
                expired = f"too old resource version: {since_rv} ({hub.expired_below[rt.key] - 1})"
            else:
                backlog = [e for e in hub.history.get(rt.key, []) if e.rv > since_rv]
        else:
            backlog = [
                Event(rv=int(meta_of(o)["resourceVersion"]), type="ADDED", obj=o, old=None)
                for _, o in sorted(store.objects.get(rt.key, {}).items())
            ]
        if expired is None:
            hub.watchers.setdefault(rt.key, set()).add(watcher)
    response = aiohttp.web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    try:
        await response.prepare(raw)
        record.status = 200
        if expired is not None:
            error = ApiError(410, expired, "Expired").status()
            await response.write(json.dumps({"type": "ERROR", "object": error}).encode() + b"\n")
            await response.write_eof()
            return response
        timeout = float(query.get("timeoutSeconds") or 0)
        deadline = time.monotonic() + timeout if timeout > 0 else None
        for event in backlog:
            await _write_event(response, store, rt, selection, event)
        while True:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                break
            try:
                next_event = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
            except TimeoutError:
                if raw.transport is None or raw.transport.is_closing():
                    break
                continue
            if next_event is None:
                break
            await _write_event(response, store, rt, selection, next_event)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away
    finally:
        with store.lock:
            hub.watchers.get(rt.key, set()).discard(watcher)
    return response


async def _write_event(
    response: aiohttp.web.StreamResponse, store: StoreState, rt: ResourceType, selection: Filter, event: Event
) -> None:
    now_matches = selection.matches(event.obj)
    kind = event.type
    if kind == "MODIFIED" and event.old is not None:
        was_matching = selection.matches(event.old)
        if now_matches and not was_matching:
            kind = "ADDED"
        elif was_matching and not now_matches:
            kind = "DELETED"
        elif not now_matches:
            return
    elif not now_matches:
        return
    line = json.dumps({"type": kind, "object": store.present(rt, event.obj)})
    await response.write(line.encode() + b"\n")
