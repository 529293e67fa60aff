"""The synchronous state API: a test reads and writes objects as another client would.

Writes are validated and watchers see them; `wait_for` blocks until an object meets a condition.
These methods take the store's lock, so a test thread calls them while the server thread serves.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from tests.k8s.emulator.objects import Obj, meta_of
from tests.k8s.emulator.patches import merge_patch
from tests.k8s.emulator.resources import ResourceType
from tests.k8s.emulator.selectors import Filter
from tests.k8s.emulator.store import Store


class ClientApi:
    """`KubeEmulator`'s direct state access (a mixin: it needs only `store`)."""

    store: Store

    def resolve(self, resource: str) -> ResourceType:
        """Find a served resource by `group/version/plural`, `plural.group`, plural, singular, kind or short name."""
        return self.store.resolve(resource)

    def get_object(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        """The stored object (a copy), or None."""
        rt = self.resolve(resource)
        with self.store.lock:
            obj = self.store.objects.get(rt.key, {}).get(self.store.okey(rt, namespace, name))
            return self.store.present(rt, obj) if obj is not None else None

    def list_objects(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        rt = self.resolve(resource)
        selection = Filter.make(namespace, label_selector, field_selector)
        with self.store.lock:
            return [
                self.store.present(rt, o)
                for _, o in sorted(self.store.objects.get(rt.key, {}).items())
                if selection.matches(o)
            ]

    def create_object(self, resource: str, body: Mapping[str, Any], namespace: str | None = None) -> Obj:
        """Create as a client would (validated, watchers notified); raises ApiError."""
        rt = self.resolve(resource)
        namespace = namespace or meta_of(body).get("namespace") or ("default" if rt.namespaced else None)
        with self.store.lock:
            return self.store.present(rt, self.store.create(rt, namespace, copy.deepcopy(dict(body)), []))

    def replace_object(
        self,
        resource: str,
        name: str,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj:
        rt = self.resolve(resource)
        with self.store.lock:
            return self.store.present(
                rt, self.store.replace(rt, namespace, name, copy.deepcopy(dict(body)), subresource, [])
            )

    def patch_object(
        self,
        resource: str,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """JSON-merge-patch an object as another client would (validated, watchers notified)."""
        rt = self.resolve(resource)
        with self.store.lock:
            old = self.store.require(rt, namespace, name)
            new = merge_patch(copy.deepcopy(old), patch)
            return self.store.present(rt, self.store.update(rt, old, new, subresource, []))

    def patch_status(
        self, resource: str, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> Obj:
        """Merge-patch `.status` through the status subresource (as a controller would)."""
        rt = self.resolve(resource)
        subresource = "status" if rt.status_subresource else None
        return self.patch_object(resource, name, {"status": dict(status)}, namespace, subresource=subresource)

    def delete_object(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str = "Background",
    ) -> Obj | None:
        """Delete as a client would; returns the object if finalizers keep it, else None."""
        rt = self.resolve(resource)
        with self.store.lock:
            obj = self.store.require(rt, namespace, name)
            remaining = self.store.delete(rt, obj, propagation_policy)
            return self.store.present(rt, remaining) if remaining is not None else None

    def wait_for(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        condition: Callable[[Obj | None], bool],
        timeout: float = 10.0,
    ) -> Obj | None:
        """Block until `condition(object or None)` holds; raises TimeoutError. Not for the emulator's thread."""
        deadline = time.monotonic() + timeout
        with self.store.changed:
            while True:
                obj = self.get_object(resource, name, namespace)
                if condition(obj):
                    return obj
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{resource} {namespace}/{name} never met the condition; last: {obj!r}"
                    )
                self.store.changed.wait(timeout=min(remaining, 0.5))

    async def wait_for_async(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        *,
        condition: Callable[[Obj | None], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - the same signature as wait_for()
    ) -> Obj | None:
        """`wait_for` for async tests: polls with asyncio.sleep, never blocks the test's loop."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get_object(resource, name, namespace)
            if condition(obj):
                return obj
            if time.monotonic() > deadline:
                raise TimeoutError(f"{resource} {namespace}/{name} never met the condition; last: {obj!r}")
            await asyncio.sleep(0.05)

    def expire_watch_history(self) -> None:
        """Forget past events: watches resuming from an older resourceVersion get a 410 Expired ERROR."""
        with self.store.lock:
            self.store.watches.expire(self.store.rv)

    @property
    def resource_version(self) -> int:
        with self.store.lock:
            return self.store.rv
