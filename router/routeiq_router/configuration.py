"""What `routeiq config` prints, rendered from `RouteIQSettings` (`routeiq_router.settings`): the
effective configuration with secrets and URL passwords redacted, and the configuration reference,
`routeiq config --reference`, committed as docs/configuration.md (a test fails when it is stale).
"""

from __future__ import annotations

import json
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from routeiq_router.settings import RouteIQSettings, TracesSampler, acted_on, env_name

__all__ = ["effective_configuration", "render_settings_reference"]

REDACTED: Final = "**********"


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}{REDACTED}@{netloc}"))


def _display(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        return _redact_url(secret) if "://" in secret else REDACTED
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        if not value:
            return ""
        dumped = {
            key: item.model_dump(by_alias=True, exclude_none=True) if isinstance(item, BaseModel) else item
            for key, item in value.items()
        }
        return json.dumps(dumped, sort_keys=True)
    return str(value)


def effective_configuration(settings: RouteIQSettings) -> list[tuple[str, str]]:
    """(variable, value) pairs of the effective configuration; secrets and URL passwords redacted."""
    return [(env_name(name), _display(getattr(settings, name))) for name in RouteIQSettings.model_fields]


def _default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return ""
    return _display(info.default)


def _type_text(info: FieldInfo) -> str:
    annotation = info.annotation
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = str(annotation) if " | " in str(annotation) else text
    text = text.replace("pydantic.types.", "").replace("pathlib.", "").replace("routeiq_router.settings.", "")
    if "list" in text:
        return "comma-separated list"
    if "dict" in text:
        return "JSON object"
    if "TracesSampler" in text:
        return " / ".join(f"`{member.value}`" for member in TracesSampler)
    return text.replace("SecretStr", "secret").replace(" | None", "").replace("NoneType", "")


def _bounds_text(info: FieldInfo) -> str:
    bounds = []
    for item in info.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                bounds.append(f"{symbol} {getattr(item, attr)}")
    return f" ({', '.join(bounds)})" if bounds else ""


def render_settings_reference() -> str:
    """The Markdown of docs/configuration.md, generated from RouteIQSettings."""
    groups: dict[str, list[str]] = {}
    for name, info in RouteIQSettings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        group = str(extra.get("group", "Other"))
        default = _default_text(info)
        note = "" if acted_on(info) else " *Validated, not acted on yet: the gateway warns when it is set.*"
        row = (
            f"| `{env_name(name)}` | {_type_text(info)}{_bounds_text(info)} | "
            f"{f'`{default}`' if default else '—'} | {info.description or ''}{note} |"
        )
        groups.setdefault(group, []).append(row)
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from routeiq_router.settings.RouteIQSettings by `routeiq config --reference`."
        " Do not edit; a test fails when this file is stale. -->",
        "",
        "RouteIQ reads these environment variables at start-up. An invalid value stops start-up with a",
        "message naming the variable; an unknown `ROUTEIQ_*` variable is reported with the closest known",
        "name. `routeiq config` prints the effective values with secrets redacted. Provider keys",
        "(`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, ...) pass through to LiteLLM unchanged.",
    ]
    for group, rows in groups.items():
        out += [
            "",
            f"## {group}",
            "",
            "| Variable | Type | Default | Description |",
            "|---|---|---|---|",
            *rows,
        ]
    return "\n".join(out) + "\n"
