"""Readiness follows Redis down and back up; ``dgml up`` starts and stops cleanly again and again,
leaving no process, socket or pid file behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.exceptions import RedisError

from dgml.app import create_app
from dgml.embedded import find_redis_server
from tests.conftest import free_port

MARK = "DGML_TEST_RUN_MARK"


class RedisServer:
    """A redis-server of this test's own, that it can stop and start again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen([find_redis_server(), *args], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:  # a guard against a hang, not a measurement
            try:
                with Redis.from_url(self.url) as client:
                    client.ping()
                return
            except RedisError:
                assert self.process.poll() is None, "redis-server exited at start"
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)
        self.process = None


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_readiness_follows_redis_down_and_back(settings, own_redis):
    with TestClient(create_app(settings.model_copy(update={"redis_url": own_redis.url}))) as client:
        assert client.get("/readyz").status_code == 200

        own_redis.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["ready"] is False
        assert down.json()["database"] == "ok"
        assert down.json()["redis"].startswith("error")
        assert client.get("/healthz").status_code == 200

        own_redis.start()
        back = client.get("/readyz")
        assert back.status_code == 200, back.text
        assert back.json() == {"ready": True, "database": "ok", "redis": "ok"}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def processes_marked(mark: str) -> set[int]:
    """Live processes whose environment holds ``mark`` (children inherit it; redis-server
    rewrites that memory for its process title, so it is found by asking it instead)."""
    needle = f"{MARK}={mark}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0") and alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def embedded_redis_pid(data: Path) -> int:
    with Redis(unix_socket_path=str(data / "redis" / "redis.sock")) as client:
        return int(client.info("server")["process_id"])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_ready(process: subprocess.Popen, base: str, log: Path) -> dict:
    deadline = time.monotonic() + 90
    while True:  # a guard against a hang, not a measurement
        assert process.poll() is None, f"dgml up exited at start: {log.read_text()[-2000:]}"
        try:
            answer = httpx.get(base + "/readyz", timeout=5)
            if answer.status_code == 200:
                return answer.json()
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"dgml up never got ready: {log.read_text()[-2000:]}"
        time.sleep(0.1)


@pytest.mark.slow
def test_dgml_up_starts_and_stops_ten_times_in_a_row(tmp_path):
    """The embedded stack as it runs with nothing configured (SQLite, its own Redis): what is
    checked here, processes, sockets and files, does not depend on the database."""
    mark = uuid.uuid4().hex
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGML_")}
    if "DGML_REDIS_SERVER" in os.environ:
        env["DGML_REDIS_SERVER"] = os.environ["DGML_REDIS_SERVER"]
    env.update(
        {
            MARK: mark,
            "DGML_DATA_DIR": str(data),
            "DGML_VALIDATION_WORKERS": "1",
            "DGML_ROUTE_WORKERS": "1",
        }
    )
    base = f"http://127.0.0.1:{port}"
    for attempt in range(10):
        log = tmp_path / f"up-{attempt}.log"
        with log.open("wb") as sink:
            hub = subprocess.Popen(
                [sys.executable, "-m", "dgml", "up", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            try:
                ready = wait_ready(hub, base, log)
                assert ready == {"ready": True, "database": "ok", "redis": "ok"}
                # The hub and its children run: the embedded Redis and two workers.
                pids = processes_marked(mark) | {embedded_redis_pid(data)}
                assert len(pids) >= 4
            finally:
                hub.send_signal(signal.SIGTERM)
                code = hub.wait(60)
        assert code == 0, f"stop {attempt}: exit {code}: {log.read_text()[-2000:]}"
        assert processes_marked(mark) == set(), f"left running after stop {attempt}"
        assert [pid for pid in pids if alive(pid)] == [], f"left running after stop {attempt}"
        assert port_is_free(port)
        assert not (data / "redis" / "redis.sock").exists()
        assert list(data.rglob("*.pid")) == []
