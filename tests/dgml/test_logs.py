"""Log lines are JSON objects that carry the id of the request they were written for; the id
comes from a sane X-Request-Id header or is made, and is answered in the response."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from dgml.app import create_app
from dgml.logs import JsonFormatter, RequestIdFilter, TextFormatter, request_id
from tests.conftest import free_port

NEW_ID = re.compile(r"[0-9a-f]{32}")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@contextmanager
def captured(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """Log lines of this process, formatted as the hub formats them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def logging_client(settings) -> Iterator[TestClient]:
    """The hub's app plus three routes that log: in the thread pool, in the loop, and failing."""
    app = create_app(settings)
    log = logging.getLogger("dgml.test_logs")

    @app.get("/test/sync")
    def sync_route() -> dict:
        log.info("made a part", extra={"design": "alice/bracket", "parts": 3})
        return {}

    @app.get("/test/async")
    async def async_route() -> dict:
        log.warning("waited for the printer")
        return {}

    @app.get("/test/boom")
    def failing_route() -> dict:
        raise RuntimeError("the extruder jammed")

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_a_requests_log_lines_carry_its_id(logging_client):
    with captured(JsonFormatter()) as stream:
        response = logging_client.get("/test/sync", headers={"X-Request-Id": "order-42.abc"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "order-42.abc"
    (line,) = [e for e in lines(stream) if e["logger"] == "dgml.test_logs"]
    assert line["request_id"] == "order-42.abc"
    assert line["level"] == "info"
    assert line["message"] == "made a part"
    assert line["design"] == "alice/bracket"
    assert line["parts"] == 3
    assert ISO_UTC.fullmatch(line["time"])


def test_each_request_without_an_id_gets_a_new_one(logging_client):
    with captured(JsonFormatter()) as stream:
        first = logging_client.get("/test/async")
        second = logging_client.get("/test/async")
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(NEW_ID.fullmatch(i) for i in ids)
    assert ids[0] != ids[1]
    logged = [e["request_id"] for e in lines(stream) if e["logger"] == "dgml.test_logs"]
    assert logged == ids
    assert request_id.get() is None  # nothing leaks into the caller's context


@pytest.mark.parametrize(
    "sent", [b"has spaces", b'quote"d', b"x" * 129, b"-leading-dash", "é".encode("latin-1"), b""]
)
def test_an_unsafe_id_is_replaced(logging_client, sent):
    with captured(JsonFormatter()) as stream:
        response = logging_client.get("/test/sync", headers={"X-Request-Id": sent})
    answered = response.headers["x-request-id"]
    assert NEW_ID.fullmatch(answered)
    (line,) = [e for e in lines(stream) if e["logger"] == "dgml.test_logs"]
    assert line["request_id"] == answered


def test_an_unexpected_error_is_logged_with_the_id_and_answered_with_it(logging_client):
    with captured(JsonFormatter()) as stream:
        response = logging_client.get("/test/boom", headers={"X-Request-Id": "req-7"})
    assert response.status_code == 500
    assert response.json()["error"] == "internal"
    assert response.headers["x-request-id"] == "req-7"
    (line,) = [e for e in lines(stream) if e["logger"] == "dgml.app"]
    assert line["level"] == "error"
    assert line["request_id"] == "req-7"
    assert "RuntimeError: the extruder jammed" in line["exception"]


def test_text_format_shows_the_id_in_brackets(logging_client):
    with captured(TextFormatter()) as stream:
        logging_client.get("/test/sync", headers={"X-Request-Id": "abc"})
    (line,) = [t for t in stream.getvalue().splitlines() if "dgml.test_logs" in t]
    assert re.fullmatch(r"\S+Z INFO dgml\.test_logs \[abc\]: made a part", line)


@pytest.mark.slow
def test_dgml_serve_writes_json_access_lines_with_the_request_id(tmp_path, settings):
    port = free_port()
    env = {
        **os.environ,
        "DGML_DATA_DIR": str(tmp_path / "data"),
        "DGML_DATABASE_URL": settings.resolved_database_url,
        "DGML_REDIS_URL": str(settings.redis_url),
        "DGML_LOG_FORMAT": "json",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "dgml", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:  # a guard against a hang, not a measurement
                assert server.poll() is None, stderr.read_text()
                try:
                    httpx.get(base + "/healthz", timeout=5)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "dgml serve did not come up"
                    time.sleep(0.1)
            answer = httpx.get(base + "/readyz", headers={"X-Request-Id": "scan-99"}, timeout=10)
            assert answer.headers["x-request-id"] == "scan-99"
        finally:
            server.send_signal(signal.SIGTERM)
            # Uvicorn ends by re-raising the signal it stopped for, as supervisors expect.
            assert server.wait(30) in (0, -signal.SIGTERM)
    entries = [json.loads(line) for line in stderr.read_text().splitlines()]
    (access,) = [e for e in entries if e.get("request_id") == "scan-99"]
    assert access["logger"] == "uvicorn.access"
    assert (access["method"], access["path"], access["status"]) == ("GET", "/readyz", 200)
    assert any(e["logger"] == "uvicorn.error" for e in entries)
