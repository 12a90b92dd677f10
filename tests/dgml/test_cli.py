"""The hub operator's commands, run as a user runs them: the installed ``dgml`` executable."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, mesh

DGML = shutil.which("dgml", path=str(Path(sys.executable).parent)) or "dgml"


def run_dgml(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DGML, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def hub_env(tmp_path, database_url) -> dict[str, str]:
    return {"DGML_DATA_DIR": str(tmp_path / "hub"), "DGML_DATABASE_URL": database_url}


def test_user_create_prints_a_working_token_as_last_line(hub_env, settings):
    from fastapi.testclient import TestClient

    from dgml.app import create_app

    result = run_dgml("user", "create", "maker", env=hub_env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("dgml_")
    admin = run_dgml("user", "create", "root", "--admin", env=hub_env)
    assert admin.returncode == 0
    with TestClient(create_app(settings)) as client:
        me = client.get("/api/v1/user", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["name"] == "maker"
        assert me.json()["is_admin"] is False
        root_token = admin.stdout.strip().splitlines()[-1]
        root = client.get("/api/v1/user", headers={"Authorization": f"Bearer {root_token}"})
        assert root.json()["is_admin"] is True


def test_user_create_refuses_taken_and_bad_names_in_one_line(hub_env):
    assert run_dgml("user", "create", "maker", env=hub_env).returncode == 0
    taken = run_dgml("user", "create", "MAKER", env=hub_env)
    assert taken.returncode == 1
    assert "taken" in taken.stderr
    assert "Traceback" not in taken.stderr
    bad = run_dgml("user", "create", "no spaces", env=hub_env)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
    assert run_dgml("user", env=hub_env).returncode in (0, 2)


def test_bad_setting_is_one_clear_line(hub_env):
    result = run_dgml("user", "create", "x", env={**hub_env, "DGML_MAX_UPLOAD_BYTES": "lots"})
    assert result.returncode == 1
    assert "DGML_MAX_UPLOAD_BYTES" in result.stderr
    assert "Traceback" not in result.stderr


def _redis_processes(data_dir: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-af", "redis-server"], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if str(data_dir) in line]


def _worker_processes(data_dir: Path) -> list[int]:
    """Pids of ``dgml worker`` processes started for this data dir."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"worker" in cmdline and f"DGML_DATA_DIR={data_dir}".encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_up_serves_the_api_with_embedded_redis_and_stops_cleanly(tmp_path):
    data_dir = tmp_path / "hub"
    env = {"DGML_DATA_DIR": str(data_dir)}
    for key in ("DGML_DATABASE_URL", "DGML_REDIS_URL"):
        os.environ.pop(key, None)
    token = run_dgml("user", "create", "alice", env=env).stdout.strip().splitlines()[-1]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [DGML, "up", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/readyz").json()["ready"]:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "dgml up did not become ready"
            time.sleep(0.1)
        ready = httpx.get(base + "/readyz").json()
        assert ready == {"ready": True, "database": "ok", "redis": "ok"}
        headers = {"Authorization": f"Bearer {token}"}
        assert (
            httpx.post(
                base + "/api/v1/designs",
                headers=headers,
                json={"name": "cube", "title": "Calibration cube", "license": "CC0-1.0"},
            ).status_code
            == 201
        )
        pushed = httpx.post(
            base + "/api/v1/designs/alice/cube/versions",
            headers=headers,
            files=[("files", ("cube.stl", mesh("20mm-xyz-cube.stl")))],
        )
        assert pushed.status_code == 201
        # The hub's own workers (one for checks and builds, one for routing) check the file:
        # pending, then the verdict.
        assert len(_worker_processes(data_dir)) == 2
        deadline = time.monotonic() + 60
        while (verdict := pushed.json()["verdict"]) == "pending":
            assert time.monotonic() < deadline, "the version stayed pending"
            time.sleep(0.2)
            pushed = httpx.get(base + "/api/v1/designs/alice/cube/versions/1")
        assert verdict == "pass"
        assert httpx.get(base + "/api/v1/openapi.json").json()["info"]["title"] == "dgml"
        assert (data_dir / "redis" / "appendonly.aof").exists() or (
            data_dir / "redis" / "appendonlydir"
        ).exists()
        assert len(_redis_processes(data_dir)) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    deadline = time.monotonic() + 10
    while _redis_processes(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _redis_processes(data_dir) == []
    assert _worker_processes(data_dir) == []
    # The data survives a restart.
    again = subprocess.Popen(
        [DGML, "up", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                got = httpx.get(base + "/api/v1/designs/alice/cube/versions/1/files/cube.stl")
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert got.content == mesh("20mm-xyz-cube.stl")
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(30)
    assert again.returncode == 0
