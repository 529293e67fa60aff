"""The operator's logs: one JSON object per line on stdout, the gateway's fields
(`timestamp`, `level`, `logger`, `message`, `service`), plus the object a line is about.

kopf hands every handler a logger that carries the object's reference (`k8s_ref`); every line
logged through it (the controllers' and kopf's own per-object lines) gets `kind`, `namespace`
and `name` as top-level fields. Lines about no object (start-up, watching) have none.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Final

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

__all__ = ["SERVICE", "OperatorJsonFormatter", "RedactingFilter", "configure_logging", "redact"]

SERVICE: Final = "routeiq-operator"
# what kopf's ObjectLogger adds to a record: the object (turned into fields below), whether to
# post it as an event, and the operator's settings (never logged)
_KOPF_ATTRS: Final = ("k8s_ref", "k8s_skip", "settings")


# a URL's password (scheme://user:password@host): the operator's own messages never carry one
# (validation reports paths and rules only); this is the net under every other line, kopf's too
_URL_PASSWORD: Final = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@\s:]*):[^/?#@\s]+@")


# the API server quotes a refused value in its messages (`Invalid value: "…"`), also inside an
# error's JSON body (`Invalid value: \"…\"`)
_INVALID_VALUE: Final = re.compile(r'(Invalid value: )(\\*)"(.*?)(?<!\\)\2"')


def redact(text: str) -> str:
    """`text` with the password of every URL in it, and every value the API server quotes as
    invalid, replaced by ***."""
    return _INVALID_VALUE.sub(r'\1\2"***\2"', _URL_PASSWORD.sub(r"\1:***@", text))


class RedactingFilter(logging.Filter):
    """Applies `redact` to a record's message before any handler sees it: on kopf's per-object
    logger this covers the Events kopf posts from log lines, not only the JSON lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class OperatorJsonFormatter(JsonFormatter):
    def __init__(self, service: str = SERVICE) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
            reserved_attrs=[*RESERVED_ATTRS, *_KOPF_ATTRS],
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # RFC 3339 in UTC with milliseconds, as the gateway's lines
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def add_fields(
        self, log_data: dict[str, object], record: logging.LogRecord, message_dict: dict[str, object]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        for key in ("message", "exc_info"):
            if isinstance(log_data.get(key), str):
                log_data[key] = redact(str(log_data[key]))
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            for key in ("kind", "namespace", "name"):
                if ref.get(key):
                    log_data[key] = ref[key]


def configure_logging(level: str = "INFO") -> None:
    """Every record, the operator's and kopf's, to stdout as JSON at `level`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(OperatorJsonFormatter())
    root = logging.getLogger()
    handler.addFilter(RedactingFilter())
    root.handlers[:] = [handler]
    # kopf posts Events from its per-object logger's records (its own handler there)
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(item, RedactingFilter) for item in objects.filters):
        objects.addFilter(RedactingFilter())
    root.setLevel(level.upper())
    # asyncio's debug chatter stays out unless debugging (as kopf's own configuration does)
    logging.getLogger("asyncio").setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
