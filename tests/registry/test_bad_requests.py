"""Malformed requests of every kind get a clear 4xx in the common error shape, never a 500."""

from __future__ import annotations

import pytest


@pytest.fixture
def design(client, alice):
    response = client.post(
        "/api/v1/designs",
        json={"name": "bracket", "title": "Bracket", "license": "MIT"},
        headers=alice.headers,
    )
    assert response.status_code == 201
    client.post(
        "/api/v1/designs/alice/bracket/versions",
        files=[("files", ("a.stl", b"solid a\nendsolid a\n"))],
        headers=alice.headers,
    )
    return "/api/v1/designs/alice/bracket"


def assert_error(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail"}
    assert body["detail"]
    if field is not None:
        assert body["field"] == field
    return body


def test_body_that_is_not_json_names_the_body(client, alice):
    response = client.post(
        "/api/v1/designs",
        content=b"{not json",
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert assert_error(response, 422, "body")["detail"] == "the body is not valid JSON"


def test_json_that_is_not_an_object_is_refused(client, alice):
    assert_error(client.post("/api/v1/designs", json=[1, 2], headers=alice.headers), 422, "body")


def test_wrong_types_name_the_field(client, alice, design):
    response = client.post(
        design + "/change-requests",
        json={"from": {"owner": "x", "name": "y", "version": "two"}, "title": "t"},
        headers=alice.headers,
    )
    assert_error(response, 422, "from.version")


@pytest.mark.parametrize("ref", ["99999999999999999999", "-1", "1.5", "0"])
def test_out_of_range_version_numbers_are_404(client, design, ref):
    assert_error(client.get(f"{design}/versions/{ref}"), 404)


def test_out_of_range_change_request_id_is_422(client, alice, design):
    response = client.post(
        design + "/change-requests/99999999999999999999/accept", headers=alice.headers
    )
    assert_error(response, 422, "request_id")


@pytest.mark.parametrize(
    "cursor", ["garbage", "A" * 5000, "aWQ6OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", "aWQ6MjE0NzQ4MzY0OA"]
)
def test_foreign_cursors_are_refused(client, design, cursor):
    assert_error(client.get("/api/v1/designs", params={"cursor": cursor}), 422, "cursor")
    assert_error(client.get(design + "/activity", params={"cursor": cursor}), 422, "cursor")


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_bad_page_sizes_are_refused(client, limit):
    assert_error(client.get("/api/v1/designs", params={"limit": limit}), 422, "limit")


def test_page_size_is_capped(client, alice, settings):
    for i in range(settings.page_size_max + 5):
        client.post(
            "/api/v1/designs",
            json={"name": f"d{i}", "title": "t", "license": "MIT"},
            headers=alice.headers,
        )
    page = client.get("/api/v1/designs", params={"limit": 10_000}).json()
    assert len(page["items"]) == settings.page_size_max
    assert page["next_cursor"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=abc", b"garbage without a boundary"),
        ("multipart/form-data", b"--abc\r\n"),
        ("application/json", b'{"files": []}'),
        (None, b""),
        (
            "multipart/form-data; boundary=abc",
            b'--abc\r\nContent-Disposition: form-data; name="files"; filename="a.stl"\r\n\r\nsolid',
        ),
    ],
)
def test_malformed_push_bodies_are_400_and_store_nothing(
    client, alice, design, settings, content_type, body
):
    headers = dict(alice.headers)
    if content_type:
        headers["content-type"] = content_type
    assert_error(client.post(design + "/versions", content=body, headers=headers), 400)
    assert client.get(design + "/versions").json()["items"][0]["number"] == 1
    assert list(settings.resolved_blob_dir.joinpath("tmp").iterdir()) == []


def test_unknown_form_field_is_named(client, alice, design):
    response = client.post(
        design + "/versions",
        files=[("files", ("b.stl", b"solid b\nendsolid b\n")), ("drawing", ("d.svg", b"<svg/>"))],
        headers=alice.headers,
    )
    assert_error(response, 422, "drawing")


def test_oversized_text_field_is_refused(client, alice, design):
    response = client.post(
        design + "/versions",
        files=[("files", ("b.stl", b"solid b\nendsolid b\n"))],
        data={"message": "x" * (1024 * 1024 + 1)},
        headers=alice.headers,
    )
    assert_error(response, 422, "message")


def test_unknown_routes_and_methods_use_the_error_shape(client, design):
    assert assert_error(client.get("/api/v1/nothing-here"), 404)["error"] == "not_found"
    assert_error(client.delete(design), 405)


def test_bad_authorization_schemes_are_401(client):
    for header in ("Basic YWxpY2U6cHc=", "Bearer", "Bearer    ", "token-without-scheme"):
        response = client.post(
            "/api/v1/designs",
            json={"name": "x", "title": "t", "license": "MIT"},
            headers={"Authorization": header},
        )
        assert_error(response, 401)
