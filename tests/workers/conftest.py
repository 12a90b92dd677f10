"""Fixtures for the job agent: configs written to disk, a tiny HTTP file server that counts its
downloads, PrusaSlicer (and a wrapper that counts its runs), and a real OctoPrint server with
its virtual printer.

OctoPrint is not installed into the project's virtualenv (its pinned dependencies would fight
ours): the fixture makes a virtualenv of its own once, under ``~/.cache/dgml-test`` (or
``DGML_TEST_OCTOPRINT_VENV``), and reuses it. Without network that install fails: the tests
that need OctoPrint then fail in CI (``CI=true``) and are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from workers.config import AgentConfig, parse_config

SHARED_MESHES = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "meshes"
TESTDATA = Path(__file__).resolve().parents[1] / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"
OCTOPRINT_VERSION = "octoprint==1.11.*"
OCTOPRINT_VENV = Path(
    os.environ.get("DGML_TEST_OCTOPRINT_VENV")
    or Path.home() / ".cache" / "dgml-test" / "octoprint-venv"
)
OCTOPRINT_KEY = "dgml-test-octoprint-key-0123456789"


def unavailable(reason: str) -> None:
    """Fail in CI, where everything must be there; skip with the reason elsewhere."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def mesh_path(name: str) -> Path:
    """A real mesh: from shared/testdata when it is beside the project, else tests/data."""
    for folder in (SHARED_MESHES, TESTDATA):
        if (folder / name).is_file():
            return folder / name
    unavailable(f"{name} is in neither {SHARED_MESHES} nor {TESTDATA}")
    raise AssertionError


@pytest.fixture(scope="session")
def prusa_slicer() -> str:
    path = shutil.which("prusa-slicer")
    if path is None:
        unavailable("prusa-slicer is not installed (scripts/bootstrap.sh installs it)")
    return str(path)


@pytest.fixture
def counting_slicer(tmp_path, prusa_slicer) -> tuple[Path, Path]:
    """A prusa-slicer that appends a line to a log on every slice, then runs the real one."""
    log = tmp_path / "slicer-runs.log"
    wrapper = tmp_path / "bin" / "counting-prusa-slicer"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f'#!/bin/sh\ncase "$*" in *--export-gcode*) echo slice >> "{log}";; esac\n'
        f'exec "{prusa_slicer}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, log


def config_text(
    state_dir: Path,
    *,
    driver: str = "simulator",
    options: str = "duration_s = 0",
    process: str = "fdm",
    extra: str = "",
    slicer: str = "prusa-slicer",
    volume: str = "[200, 200, 180]",
) -> str:
    """A one-machine config; ``options`` go into the driver's table."""
    tool = {"fdm": "nozzle_mm = 0.4", "laser": "kerf_mm = 0.2"}.get(process, "")
    materials = '["PLA", "PETG"]' if process == "fdm" else '["plywood"]'
    return f"""
[agent]
server = "http://127.0.0.1:1"
state_dir = "{state_dir}"
prusa_slicer = "{slicer}"

[[machines]]
name = "m1"
process = "{process}"
materials = {materials}
build_volume_mm = {volume}
{tool}
driver = "{driver}"
{extra}

[machines.{driver}]
{options}
"""


def make_config(tmp_path: Path, **kwargs) -> AgentConfig:
    return parse_config(config_text(tmp_path / "state", **kwargs), base_dir=tmp_path)


@dataclass
class FileServer:
    """Files served over HTTP from memory; counts the GETs of each path."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    gets: Counter = field(default_factory=Counter)
    # path -> HTTP status to answer instead of the file
    statuses: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, content: bytes) -> dict:
        """Serve ``content`` at ``/name``; returns the file as a job names it."""
        self.files["/" + name] = content
        return {
            "name": name,
            "url": f"{self.base}/{name}",
            "sha256": hashlib.sha256(content).hexdigest(),
            "size": len(content),
        }


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server_state = FileServer(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.gets[self.path] += 1
            content = server_state.files.get(self.path)
            if self.path in server_state.statuses:
                self.send_error(server_state.statuses[self.path])
                return
            if content is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server_state
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


# --- OctoPrint ---------------------------------------------------------------------------


def _octoprint_python() -> Path:
    """The virtualenv's python with OctoPrint, made once (into a temporary name, renamed at
    the end, so an interrupted install is never taken for a finished one)."""
    python = OCTOPRINT_VENV / "bin" / "python"
    if (OCTOPRINT_VENV / ".complete").is_file() and python.exists():
        return python
    temp = OCTOPRINT_VENV.with_name(f"{OCTOPRINT_VENV.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(temp)], check=True, timeout=300, capture_output=True
        )
        subprocess.run(
            [
                str(temp / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                OCTOPRINT_VERSION,
            ],
            check=True,
            timeout=1200,
            capture_output=True,
            text=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(temp, ignore_errors=True)
        detail = getattr(exc, "stderr", "") or str(exc)
        unavailable(f"could not install {OCTOPRINT_VERSION} into a virtualenv: {detail[-500:]}")
    (temp / ".complete").write_text(OCTOPRINT_VERSION + "\n")
    shutil.rmtree(OCTOPRINT_VENV, ignore_errors=True)
    os.rename(temp, OCTOPRINT_VENV)
    return python


# The virtual printer starts at an ambient temperature near the print temperatures, so the
# waits for heat-up (10 degrees a second in its simulation) stay short.
OCTOPRINT_CONFIG = f"""\
accessControl:
  enabled: true
server:
  firstRun: false
  onlineCheck:
    enabled: false
  pluginBlacklist:
    enabled: false
plugins:
  virtual_printer:
    enabled: true
    ambientTemperature: 205.0
  tracking:
    enabled: false
  announcements:
    enabled: false
serial:
  port: VIRTUAL
  autoconnect: true
api:
  key: {OCTOPRINT_KEY}
"""


@dataclass
class OctoPrint:
    url: str
    key: str
    client: httpx.Client

    def state(self) -> dict:
        return self.client.get("/api/job").json()

    def idle(self, timeout: float = 120.0) -> None:
        """Wait until the printer is operational and not printing (cancelling a leftover,
        connecting again after an error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()["state"]
            if state == "Operational":
                return
            if state in ("Printing", "Paused", "Starting"):
                self.client.post("/api/job", json={"command": "cancel"})
            if "error" in state.casefold() or state in ("Offline", "Closed"):
                self.client.post("/api/connection", json={"command": "connect", "port": "VIRTUAL"})
                time.sleep(1)
            time.sleep(0.2)
        raise AssertionError(f"OctoPrint is still {self.state()['state']}")

    def file(self, name: str) -> dict | None:
        response = self.client.get(f"/api/files/local/{name}")
        return None if response.status_code == 404 else response.json()


@pytest.fixture(scope="session")
def octoprint_server(tmp_path_factory) -> Iterator[OctoPrint]:
    python = _octoprint_python()
    base = tmp_path_factory.mktemp("octoprint")
    (base / "config.yaml").write_text(OCTOPRINT_CONFIG)
    port = free_port()
    log = open(base / "serve.log", "wb")  # noqa: SIM115 - open for the server's whole life
    proc = subprocess.Popen(
        [
            str(python),
            "-m",
            "octoprint",
            "serve",
            "--iknowwhatimdoing",
            "--basedir",
            str(base),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"X-Api-Key": OCTOPRINT_KEY}, timeout=30)
    try:
        _wait_operational(proc, client, base / "serve.log")
        yield OctoPrint(url, OCTOPRINT_KEY, client)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _wait_operational(proc: subprocess.Popen, client: httpx.Client, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"OctoPrint exited with {proc.returncode}:\n{tail}")
        try:
            state = client.get("/api/connection").json()["current"]["state"]
            if state == "Operational":
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise RuntimeError("OctoPrint's virtual printer was not operational within 180 s")


@pytest.fixture
def octoprint(octoprint_server) -> OctoPrint:
    octoprint_server.idle()
    return octoprint_server
