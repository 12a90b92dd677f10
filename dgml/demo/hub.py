"""The hub the demo runs on: ``dgml up`` as a child process on a fresh data dir.

The demo talks to it as a maker and a fablab would (HTTP), and, as the hub operator would, opens
its database and Redis to create the accounts and register the fab labs. The child gets its own
process group and dies with the demo (``die_with_parent``), so Ctrl-C or an error in the demo
stops it in order (SIGTERM: API, then workers, then Redis) and leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from dgml.embedded import MAX_UNIX_SOCKET_PATH, die_with_parent
from dgml.errors import DgmlError

# Settings the demo's hub gets: plain log lines in its log file, enough workers that the
# library's builds and checks run side by side, short claims so that it stops at once.
HUB_ENV = {
    "DGML_LOG_FORMAT": "text",
    "DGML_LOG_LEVEL": "warning",
    # As many as there are cores (2 to 4): more would only take turns on them.
    "DGML_VALIDATION_WORKERS": str(min(4, max(2, os.cpu_count() or 2))),
    "DGML_ROUTE_WORKERS": "2",
    "DGML_CLAIM_WAIT_MAX_S": "2",
    "DGML_WORKER_TICK_S": "1",
    "DGML_ROUTE_RECHECK_S": "0.5",
    "DGML_ROUTE_RECHECK_MAX_S": "2",
    "DGML_CENTRAL_LAT": "48.8566",  # km avoided are counted against a factory in Paris
    "DGML_CENTRAL_LON": "2.3522",
    "COLUMNS": "400",  # the start-up line names the Redis URL: one line, never wrapped
}
# The demo runs on the embedded default whatever the shell names.
NOT_INHERITED = ("DGML_DATABASE_URL", "DGML_REDIS_URL", "DGML_BLOB_DIR", "DGML_DATA_DIR")
READY_TIMEOUT_S = 90.0


class DemoError(DgmlError):
    """The demo cannot go on; the message says why in one line."""

    status_code = 500
    code = "demo_failed"


def prepare_data_dir(wanted: Path | None) -> Path:
    """The data dir, made and checked writable now, so that a bad one is one clear line."""
    try:
        if wanted is None:
            return Path(tempfile.mkdtemp(prefix="dgml-demo-")).resolve()
        path = wanted.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
        return path
    except OSError as exc:
        where = wanted if wanted is not None else tempfile.gettempdir()
        raise DemoError(f"the data dir {where} is not writable: {exc.strerror or exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port(host: str, port: int) -> None:
    """Refuse a port something already listens on, before starting anything."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DemoError(
                f"port {port} on {host} is taken ({exc.strerror or exc}): "
                "choose another with --port, or leave it out for a free one"
            ) from None


def embedded_redis_url(data_dir: Path) -> str | None:
    """Where ``dgml up`` puts its embedded Redis when the socket path is short enough."""
    sock = data_dir / "redis" / "redis.sock"
    return f"unix://{sock}" if len(str(sock)) <= MAX_UNIX_SOCKET_PATH else None


class HubProcess:
    """``dgml up`` on ``data_dir`` and ``port``, from start to a clean stop."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.base = f"http://{host}:{port}"
        self.log_path = data_dir / "hub.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HubProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> float:
        """Start the hub and wait until /readyz says yes; the seconds it took."""
        check_port(self.host, self.port)
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        env.update(HUB_ENV, DGML_DATA_DIR=str(self.data_dir))
        command = [sys.executable, "-m", "dgml", "up", "--host", self.host]
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,
            )
        self._wait_ready()
        return time.perf_counter() - started

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.base, timeout=2.0) as client:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise DemoError(f"the hub stopped at start: {self._log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise DemoError(f"the hub was not ready within {READY_TIMEOUT_S:.0f} s")
                time.sleep(0.05)

    def redis_url(self) -> str | None:
        """The Redis URL the hub printed at start (or where the embedded one listens)."""
        with contextlib.suppress(OSError):
            found = re.search(r"redis: (\S+?)\)", self.log_path.read_text(errors="replace"))
            if found:
                return found.group(1)
        return embedded_redis_url(self.data_dir)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then wait; killed only if it does not stop in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            errors = [line for line in lines if "error" in line.lower()]
            if errors or lines:
                return (errors or lines)[-1][:300]
        return f"no log in {self.log_path}"
