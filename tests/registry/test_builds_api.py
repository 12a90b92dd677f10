"""Parametric versions: their parameters, the build of their defaults on push, builds on demand
cached by parameter set, and built files with their own geometry reports."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from registry.geometry.readers import read_model
from registry.models import Build
from tests.registry.calls import API, created, forked, get, push, pushed

BOX = b'''"""A box: width and height change its volume."""
import cadquery as cq

width = 20.0
height = 10
rounded = False

box = cq.Workplane("XY").box(width, 15.0, height)
if rounded:
    box = box.edges("|Z").fillet(2.0)
show_object(box, name="box")
'''
MANIFEST = {
    "name": "box",
    "process": "fdm",
    "parameters": [
        {"name": "width", "type": "float", "min": 10, "max": 60, "unit": "mm"},
        {"name": "height", "type": "int", "min": 5, "max": 30, "unit": "mm"},
    ],
}
FAILING = b"import cadquery as cq\nsize = 5.0\nraise ValueError('size too small for the clip')\n"


def _push_box(client, alice, manifest=MANIFEST, script=BOX, name="box"):
    created(client, alice, name)
    return push(
        client,
        alice,
        f"alice/{name}",
        [("design.py", script), ("README.md", b"# box\n")],
        manifest=json.dumps(manifest),
    )


def _builds(client) -> int:
    with client.app.state.services.sessions() as session:
        return session.scalar(select(func.count()).select_from(Build))


def _volume(client, url: str) -> float:
    response = client.get(url)
    assert response.status_code == 200, response.text
    from registry.geometry.checks import check_mesh

    return check_mesh(read_model(response.content, "part.stl")).metrics.volume_mm3


@pytest.mark.slow
def test_push_builds_the_defaults_and_validates_the_parts(client, alice, run_jobs):
    assert _push_box(client, alice).status_code == 201
    parameters = get(client, "alice/box/versions/1/parameters")
    assert parameters["source"] == "design.py"
    by_name = {p["name"]: p for p in parameters["parameters"]}
    assert by_name["width"] == {
        "name": "width",
        "type": "float",
        "default": 20.0,
        "min": 10,
        "max": 60,
        "unit": "mm",
    }
    assert by_name["rounded"]["type"] == "bool"
    assert _builds(client) == 1
    run_jobs()
    build = client.post(f"{API}/designs/alice/box/versions/1/builds", headers=alice.headers)
    assert build.status_code == 200  # the defaults were built on push: the same build
    body = build.json()
    assert body["state"] == "done", body
    assert body["parameters"] == {"width": 20.0, "height": 10, "rounded": False}
    assert {f["path"] for f in body["files"]} == {"box.stl", "box.step"}
    assert body["verdict"] == "pass"
    stl = next(f for f in body["files"] if f["path"] == "box.stl")
    assert _volume(client, stl["url"]) == pytest.approx(20 * 15 * 10, rel=1e-3)


@pytest.mark.slow
def test_builds_on_demand_are_cached_by_parameter_set(client, alice, run_jobs):
    _push_box(client, alice)
    run_jobs()
    url = f"{API}/designs/alice/box/versions/1/builds"
    first = client.post(url, json={"params": {"width": 40, "height": 12}}, headers=alice.headers)
    assert first.status_code == 201, first.text
    assert first.json()["state"] == "queued" and first.json()["verdict"] == "pending"
    # The same values (the defaults spelled out or not) are the same build.
    again = client.post(
        url, json={"params": {"height": 12, "width": 40.0, "rounded": False}}, headers=alice.headers
    )
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert _builds(client) == 2
    run_jobs()
    done = get(client, f"alice/box/versions/1/builds/{first.json()['id']}")
    assert done["state"] == "done" and done["verdict"] == "pass"
    stl = next(f for f in done["files"] if f["path"] == "box.stl")
    assert _volume(client, stl["url"]) == pytest.approx(40 * 15 * 12, rel=1e-3)
    assert client.get(stl["url"]).headers["etag"] == f'"{stl["sha256"]}"'


@pytest.mark.parametrize(
    "params, field",
    [
        ({"width": 5}, "params.width"),  # below its minimum
        ({"width": "wide"}, "params.width"),  # not a number
        ({"height": 12.5}, "params.height"),  # not an int
        ({"rounded": 1}, "params.rounded"),  # not a bool
        ({"depth": 3}, "params.depth"),  # not a parameter
    ],
)
def test_bad_parameter_values_are_422_naming_the_parameter(client, alice, params, field):
    _push_box(client, alice)
    response = client.post(
        f"{API}/designs/alice/box/versions/1/builds", json={"params": params}, headers=alice.headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert _builds(client) == 1  # only the defaults' build


def test_bad_build_requests(client, alice, bob):
    _push_box(client, alice)
    url = f"{API}/designs/alice/box/versions/1/builds"
    assert client.post(url, json={"params": {}}).status_code == 401
    not_object = client.post(url, json={"params": [1, 2]}, headers=bob.headers)
    assert not_object.status_code == 422
    assert client.get(url + "/" + "0" * 64).status_code == 404
    assert (
        client.post(f"{API}/designs/alice/box/versions/7/builds", headers=bob.headers).status_code
        == 404
    )
    created(client, alice, "plain")
    pushed(client, alice, "alice/plain", [("notes.txt", b"x")])
    plain = client.post(f"{API}/designs/alice/plain/versions/1/builds", headers=bob.headers)
    assert plain.status_code == 404 and "no parametric source" in plain.json()["detail"]
    assert get(client, "alice/plain/versions/1/parameters") == {"source": None, "parameters": []}


def test_a_broken_parameter_declaration_is_refused_at_push(client, alice):
    manifest = {"parameters": [{"name": "width", "type": "float", "min": 50, "max": 10}]}
    response = _push_box(client, alice, manifest=manifest)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "manifest.parameters.width"
    undeclared = {"parameters": [{"name": "length", "type": "float"}]}
    response = _push_box(client, alice, manifest=undeclared, name="box2")
    assert response.status_code == 422
    assert response.json()["field"] == "manifest.parameters.length"
    # nothing was kept
    assert get(client, "alice/box")["latest_version"] is None


def test_a_script_that_is_not_python_is_refused_at_push(client, alice):
    response = _push_box(client, alice, script=b"width = = 3\n")
    assert response.status_code == 422
    assert response.json()["field"] == "source"


def test_manifest_source_must_name_a_file_of_the_version(client, alice):
    created(client, alice, "box")
    response = push(
        client,
        alice,
        "alice/box",
        [("model.py", BOX)],
        manifest=json.dumps({"source": "missing.py"}),
    )
    assert response.status_code == 422
    assert response.json()["field"] == "manifest.source"


@pytest.mark.slow
def test_a_failing_script_is_a_failed_build_with_its_reason(client, alice, run_jobs):
    assert _push_box(client, alice, script=FAILING, manifest={}).status_code == 201
    run_jobs()
    build = client.post(f"{API}/designs/alice/box/versions/1/builds", headers=alice.headers).json()
    assert build["state"] == "failed"
    assert "size too small for the clip" in build["error"]
    assert build["verdict"] == "fail"
    assert build["files"] == []


def test_forks_build_their_own_defaults(client, alice, bob):
    _push_box(client, alice)
    forked(client, bob, "alice/box", 1)
    assert _builds(client) == 2
