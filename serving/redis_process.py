"""A real redis-server for tests and `make bench-service`: its own process on a free loopback port, no
persistence, data dir in a temp folder; `kill()` (SIGKILL) and `start()` again on the same port for outages.

  server = RedisServer(tmp_path).start()
  store = RedisHistoryStore(server.url, ...)
  server.stop()

scripts/env's Debian root installs redis-server (SYSTEM_PACKAGES); elsewhere it must be on PATH.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path, port: int | None = None):
        self.executable = shutil.which("redis-server")
        if self.executable is None:
            raise RuntimeError(
                "redis-server is not on PATH: run the tests through scripts/env (its Debian root installs "
                "it) or install Debian's redis-server package (apt-get install redis-server)"
            )
        self.folder = folder
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        log = self.folder / "redis.log"
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.folder), "--logfile", str(log)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        text = log.read_text() if log.exists() else "(no log)"
                        message = f"redis-server did not start on port {self.port}:\n{text}"
                        raise RuntimeError(message) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown handshake."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
