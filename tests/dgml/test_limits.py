"""Request bodies other than uploads are capped before any route reads them."""

from __future__ import annotations

import json

import httpx
import pytest

from dgml.app import create_app

pytestmark = pytest.mark.usefixtures("redis_url")


@pytest.fixture
def small_cap_client(settings):
    from fastapi.testclient import TestClient

    settings = settings.model_copy(update={"max_body_bytes": 4096})
    with TestClient(create_app(settings)) as client:
        yield client


def design(title: str) -> dict:
    return {"name": "bracket", "title": title, "license": "CC0-1.0"}


def test_a_body_within_the_cap_reaches_the_route(small_cap_client, alice):
    response = small_cap_client.post("/api/v1/designs", json=design("ok"), headers=alice.headers)
    assert response.status_code == 201, response.text


def test_a_declared_length_over_the_cap_is_refused_at_once(small_cap_client, alice):
    response = small_cap_client.post(
        "/api/v1/designs", json=design("x" * 10_000), headers=alice.headers
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert small_cap_client.get("/api/v1/designs/alice/bracket").status_code == 404


def test_a_streamed_body_over_the_cap_is_refused(small_cap_client, alice):
    data = json.dumps(design("x" * 10_000)).encode()

    def chunks():
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    response = small_cap_client.post(
        "/api/v1/designs",
        content=chunks(),
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert small_cap_client.get("/api/v1/designs/alice/bracket").status_code == 404


def test_a_streamed_body_within_the_cap_is_passed_on_whole(small_cap_client, alice):
    data = json.dumps(design("streamed")).encode()
    response = small_cap_client.post(
        "/api/v1/designs",
        content=iter([data[:10], data[10:]]),
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "streamed"


def test_a_malformed_length_is_refused(small_cap_client, alice):
    request = httpx.Request(
        "POST",
        "http://testserver/api/v1/designs",
        headers={**alice.headers, "content-type": "application/json", "content-length": "abc"},
        content=b"{}",
    )
    response = small_cap_client.send(request)
    assert response.status_code in (400, 413)


def test_uploads_keep_their_own_cap(small_cap_client, alice):
    assert small_cap_client.post("/api/v1/designs", json=design("d"), headers=alice.headers)
    response = small_cap_client.post(
        "/api/v1/designs/alice/bracket/versions",
        files=[("files", ("big.bin", b"\0" * 100_000))],
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
