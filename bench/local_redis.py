"""A throwaway redis-server for the benchmarks: the test suite's `RedisServer` (a free loopback
port, no persistence) in a temporary directory of its own.

    with LocalRedis() as server:
        print(server.url)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repository root, for tests.redis_server (as operator_scale.py does)
    sys.path.insert(0, str(ROOT))

from tests.redis_server import RedisServer  # noqa: E402

__all__ = ["LocalRedis", "redis_version"]


def redis_version() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    version = next((part for part in out.split() if part.startswith("v=")), "v=?")
    return version.removeprefix("v=")


class LocalRedis(RedisServer):
    def __init__(self) -> None:
        # removed when the object goes away (TemporaryDirectory's finalizer)
        self._directory = tempfile.TemporaryDirectory(prefix="routeiq-bench-redis-")
        super().__init__(Path(self._directory.name))
