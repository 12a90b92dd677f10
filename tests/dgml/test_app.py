"""Operations endpoints, the OpenAPI document, and the embedded Redis server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from dgml.app import create_app
from dgml.embedded import EmbeddedRedis
from tests.conftest import free_port


def test_healthz_and_readyz_with_a_live_redis(client, redis_client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "database": "ok", "redis": "ok"}


def test_readyz_is_503_when_redis_is_unreachable(settings):
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["ready"] is False
        assert body["database"] == "ok"
        assert body["redis"].startswith("error")
        assert client.get("/healthz").status_code == 200


def test_openapi_describes_the_registry(client):
    spec = client.get("/api/v1/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/v1/designs",
        "/api/v1/designs/{owner}/{name}",
        "/api/v1/designs/{owner}/{name}/versions",
        "/api/v1/designs/{owner}/{name}/versions/{ref}",
        "/api/v1/designs/{owner}/{name}/versions/{ref}/files/{path}",
        "/api/v1/designs/{owner}/{name}/versions/{ref}/archive.zip",
        "/api/v1/designs/{owner}/{name}/versions/{ref}/fork",
        "/api/v1/designs/{owner}/{name}/lineage",
        "/api/v1/designs/{owner}/{name}/activity",
        "/api/v1/designs/{owner}/{name}/change-requests",
        "/api/v1/designs/{owner}/{name}/change-requests/{request_id}/accept",
        "/api/v1/designs/{owner}/{name}/change-requests/{request_id}/decline",
    ):
        assert path in paths, path
    push = paths["/api/v1/designs/{owner}/{name}/versions"]["post"]
    assert "multipart/form-data" in push["requestBody"]["content"]
    version = paths["/api/v1/designs/{owner}/{name}/versions/{ref}"]["get"]
    assert [p["name"] for p in version["parameters"]] == ["owner", "name", "ref"]


def test_embedded_redis_keeps_data_in_its_append_only_file(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = Redis.from_url(server.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.set("design", "kept")
        client.close()
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = Redis.from_url(server.url)
        assert client.get("design") == b"kept"
        client.close()


def test_embedded_redis_falls_back_to_tcp_for_long_paths(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with EmbeddedRedis(deep) as server:
        assert server.url.startswith("redis://127.0.0.1:")
        assert Redis.from_url(server.url).ping()


def _pids_of_redis_in(directory) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"redis-server.*{directory}"], capture_output=True, text=True
    ).stdout
    return [int(pid) for pid in out.split()]


@pytest.mark.slow
def test_embedded_redis_dies_with_a_killed_parent(tmp_path):
    directory = tmp_path / "orphan"
    script = (
        "import sys, time, pathlib\n"
        "from dgml.embedded import EmbeddedRedis\n"
        f"EmbeddedRedis(pathlib.Path({str(directory)!r})).start()\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "up"
    assert len(_pids_of_redis_in(directory)) == 1
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while _pids_of_redis_in(directory) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _pids_of_redis_in(directory) == []
