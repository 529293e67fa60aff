"""A real redis-server for the tests, on a free port, that a test can stop and start again."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from tests.ports import free_port


class RedisServer:
    def __init__(
        self, directory: Path, *, persistent: bool = False, password: str | None = None, tls: bool = False
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:  # .ci/run's machine has it; its absence is a broken setup, not a skip
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.persistent = persistent  # append-only file fsynced on every write: survives stop/start
        self.password = password
        self.tls = tls  # TLS only (rediss://), with a self-signed certificate made by openssl
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.directory / 'cert.pem'}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _tls_arguments(self) -> list[str]:
        if not self.tls:
            return ["--port", str(self.port)]
        cert, key = self.directory / "cert.pem", self.directory / "key.pem"
        if not cert.exists():
            request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
            subprocess.run(
                [*request, "-keyout", str(key), "-out", str(cert), *subject], check=True, capture_output=True
            )
        files = ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
        return ["--port", "0", "--tls-port", str(self.port), *files, "--tls-auth-clients", "no"]

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                *self._tls_arguments(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
