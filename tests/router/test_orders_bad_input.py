"""Every bad order is refused with a clear 4xx naming the field, and nothing is stored."""

from __future__ import annotations

import json
import uuid

import pytest

from router.models import Order
from tests.registry.calls import API
from tests.router.test_orders_support import (
    TEAPOT,
    hub_fixture,  # noqa: F401  (the hub fixture)
    north,
    order_body,
)

BAD = [
    # (fields of the order, status, field named)
    ({"location": {"lat": 91, "lon": 4.8}}, 422, "location"),
    ({"location": {"lat": -90.5, "lon": 4.8}}, 422, "location"),
    ({"location": {"lat": 45.7, "lon": 180.01}}, 422, "location"),
    ({"location": {"lat": "north", "lon": 4.8}}, 422, "location.lat"),
    ({"location": {"lat": 45.7}}, 422, "location.lon"),
    ({"location": None}, 422, "location"),
    ({"process": "teleportation"}, 422, "process"),
    ({"process": ""}, 422, "process"),
    ({"material": "unobtainium"}, 422, "material"),
    ({"process": "laser", "material": "pla"}, 422, "material"),
    ({"quantity": 0}, 422, "quantity"),
    ({"quantity": -3}, 422, "quantity"),
    ({"quantity": 10**9}, 422, "quantity"),
    ({"quantity": 10**40}, 422, "quantity"),
    ({"quantity": 2.5}, 422, "quantity"),
    ({"quantity": "5"}, 422, "quantity"),
    ({"quantity": True}, 422, "quantity"),
    ({"purpose": "resale"}, 422, "purpose"),
    ({"design": "no-slash"}, 422, "design"),
    ({"design": "alice/missing"}, 404, "design"),
    ({"design": "nobody/cube"}, 404, "design"),
    ({"version": 99}, 404, "version"),
    ({"version": "no-such-tag"}, 404, "version"),
    ({"version": 0}, 422, "version"),
    ({"files": ["missing.stl"]}, 422, "files[0]"),
    ({"files": ["cube.stl", "cube.stl"]}, 422, "files"),
    ({"params": {"width": 3}}, 422, "params"),
    ({"delivery": {"note": "x" * 5000}}, 422, "delivery"),
    ({"colour": "red"}, 422, "colour"),
]


@pytest.mark.parametrize(("fields", "status", "field"), BAD)
def test_a_bad_order_is_refused_naming_the_field(hub, fields, status, field):
    hub.add_lab("lab", north(5))
    hub.design()  # its report is still pending: that alone refuses nothing
    response = hub.order(**fields)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field, error
    assert error["detail"]
    assert hub.count(Order) == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_coordinates_are_refused(hub, literal):
    hub.design()
    text = json.dumps(order_body()).replace("45.764043", literal)
    assert literal in text
    response = hub.client.post(
        f"{API}/orders",
        content=text,
        headers={
            **hub.alice.headers,
            "Idempotency-Key": uuid.uuid4().hex,
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "location"
    assert "finite" in response.json()["detail"]
    assert hub.count(Order) == 0


def test_a_version_that_failed_validation_is_refused(hub):
    hub.design("kettle", [("teapot.stl", TEAPOT)])
    hub.work()
    response = hub.order("alice/kettle")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "version"
    assert "failed validation" in response.json()["detail"]
    assert "teapot.stl" in response.json()["detail"]
    assert hub.count(Order) == 0


def test_a_version_with_nothing_to_make_is_refused(hub):
    hub.design("notes", [("README.md", b"# only words\n")])
    response = hub.order("alice/notes")
    assert response.status_code == 422
    assert response.json()["field"] == "version"
    assert "no model file" in response.json()["detail"]


def test_the_idempotency_key_is_required_and_checked(hub):
    hub.design()
    headers = hub.alice.headers
    missing = hub.client.post(f"{API}/orders", json=order_body(), headers=headers)
    assert missing.status_code == 422
    assert missing.json()["field"] == "Idempotency-Key"
    long = hub.client.post(
        f"{API}/orders", json=order_body(), headers={**headers, "Idempotency-Key": "k" * 201}
    )
    assert long.status_code == 422
    assert long.json()["field"] == "Idempotency-Key"
    assert hub.count(Order) == 0


def test_orders_need_a_valid_token(hub):
    hub.design()
    body = order_body()
    assert hub.client.post(f"{API}/orders", json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-a-token", "Idempotency-Key": "k"}
    assert hub.client.post(f"{API}/orders", json=body, headers=wrong).status_code == 401
    # A wrong token is refused on public reads too, rather than silently ignored.
    assert hub.client.get(f"{API}/orders/1", headers=wrong).status_code == 401


def test_bodies_that_are_not_orders_are_422(hub):
    headers = {**hub.alice.headers, "Idempotency-Key": "k", "Content-Type": "application/json"}
    for content in ("not json", "[1, 2]", "{}", ""):
        response = hub.client.post(f"{API}/orders", content=content, headers=headers)
        assert response.status_code == 422, (content, response.text)
        assert response.json()["error"] == "invalid"


def test_a_material_only_the_directory_knows_is_taken(hub):
    glow = {"process": "fdm", "materials": ["Glow-PLA"], "build_volume_mm": [200, 200, 200]}
    hub.add_lab("glow", north(5), [glow])
    hub.design()
    hub.work()
    response = hub.order(material="GLOW-pla")
    assert response.status_code == 201, response.text
    assert response.json()["material"] == "glow-pla"
    hub.work()
    assert hub.get(response.json()["id"])["lines"][0]["fablab"]["id"] == "glow"
