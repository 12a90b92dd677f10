"""Bad registrations: each is a 422 naming the field, and nothing is stored."""

from __future__ import annotations

import copy
import json
from typing import get_args

import pytest

from router.directory import PROCESSES
from router.fablabs_schemas import Process
from tests.router.test_fablabs_api import API, lab_body


def without(body: dict, key: str) -> dict:
    return {k: v for k, v in body.items() if k != key}


def machine(**changes) -> dict:
    base = {"process": "fdm", "materials": ["pla"], "build_volume_mm": [200, 200, 200]}
    return {**base, **changes}


BAD = [
    ("lat 91", lab_body(where=(91, 2.0)), "location"),
    ("lat -90.5", lab_body(where=(-90.5, 2.0)), "location"),
    ("lon -181", lab_body(where=(48.0, -181)), "location"),
    ("lon 180.01", lab_body(where=(48.0, 180.01)), "location"),
    ("lat a word", lab_body(where=("north", 2.0)), "location.lat"),
    ("no location", without(lab_body(), "location"), "location"),
    ("location a list", {**lab_body(), "location": [48.0, 2.0]}, "location"),
    ("unknown process", lab_body(machines=[machine(process="vinyl")]), "machines[0].process"),
    (
        "unknown process second",
        lab_body(machines=[machine(), machine(process="3d-printing")]),
        "machines[1].process",
    ),
    ("no machines", lab_body(machines=[]), "machines"),
    ("machines not a list", lab_body(machines={"process": "fdm"}), "machines"),
    ("empty materials", lab_body(machines=[machine(materials=[])]), "machines[0].materials"),
    ("blank material", lab_body(machines=[machine(materials=["  "])]), "machines[0].materials[0]"),
    (
        "long material",
        lab_body(machines=[machine(materials=["x" * 65])]),
        "machines[0].materials[0]",
    ),
    (
        "negative volume",
        lab_body(machines=[machine(build_volume_mm=[200, -1, 200])]),
        "machines[0].build_volume_mm[1]",
    ),
    (
        "zero volume",
        lab_body(machines=[machine(build_volume_mm=[0, 200, 200])]),
        "machines[0].build_volume_mm[0]",
    ),
    (
        "absurd volume",
        lab_body(machines=[machine(build_volume_mm=[200, 200, 1e9])]),
        "machines[0].build_volume_mm[2]",
    ),
    (
        "ten metres",
        lab_body(machines=[machine(build_volume_mm=[10_000, 200, 200])]),
        "machines[0].build_volume_mm[0]",
    ),
    (
        "two numbers",
        lab_body(machines=[machine(build_volume_mm=[200, 200])]),
        "machines[0].build_volume_mm[2]",
    ),
    (
        "four numbers",
        lab_body(machines=[machine(build_volume_mm=[200, 200, 200, 200])]),
        "machines[0].build_volume_mm",
    ),
    ("count 0", lab_body(machines=[machine(count=0)]), "machines[0].count"),
    ("count 1001", lab_body(machines=[machine(count=1001)]), "machines[0].count"),
    ("count 1.5", lab_body(machines=[machine(count=1.5)]), "machines[0].count"),
    ("count a string", lab_body(machines=[machine(count="2")]), "machines[0].count"),
    ("nozzle 0", lab_body(machines=[machine(nozzle_mm=0)]), "machines[0].nozzle_mm"),
    ("kerf negative", lab_body(machines=[machine(kerf_mm=-0.1)]), "machines[0].kerf_mm"),
    (
        "hours negative",
        lab_body(machines=[machine(typical_job_hours=-2)]),
        "machines[0].typical_job_hours",
    ),
    ("machine extra key", lab_body(machines=[machine(colour="red")]), "machines[0].colour"),
    ("legal form company", lab_body(legal_form="company"), "legal_form"),
    ("no legal form", without(lab_body(), "legal_form"), "legal_form"),
    ("missing name", without(lab_body(), "name"), "name"),
    ("blank name", lab_body(name="   "), "name"),
    ("name 10,000 chars", lab_body(name="n" * 10_000), "name"),
    ("name with a line break", lab_body(name="Lab\nTwo"), "name"),
    ("id not a slug", lab_body(id="My Lab"), "id"),
    ("id too long", lab_body(id="a" * 65), "id"),
    ("negative price", lab_body(price={"per_job_eur": -1}), "price.per_job_eur"),
    ("price extra key", lab_body(price={"per_job_eur": 1, "vat": 20}), "price.vat"),
    ("price a number", lab_body(price=5), "price"),
    ("contact email", lab_body(contact={"email": "not an address"}), "contact.email"),
    ("contact url", lab_body(contact={"url": "javascript:alert(1)"}), "contact.url"),
    ("contact extra", lab_body(contact={"fax": "0299"}), "contact.fax"),
    ("hours too many", lab_body(opening_hours={f"d{i}": "x" for i in range(17)}), "opening_hours"),
    ("hours nested", lab_body(opening_hours={"mon": {"from": 9}}), "opening_hours.mon"),
    ("unknown field", lab_body(operator_id=1), "operator_id"),
]


@pytest.mark.parametrize(("body", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_registration_is_422_naming_the_field(client, alice, body, field):
    response = client.post(f"{API}/fablabs", json=copy.deepcopy(body), headers=alice.headers)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["field"] == field, answer
    assert answer["detail"].startswith(field)
    assert client.get(f"{API}/fablabs").json()["items"] == []


def raw(body: dict, replace: dict[str, str]) -> bytes:
    """JSON text with some values swapped for tokens that Python's json reads as numbers."""
    text = json.dumps(body)
    for placeholder, token in replace.items():
        text = text.replace(json.dumps(placeholder), token)
    return text.encode()


@pytest.mark.parametrize(
    ("where", "token", "field"),
    [
        ("lat", "NaN", "location"),
        ("lon", "Infinity", "location"),
        ("lat", "-Infinity", "location"),
        ("volume", "NaN", "machines[0].build_volume_mm[0]"),
        ("volume", "Infinity", "machines[0].build_volume_mm[0]"),
        ("price", "NaN", "price.per_cm3_eur"),
        ("price", "Infinity", "price.per_cm3_eur"),
        ("hours", "NaN", "machines[0].typical_job_hours"),
    ],
)
def test_nan_and_infinity_in_the_body_are_refused(client, alice, where, token, field):
    body = lab_body(
        where=("@lat" if where == "lat" else 48.0, "@lon" if where == "lon" else 2.0),
        machines=[
            machine(
                build_volume_mm=["@volume" if where == "volume" else 200, 200, 200],
                typical_job_hours="@hours" if where == "hours" else 1,
            )
        ],
        price={"per_job_eur": 1, "per_cm3_eur": "@price" if where == "price" else 0.1},
    )
    data = raw(body, {f"@{where}": token})
    assert token.encode() in data
    response = client.post(
        f"{API}/fablabs",
        content=data,
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert client.get(f"{API}/fablabs").json()["items"] == []


@pytest.mark.parametrize(
    "data", [b"", b"{", b"[]", b"null", b'"lab"', b"\xff\xfe", b'{"name": "x"' + b" " * 10]
)
def test_a_body_that_is_not_an_object_is_422(client, alice, data):
    response = client.post(
        f"{API}/fablabs",
        content=data,
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid"


def test_the_schema_knows_the_processes_of_the_directory():
    (choices, *_) = get_args(Process)
    assert get_args(choices) == PROCESSES
