"""Test-facing records: each request the emulator received, and the faults a test injects."""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass
class RequestRecord:
    """One request the emulator received; `status` is set once answered (200 when a watch starts)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str = ""
    status: int | None = None
    fault: bool = False

    @property
    def watch(self) -> bool:
        return self.method == "GET" and self.query.get("watch") in ("true", "1")

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        return f"{self.method} {self.path}{'?' + query if query else ''} -> {self.status}"


@dataclasses.dataclass
class Fault:
    """An injected failure: the next `times` matching requests are answered with `status`."""

    status: int
    method: str | None = None
    path_re: re.Pattern[str] | None = None
    times: int | None = 1  # None: until cleared
    watch: bool | None = None  # None: watches and other requests alike
    reason: str | None = None
    message: str | None = None
    retry_after: int | None = None
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, record: RequestRecord) -> bool:
        if self.exhausted:
            return False
        if self.method is not None and self.method.upper() != record.method:
            return False
        if self.watch is not None and self.watch != record.watch:
            return False
        return self.path_re is None or self.path_re.search(record.path) is not None
