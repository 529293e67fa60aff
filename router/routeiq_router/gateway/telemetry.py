"""The gateway's metrics listener: one Prometheus scrape with the totals of every worker.

`routeiq gateway` (the parent process, before any worker or prometheus_client import):

1. `MetricsDirectory.create()` makes a private directory under `$TMPDIR` (else /tmp) and sets
   `PROMETHEUS_MULTIPROC_DIR` to it: prometheus_client, in every worker (and in the parent,
   which serves the one-worker case itself), then keeps each value in a per-process file there;
2. `MetricsDirectory.serve(host, port)` binds the metrics port (a busy port is a SettingsError
   naming `ROUTEIQ_METRICS_PORT`, before any worker starts) and answers each scrape from a
   thread with prometheus_client's `MultiProcessCollector` over those files. Before each
   collection, the files of workers that have exited are marked dead (`mark_process_dead`: their
   `live*` gauges disappear; their counters and histograms stay in the totals, so a restarted
   worker does not make a counter go backwards);
3. `MetricsDirectory.close()` stops the listener and removes the directory.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from routeiq_router.settings import SettingsError

__all__ = ["MetricsDirectory"]

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not reaped yet, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


class _Collector:
    """MultiProcessCollector over the directory, after marking exited workers dead."""

    def __init__(self, path: Path) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.path = path
        self._inner = MultiProcessCollector(None, path=str(path))  # type: ignore[no-untyped-call]

    def _mark_dead(self) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        # only the live gauges' files go; checked at every scrape (a pid may be reused)
        pids = {int(match.group(1)) for name in os.listdir(self.path) if (match := _PID.search(name))}
        for pid in pids:
            if not _alive(pid):
                mark_process_dead(pid, str(self.path))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Any]:
        self._mark_dead()
        collected: Iterable[Any] = self._inner.collect()  # type: ignore[no-untyped-call]
        return collected


class MetricsDirectory:
    """The multiprocess directory and the listener serving it (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @classmethod
    def create(cls) -> MetricsDirectory:
        path = Path(tempfile.mkdtemp(prefix="routeiq-metrics-"))  # mode 0700, under $TMPDIR or /tmp
        os.environ[MULTIPROC_VARIABLE] = str(path)
        values = sys.modules.get("prometheus_client.values")
        if values is not None:  # imported before the variable was set: switch to the files now
            values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]
        return cls(path)

    def serve(self, host: str, port: int) -> None:
        """Answer `/metrics` on host:port from a thread; SettingsError when the port is taken."""
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self.path))
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as error:
            raise SettingsError(
                f"ROUTEIQ_METRICS_PORT: cannot listen on {host}:{port} for the metrics ({error.strerror}); "
                "choose a free port, or 0 to turn the metrics listener off"
            ) from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if os.environ.get(MULTIPROC_VARIABLE) == str(self.path):
            del os.environ[MULTIPROC_VARIABLE]
        shutil.rmtree(self.path, ignore_errors=True)
