"""`KubeEmulator`: the HTTP server, its routing, faults, request records and kubeconfig."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import kmock
import yaml
import yarl
from typing_extensions import override

from tests.k8s.emulator import discovery, handlers
from tests.k8s.emulator.client import ClientApi
from tests.k8s.emulator.errors import ApiError
from tests.k8s.emulator.objects import Obj
from tests.k8s.emulator.records import Fault, RequestRecord
from tests.k8s.emulator.schemas import DEFAULT_KUBE_VERSION, schema_dir
from tests.k8s.emulator.selectors import Filter
from tests.k8s.emulator.store import Store
from tests.k8s.emulator.watches import serve_watch

logger = logging.getLogger(__name__)


def _content_type(raw: aiohttp.web.BaseRequest) -> str:
    return raw.headers.get("Content-Type", "").split(";")[0].strip().lower()


class KubeEmulator(ClientApi, kmock.KubernetesEmulator):
    """An API-server-like Kubernetes emulator over HTTP; see the package docstring for the scope.

    Use as `with KubeEmulator() as emulator:` (or `start()`/`stop()`), then point clients at
    `emulator.server_url` or a kubeconfig from `write_kubeconfig(path)`.
    """

    def __init__(
        self,
        *,
        kube_version: str = DEFAULT_KUBE_VERSION,
        strict_custom_fields: bool = False,
        namespaces: Sequence[str] = ("default", "kube-system", "kube-public", "kube-node-lease"),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__()
        schema_dir(kube_version)  # fail early on an unsupported version
        self.store = Store(kube_version=kube_version, strict_custom_fields=strict_custom_fields)
        self.request_log: list[RequestRecord] = []
        self.warnings: list[str] = []  # every Warning header sent (e.g. pruned unknown fields)
        self.internal_errors: list[str] = []  # tracebacks of emulator bugs (answered with 500)
        self._host = host
        self._wanted_port = port
        self._port: int | None = None
        self._faults: list[Fault] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        for namespace in namespaces:
            self.create_object("namespaces", {"metadata": {"name": namespace}})

    @property
    def kube_version(self) -> str:
        """The Kubernetes version whose schemas validate built-in kinds (and `/version` reports)."""
        return self.store.kube_version

    @kube_version.setter
    def kube_version(self, value: str) -> None:
        self.store.kube_version = value

    @property
    def strict_custom_fields(self) -> bool:
        """Refuse unknown fields of custom resources (422) rather than prune them with a warning."""
        return self.store.strict_custom_fields

    @strict_custom_fields.setter
    def strict_custom_fields(self, value: bool) -> None:
        self.store.strict_custom_fields = value

    # ----------------------------------------------------------------------------------------------
    # Lifecycle
    # ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on 127.0.0.1 from a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # surfaced to start()
                self._startup_error = exc
                ready.set()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("the emulator did not start in 30 s")
        if self._startup_error is not None:
            raise RuntimeError("the emulator failed to start") from self._startup_error

    def stop(self) -> None:
        """Close all watches and the server; call from any thread but the emulator's own."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or stop_event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> KubeEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _serve(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        async with self:  # kmock's handler context (error accumulation, stream feeder)
            server = aiohttp.test_utils.RawTestServer(self, host=self._host, port=self._wanted_port)
            await server.start_server(access_log=None)  # no aiohttp access lines in the tests' logs
            self._port = server.port
            ready.set()
            try:
                await self._stop_event.wait()
            finally:
                with self.store.lock:
                    self.store.watches.close()
                await server.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def server_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    @override
    def url(self) -> yarl.URL:
        return yarl.URL(self.server_url)

    def kubeconfig(self, *, namespace: str = "default", token: str = "emulator-token") -> Obj:
        """A kubeconfig document for this emulator (plain HTTP, a dummy bearer token)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.server_url}}],
            "users": [{"name": "emulator", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
            "preferences": {},
        }

    def write_kubeconfig(
        self, path: Path, *, namespace: str = "default", token: str = "emulator-token"
    ) -> Path:
        """Write a kubeconfig for `kubectl --kubeconfig` and `kubernetes.config.load_kube_config`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace=namespace, token=token), sort_keys=False))
        return path

    # ----------------------------------------------------------------------------------------------
    # Test API: faults, the request log (the state API is `ClientApi`'s)
    # ----------------------------------------------------------------------------------------------

    def inject_faults(
        self,
        *,
        method: str | None = None,
        path_re: str | re.Pattern[str] | None = None,
        status: int = 500,
        times: int | None = 1,
        watch: bool | None = None,
        reason: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        """Answer the next `times` requests matching method and path regex (re.search) with `status`.

        `times=None` keeps failing until `clear_faults()`; `watch=True/False` restricts to watches or
        non-watches. Returns the `Fault`, whose `hits` counts the requests it failed.
        """
        fault = Fault(
            status=status,
            method=method.upper() if method else None,
            path_re=re.compile(path_re) if isinstance(path_re, str) else path_re,
            times=times,
            watch=watch,
            reason=reason,
            message=message,
            retry_after=retry_after,
        )
        with self.store.lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.store.lock:
            self._faults.clear()

    def requests_matching(self, method: str | None = None, path_re: str | None = None) -> list[RequestRecord]:
        with self.store.lock:
            records = list(self.request_log)
        return [
            r
            for r in records
            if (method is None or r.method == method.upper())
            and (path_re is None or re.search(path_re, r.path))
        ]

    # ----------------------------------------------------------------------------------------------
    # HTTP
    # ----------------------------------------------------------------------------------------------

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's own Request._parse() fails on some valid Kubernetes paths (e.g. `/api/v1/namespaces`),
        # so record the request without its Kubernetes-specific parsing; routing is done in _route().
        body = await raw_request.read()
        request = kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=body.decode(errors="replace"),
        )
        self._requests.append(request)
        return await self._handle(request)

    @override
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None  # always set for requests arriving over HTTP
        record = RequestRecord(
            method=raw.method.upper(), path=raw.path, query=dict(raw.query), content_type=_content_type(raw)
        )
        with self.store.lock:
            self.request_log.append(record)
            fault = next((f for f in self._faults if f.matches(record)), None)
            if fault is not None:
                fault.hits += 1
        try:
            if fault is not None:
                record.fault = True
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                raise ApiError(
                    fault.status,
                    fault.message or f"injected fault ({fault.status})",
                    fault.reason,
                    headers=headers,
                )
            response = await self._route(raw, request.body, record)
        except ApiError as exc:
            response = aiohttp.web.json_response(exc.status(), status=exc.code, headers=exc.headers)
        except Exception as exc:
            trace = traceback.format_exc()
            logger.error("emulator failure on %s %s: %s", record.method, record.path, trace)
            with self.store.lock:
                self.internal_errors.append(trace)
            response = aiohttp.web.json_response(
                ApiError(500, f"emulator failure: {exc!r}").status(), status=500
            )
        if record.status is None:
            record.status = response.status
        return response

    def _json(self, body: Any, status: int = 200, warnings: Sequence[str] = ()) -> aiohttp.web.Response:
        response = aiohttp.web.json_response(body, status=status)
        for warning in warnings:
            response.headers.add("Warning", f"299 - {json.dumps(warning)}")
        if warnings:
            with self.store.lock:
                self.warnings.extend(warnings)
        return response

    async def _route(
        self, raw: aiohttp.web.BaseRequest, body: bytes, record: RequestRecord
    ) -> aiohttp.web.StreamResponse:
        path = raw.path.rstrip("/") or "/"
        method = record.method
        segments = [s for s in path.split("/") if s]
        if method == "GET":
            if path == "/":
                return self._json({"paths": discovery.root_paths(self.store)})
            if path == "/version":
                return self._json(discovery.version_info(self.kube_version))
            if path in ("/healthz", "/livez", "/readyz"):
                return aiohttp.web.Response(text="ok")
        if not segments or segments[0] not in ("api", "apis"):
            raise ApiError(404, "the server could not find the requested resource")
        if segments[0] == "api":
            if len(segments) == 1:
                return self._json(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self._host}:{self.port}"}
                        ],
                    }
                )
            group, version, rest = "", segments[1], segments[2:]
        else:
            if len(segments) == 1:
                return self._json(discovery.api_group_list(self.store))
            group = segments[1]
            if len(segments) == 2:
                return self._json(discovery.api_group(self.store, group))
            version, rest = segments[2], segments[3:]
        if not rest:
            return self._json(discovery.api_resource_list(self.store, group, version))
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        with self.store.lock:
            rt = self.store.types.get((group, version, rest[0]))
        if rt is None or len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        if namespace is not None and not rt.namespaced:
            raise ApiError(404, "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource not in (None, "status", "scale") or (
            subresource == "scale" and not rt.scale_subresource
        ):
            raise ApiError(404, "the server could not find the requested resource")
        if subresource == "status" and not rt.status_subresource:
            raise ApiError(404, "the server could not find the requested resource")
        if name is not None and rt.namespaced and namespace is None:
            raise ApiError(404, "the server could not find the requested resource")
        query = record.query
        dry_run = query.get("dryRun") == "All"
        strict_fields = query.get("fieldValidation") == "Strict"
        warnings: list[str] = []

        if method == "GET" and query.get("watch") in ("true", "1"):
            field_selector = query.get("fieldSelector")
            if name is not None:
                field_selector = ",".join(filter(None, [field_selector, f"metadata.name={name}"]))
            selection = Filter.make(namespace, query.get("labelSelector"), field_selector)
            return await serve_watch(self.store, raw, rt, selection, query, record)
        if method == "GET":
            if name is None:
                selection = Filter.make(namespace, query.get("labelSelector"), query.get("fieldSelector"))
                return self._json(handlers.list_page(self.store, rt, selection, query))
            with self.store.lock:
                obj = self.store.require(rt, namespace, name)
                if subresource == "scale":
                    return self._json(handlers.scale_of(rt, obj))
                return self._json(self.store.present(rt, obj))
        if method == "POST":
            if name is not None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            data = handlers.parse_json(body, record.content_type)
            with self.store.lock:
                created = self.store.create(
                    rt, namespace, data, warnings, strict_fields=strict_fields, dry_run=dry_run
                )
                return self._json(self.store.present(rt, created), 201, warnings)
        if method == "PUT" and name is not None:
            data = handlers.parse_json(body, record.content_type)
            with self.store.lock:
                if subresource == "scale":
                    return self._json(handlers.write_scale(self.store, rt, namespace, name, data, None))
                updated = self.store.replace(
                    rt,
                    namespace,
                    name,
                    data,
                    subresource,
                    warnings,
                    strict_fields=strict_fields,
                    dry_run=dry_run,
                )
                return self._json(self.store.present(rt, updated), 200, warnings)
        if method == "PATCH" and name is not None:
            reply, status = handlers.patch(
                self.store, record.content_type, body, rt, namespace, name, subresource, query, warnings
            )
            return self._json(reply, status, warnings)
        if method == "DELETE":
            options = handlers.delete_options(body, query)
            with self.store.lock:
                if name is None:
                    selection = Filter.make(namespace, query.get("labelSelector"), query.get("fieldSelector"))
                    return self._json(handlers.delete_collection(self.store, rt, selection, options, dry_run))
                obj = self.store.require(rt, namespace, name)
                handlers.check_preconditions(rt, obj, options)
                remaining = self.store.delete(
                    rt, obj, str(options.get("propagationPolicy") or "Background"), dry_run=dry_run
                )
                if remaining is not None:
                    return self._json(self.store.present(rt, remaining))
                return self._json(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": name,
                            "group": rt.group,
                            "kind": rt.plural,
                            "uid": obj["metadata"]["uid"],
                        },
                    }
                )
        raise ApiError(405, "the server does not allow this method on the requested resource")
