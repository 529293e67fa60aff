"""Protobuf request bodies: just the kinds kubectl's typed generators create.

`kubectl create namespace|configmap|secret|serviceaccount` sends `application/vnd.kubernetes.protobuf`;
those four kinds are decoded here, anything else is answered 415 (send JSON: `kubectl apply -f`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import Any, Final

from tests.k8s.emulator.errors import ApiError
from tests.k8s.emulator.objects import Obj

PROTOBUF: Final = "application/vnd.kubernetes.protobuf"
_PB_MAGIC: Final = b"k8s\x00"
# Field numbers from the upstream generated.proto files; a kind is a scalar name, a message, or
# ("repeated", kind) / ("map", value kind). Server-set ObjectMeta fields are not decoded.
_PbKind = Any
_PB_OWNER_REFERENCE: Final[dict[int, tuple[str, _PbKind]]] = {
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
_PB_OBJECT_META: Final[dict[int, tuple[str, _PbKind]]] = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    6: ("resourceVersion", "string"),
    11: ("labels", ("map", "string")),
    12: ("annotations", ("map", "string")),
    13: ("ownerReferences", ("repeated", _PB_OWNER_REFERENCE)),
    14: ("finalizers", ("repeated", "string")),
}
_PB_OBJECT_REFERENCE: Final[dict[int, tuple[str, _PbKind]]] = {
    1: ("kind", "string"),
    2: ("namespace", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("resourceVersion", "string"),
    7: ("fieldPath", "string"),
}
_PB_KINDS: Final[dict[tuple[str, str], dict[int, tuple[str, _PbKind]]]] = {
    ("v1", "Namespace"): {
        1: ("metadata", _PB_OBJECT_META),
        2: ("spec", {1: ("finalizers", ("repeated", "string"))}),
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", _PB_OBJECT_META),
        2: ("data", ("map", "string")),
        3: ("binaryData", ("map", "bytes")),
        4: ("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: ("metadata", _PB_OBJECT_META),
        2: ("data", ("map", "bytes")),
        3: ("type", "string"),
        4: ("stringData", ("map", "string")),
        5: ("immutable", "bool"),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", _PB_OBJECT_META),
        2: ("secrets", ("repeated", _PB_OBJECT_REFERENCE)),
        3: ("imagePullSecrets", ("repeated", {1: ("name", "string")})),
        4: ("automountServiceAccountToken", "bool"),
    },
}


def _pb_varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if index >= len(data):
            raise ValueError("truncated varint")
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, index


def _pb_fields(data: bytes) -> Iterator[tuple[int, Any]]:
    index = 0
    while index < len(data):
        key, index = _pb_varint(data, index)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, index = _pb_varint(data, index)
            yield number, value
        elif wire == 2:
            length, index = _pb_varint(data, index)
            yield number, data[index : index + length]
            index += length
        elif wire in (1, 5):
            index += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _pb_value(kind: _PbKind, raw: Any) -> Any:
    if kind == "string":
        return bytes(raw).decode()
    if kind == "bytes":
        return base64.b64encode(bytes(raw)).decode()
    if kind == "bool":
        return bool(raw)
    return _pb_message(kind, bytes(raw))


def _pb_message(spec: Mapping[int, tuple[str, _PbKind]], data: bytes) -> Obj:
    out: Obj = {}
    for number, raw in _pb_fields(data):
        if number not in spec:
            continue
        name, kind = spec[number]
        if isinstance(kind, tuple) and kind[0] == "repeated":
            out.setdefault(name, []).append(_pb_value(kind[1], raw))
        elif isinstance(kind, tuple) and kind[0] == "map":
            entry = dict(_pb_fields(bytes(raw)))
            key = bytes(entry.get(1, b"")).decode()
            out.setdefault(name, {})[key] = _pb_value(kind[1], entry.get(2, b""))
        else:
            value = _pb_value(kind, raw)
            if value not in ("", False, {}):  # Go omits empty fields in JSON; protobuf sends them
                out[name] = value
    return out


def decode_protobuf(body: bytes) -> Obj:
    """Decode a Kubernetes protobuf body (`k8s\\0` + runtime.Unknown) for the few kinds kubectl generates."""
    if not body.startswith(_PB_MAGIC):
        raise ApiError(400, "the protobuf body lacks the k8s envelope")
    try:
        envelope = dict(_pb_fields(body[len(_PB_MAGIC) :]))
        type_meta = {n: bytes(v).decode() for n, v in _pb_fields(bytes(envelope.get(1, b"")))}
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        spec = _PB_KINDS.get((api_version, kind))
        if spec is None:
            raise ApiError(
                415,
                f"the emulator cannot decode protobuf for {api_version} {kind}; send JSON "
                "(e.g. `kubectl apply -f` rather than a typed `kubectl create` generator)",
            )
        obj = _pb_message(spec, bytes(envelope.get(2, b"")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid protobuf body: {exc}") from exc
    return {"apiVersion": api_version, "kind": kind, **obj}
