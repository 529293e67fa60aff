"""A Kubernetes API server emulator for the operator's tests (no real cluster is obtainable here).

`KubeEmulator` serves the Kubernetes API over plain HTTP on 127.0.0.1 (a free port) from its own
thread and event loop, so the official `kubernetes` client, `kubectl` subprocesses, kopf
(`KopfRunner` or `kopf run`) and async tests all use it alike, and a test may block (sync clients,
`time.sleep`) without stalling it.

It subclasses `kmock.KubernetesEmulator` (kmock 0.8), which stays the aiohttp request handler and
request recorder; it replaces kmock's request parsing (it fails on paths such as
`/api/v1/namespaces`) and its lax object handling with an API-server-like store and router.
Over stock kmock it adds (emulated):
- discovery: `/api`, `/api/v1` (groupVersion "v1"), `/apis`, `/apis/<g>`, `/apis/<g>/<v>`, `/version`,
  `/healthz`; a fixed set of built-in resources (namespaces, pods, services, configmaps, secrets,
  serviceaccounts, events, endpoints, pvcs, deployments, statefulsets, daemonsets, replicasets,
  jobs, cronjobs, hpa (autoscaling/v2), pdb, ingresses, networkpolicies, rbac, leases, events.k8s.io,
  CRDs) plus every served version of every CRD, with `<plural>/status` (and `/scale`) subresources;
- server-set metadata: uid, creationTimestamp, resourceVersion (one global counter, bumped on
  every write, also on delete), generation (1 on create, +1 when anything outside metadata and
  status changes); namespace from the URL; generateName; writes that change nothing are no-ops;
- create (201), get, list (kind/apiVersion/metadata.resourceVersion, `limit`/`continue`), replace
  (PUT), patch (merge, JSON patch, strategic merge guided by the upstream schemas' patch strategy,
  and server-side apply as create-or-update: fieldManager required, force accepted, fields this
  manager applied before and now omits are removed, other managers' fields kept; no managedFields,
  no conflicts), delete and deletecollection, `dryRun=All`;
- errors as `Status` bodies: 404 NotFound, 409 AlreadyExists, 409 Conflict (stale
  `metadata.resourceVersion` or uid precondition), 422 Invalid with `details.causes`, 400, 405, and
  415 (e.g. a strategic merge patch of a custom resource, as a real server answers);
- the status subresource kept apart: writes to `/status` change only `.status`, writes to the main
  object never change `.status`, and status sent on create is dropped (for kinds with the subresource);
- `labelSelector` (=, ==, !=, in, notin, exists, !exists) and `fieldSelector` (any dotted path,
  =, ==, !=) on list, watch and deletecollection;
- watches (`?watch=true`, one namespace or all, by name too): newline-delimited JSON events,
  synthetic ADDED for the current state when no resourceVersion is given, else only events after
  it (410 Expired as an ERROR event once `expire_watch_history()` dropped them), selector
  transitions as ADDED/DELETED, `timeoutSeconds`; no bookmarks;
- finalizers (DELETE sets deletionTimestamp, removal of the last finalizer deletes; no new
  finalizers once deleting), propagationPolicy Background/Foreground/Orphan, synchronous
  cascading garbage collection by ownerReferences uid, namespace termination (contents deleted,
  creation in it refused), CRD deletion deletes its custom resources;
- validation of every written object, answered 422: built-in kinds against the upstream schemas of
  `kubernetes-validate` in strict mode (unknown fields fail) for `kube_version` (default "1.33");
  object names, label and annotation keys/values; custom resources: metadata against ObjectMeta,
  the CRD's `openAPIV3Schema` with `OAS30Validator` + the OAS 3.0 format checker (after dropping
  `x-kubernetes-*` and mapping int-or-string to anyOf), schema defaults applied, unknown fields
  pruned with a `Warning` header (or refused with `fieldValidation=Strict`, as kubectl sends, or
  always with `strict_custom_fields=True`), and `x-kubernetes-validations` CEL rules via cel-python
  (`self` at the node, `oldSelf` on update only); updates of custom resources ratchet (errors and
  rules at values the update left unchanged are ignored, as with CRDValidationRatcheting);
- new objects of built-in kinds with a status subresource get the status a Go server writes (the
  required fields at zero values, e.g. an HPA's `desiredReplicas: 0`);
- test helpers: fault injection, a request log, a synchronous state API that acts like another
  client (watchers see its writes), waiting helpers, and a kubeconfig writer.

Not emulated: authentication/authorisation (any or no token is accepted), admission webhooks and
policies, the OpenAPI endpoints (`kubectl` needs `--validate=false`), protobuf request bodies
beyond Namespace/ConfigMap/Secret/ServiceAccount (the kinds `kubectl create <generator>` makes
that are decoded here; others, and CBOR, are answered 415: use `kubectl apply -f`),
aggregated discovery, Table output (`kubectl get` prints NAME and AGE only), built-in defaulting
(a Deployment keeps exactly what was sent), controllers (no pods, no Deployment status: use
`patch_status`; pods are deleted at once), managedFields and SSA conflicts, CRD conversion (versions
share one store; apiVersion is rewritten), structural-schema checks of CRDs beyond names, storage
version and CEL compilation, watch bookmarks, Kubernetes' CEL extension functions that cel-python
lacks (`lowerAscii`, `isSorted`, `quantity`...), per-kind field selector restrictions, rate limiting.
Built-in kinds always reject unknown fields (a real server prunes them unless fieldValidation=Strict).

An independent check of the operator: nothing here imports `routeiq_operator` or `routeiq_router`.
What the emulator accepts, refuses, defaults and prunes comes from the upstream schemas, the CRDs'
own schemas and rules, and this package's code, never from the operator's models or validation, so
a bug in the operator's own checks cannot hide itself by being reused as the API server's.

Modules, by concern:
- `server`: `KubeEmulator` (HTTP routing, lifecycle, faults, request records, kubeconfig), with
  `client` (the synchronous state API), `handlers` (PATCH and apply, scale, list pages, deletes),
  `discovery` and `records` (`RequestRecord`, `Fault`);
- `store` (creates, replaces, updates), built on `deletion` (finalizers, garbage collection,
  namespace and CRD deletion) and `state` (objects, resourceVersion, served types);
- `watches` (events, history, watch streams); `selectors` (label and field selectors);
- `patches` (merge patch, strategic merge patch, JSON patch, server-side apply's merge and forget);
- `validation` (the checks of every write), `schemas` (upstream schemas of built-in kinds, CRD
  schemas: conversion, pruning, defaults), `cel` (`x-kubernetes-validations` rules);
- `resources` (`ResourceType`, the built-in kinds, CRDs' types), `errors` (`ApiError`), `objects`
  (shared helpers), `protobuf` (the protobuf bodies kubectl's typed generators send).
"""

from tests.k8s.emulator.errors import ApiError
from tests.k8s.emulator.patches import json_patch, merge_patch, strategic_merge_patch
from tests.k8s.emulator.protobuf import decode_protobuf
from tests.k8s.emulator.records import Fault, RequestRecord
from tests.k8s.emulator.resources import BUILTIN_RESOURCES, ResourceType
from tests.k8s.emulator.schemas import DEFAULT_KUBE_VERSION, apply_defaults, to_oas30
from tests.k8s.emulator.selectors import parse_field_selector, parse_label_selector
from tests.k8s.emulator.server import KubeEmulator

__all__ = [
    "BUILTIN_RESOURCES",
    "DEFAULT_KUBE_VERSION",
    "ApiError",
    "Fault",
    "KubeEmulator",
    "RequestRecord",
    "ResourceType",
    "apply_defaults",
    "decode_protobuf",
    "json_patch",
    "merge_patch",
    "parse_field_selector",
    "parse_label_selector",
    "strategic_merge_patch",
    "to_oas30",
]
