"""Every pushed model file gets a geometry report from a worker; the version shows pending, then
its verdict; reports are kept by file hash and checker version."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import trimesh
from PIL import Image
from sqlalchemy import func, select

from dgml.outbox import OutboxMessage
from registry.geometry.checks import CHECKER_VERSION
from registry.models import GeometryReportRow
from tests.conftest import mesh
from tests.registry.calls import API, created, forked, get, pushed, sha

CUBE = mesh("20mm-xyz-cube.stl")
TEAPOT = mesh("teapot.stl")
PNG_AS_STL = b"\x89PNG\r\n\x1a\n" + bytes(200)


def _stl(solid: trimesh.Trimesh) -> bytes:
    return solid.export(file_type="stl")


def _count(client, model) -> int:
    with client.app.state.services.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_push_is_pending_then_shows_each_files_verdict(client, alice, run_jobs):
    created(client, alice, "parts")
    files = [
        ("cube.stl", CUBE),
        ("broken/teapot.stl", TEAPOT),
        ("logo.stl", PNG_AS_STL),
        ("README.md", b"# parts\n"),
    ]
    version = pushed(client, alice, "alice/parts", files)
    assert version["verdict"] == "pending"
    report = get(client, "alice/parts/versions/1/report")
    assert report["verdict"] == "pending"
    assert {f["path"]: f["verdict"] for f in report["files"]} == {
        "cube.stl": "pending",
        "broken/teapot.stl": "pending",
        "logo.stl": "pending",
    }

    run_jobs()

    report = get(client, "alice/parts/versions/1/report")
    by_path = {f["path"]: f for f in report["files"]}
    assert report["checker_version"] == CHECKER_VERSION
    assert by_path["cube.stl"]["verdict"] == "pass"
    assert by_path["cube.stl"]["report"]["metrics"]["volume_mm3"] == pytest.approx(7938.68, 0.01)
    assert by_path["cube.stl"]["report"]["path"] == "cube.stl"
    teapot = by_path["broken/teapot.stl"]
    assert teapot["verdict"] == "fail"
    assert "OPEN_EDGES" in {i["code"] for i in teapot["report"]["issues"]}
    logo = by_path["logo.stl"]
    assert logo["verdict"] == "unreadable"
    assert "PNG" in logo["report"]["issues"][0]["message"]
    # The version's verdict is the worst of its files'.
    assert report["verdict"] == "unreadable"
    assert get(client, "alice/parts/versions/1")["verdict"] == "unreadable"
    listed = get(client, "alice/parts/versions")["items"]
    assert [v["verdict"] for v in listed] == ["unreadable"]


def test_version_document_is_cached_only_once_final(client, alice, run_jobs):
    created(client, alice, "cube")
    pushed(client, alice, "alice/cube", [("cube.stl", CUBE)])
    first = client.get(f"{API}/designs/alice/cube/versions/1")
    assert first.json()["verdict"] == "pending"
    assert "immutable" not in first.headers["cache-control"]
    run_jobs()
    final = client.get(f"{API}/designs/alice/cube/versions/1")
    assert final.json()["verdict"] == "pass"
    assert "immutable" in final.headers["cache-control"]


def test_previews_are_served_once_made(client, alice, run_jobs):
    created(client, alice, "cube")
    pushed(client, alice, "alice/cube", [("cube.stl", CUBE)])
    pending = client.get(f"{API}/designs/alice/cube/versions/1/previews/cube.stl")
    assert pending.status_code == 404
    assert "still being checked" in pending.json()["detail"]
    run_jobs()
    file_report = get(client, "alice/cube/versions/1/report")["files"][0]
    png = client.get(file_report["previews"]["png"])
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.size[0] >= 64
    assert len(image.convert("L").getcolors()) > 3  # shaded faces, not a blank square
    glb = client.get(file_report["previews"]["glb"])
    assert glb.status_code == 200
    assert glb.headers["content-type"] == "model/gltf-binary"
    loaded = trimesh.load(io.BytesIO(glb.content), file_type="glb", force="mesh")
    assert loaded.volume * 1e9 == pytest.approx(7938.68, 0.01)  # glTF is in metres


def test_same_bytes_are_checked_once_across_versions_and_forks(client, alice, bob, run_jobs):
    created(client, alice, "cube")
    pushed(client, alice, "alice/cube", [("cube.stl", CUBE), ("copy/cube.stl", CUBE)])
    assert _count(client, OutboxMessage) == 1
    run_jobs()
    assert _count(client, GeometryReportRow) == 1
    # A second push of the same bytes, and a fork, know their verdict at once.
    again = pushed(client, alice, "alice/cube", [("renamed.stl", CUBE)])
    assert again["verdict"] == "pass"
    fork = forked(client, bob, "alice/cube", 2)
    assert get(client, f"bob/{fork['name']}/versions/1")["verdict"] == "pass"
    assert _count(client, OutboxMessage) == 1
    # The same bytes under another extension are another question.
    pushed(client, alice, "alice/cube", [("cube.obj", CUBE)])
    run_jobs()
    rows = _count(client, GeometryReportRow)
    assert rows == 2
    report = get(client, "alice/cube/versions/3/report")
    assert report["files"][0]["verdict"] == "unreadable"


def test_running_a_job_twice_keeps_one_report(client, alice, run_jobs, redis_client):
    from registry.validation import validate_file

    created(client, alice, "cube")
    pushed(client, alice, "alice/cube", [("cube.stl", CUBE)])
    run_jobs()
    # As if the outbox had handed the message over twice (a sweep racing the request).
    assert validate_file(sha(CUBE), "stl", "cube.stl") == "pass"
    assert _count(client, GeometryReportRow) == 1


def test_a_version_without_models_has_no_verdict_to_wait_for(client, alice):
    created(client, alice, "docs")
    version = pushed(client, alice, "alice/docs", [("README.md", b"hello"), ("bom.csv", b"a,b")])
    assert version["verdict"] == "none"
    assert get(client, "alice/docs/versions/1/report")["files"] == []
    assert _count(client, OutboxMessage) == 0


def test_outbox_keeps_the_job_when_redis_is_away(client, alice, run_jobs):
    services = client.app.state.services
    real = services.redis
    from redis import Redis

    services.redis = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        created(client, alice, "cube")
        pushed(client, alice, "alice/cube", [("cube.stl", CUBE)])
    finally:
        services.redis.close()
        services.redis = real
    with services.sessions() as session:
        assert session.scalar(select(OutboxMessage.sent_at)) is None
    run_jobs()  # a worker's sweep hands it over
    with services.sessions() as session:
        assert session.scalar(select(OutboxMessage.sent_at)) is not None
    assert get(client, "alice/cube/versions/1")["verdict"] == "pass"


def test_diff_between_versions(client, alice, run_jobs):
    created(client, alice, "block")
    small = _stl(trimesh.creation.box((10, 10, 10)))
    large = _stl(trimesh.creation.box((10, 10, 12)))
    pushed(client, alice, "alice/block", [("block.stl", small), ("notes.txt", b"a")])
    pushed(
        client,
        alice,
        "alice/block",
        [("block.stl", large), ("notes.txt", b"a"), ("lid.stl", CUBE)],
    )
    diff = get(client, "alice/block/versions/1/diff/2")
    assert diff["added"] == ["lid.stl"]
    assert diff["removed"] == []
    assert diff["unchanged"] == ["notes.txt"]
    (change,) = diff["changed"]
    assert change["path"] == "block.stl"
    geometry = change["geometry"]
    assert geometry["volume_delta_mm3"] == pytest.approx(200, abs=0.01)
    assert geometry["size_delta_mm"] == pytest.approx([0, 0, 2], abs=1e-6)
    assert geometry["distance"]["max_mm"] == pytest.approx(1.0, abs=0.01)
    # The other way round, and a second time (now from the store).
    back = get(client, "alice/block/versions/2/diff/1")
    assert back["added"] == [] and back["removed"] == ["lid.stl"]
    assert back["changed"][0]["geometry"]["volume_delta_mm3"] == pytest.approx(-200, abs=0.01)
    assert get(client, "alice/block/versions/1/diff/2") == diff


def test_diff_of_an_unreadable_model_says_why(client, alice):
    created(client, alice, "logo")
    pushed(client, alice, "alice/logo", [("logo.stl", CUBE)])
    pushed(client, alice, "alice/logo", [("logo.stl", PNG_AS_STL)])
    change = get(client, "alice/logo/versions/1/diff/2")["changed"][0]
    assert "PNG" in change["geometry"]["error"]


@pytest.mark.parametrize(
    "url, status",
    [
        ("/designs/alice/cube/versions/9/report", 404),
        ("/designs/alice/nothing/versions/1/report", 404),
        ("/designs/alice/cube/versions/1/previews/nothing.stl", 404),
        ("/designs/alice/cube/versions/1/previews/notes.txt", 404),
        ("/designs/alice/cube/versions/1/previews/cube.stl?format=jpg", 422),
        ("/designs/alice/cube/versions/1/diff/9", 404),
        ("/designs/alice/cube/versions/99999999999/diff/1", 404),
    ],
)
def test_bad_geometry_requests(client, alice, url, status):
    created(client, alice, "cube")
    pushed(client, alice, "alice/cube", [("cube.stl", CUBE), ("notes.txt", b"x")])
    response = client.get(API + url)
    assert response.status_code == status, response.text
    assert "error" in response.json()


def test_zip_bomb_3mf_is_refused_by_the_worker(client, alice, run_jobs):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("3D/3dmodel.model", b"\0" * (200 * 1024 * 1024))
    created(client, alice, "bomb")
    pushed(client, alice, "alice/bomb", [("bomb.3mf", buffer.getvalue())])
    run_jobs()
    report = get(client, "alice/bomb/versions/1/report")
    assert report["verdict"] == "unreadable"


def test_vertices_stay_finite_in_stored_reports(client, alice, run_jobs):
    created(client, alice, "nan")
    solid = trimesh.creation.box((5, 5, 5))
    vertices = np.asarray(solid.vertices, dtype=float)
    vertices[0] = np.nan
    broken = trimesh.Trimesh(vertices, solid.faces, process=False)
    pushed(client, alice, "alice/nan", [("nan.stl", _stl(broken))])
    run_jobs()
    file_report = get(client, "alice/nan/versions/1/report")["files"][0]
    assert file_report["verdict"] == "fail"
    assert file_report["report"]["issues"][0]["code"] == "NON_FINITE"


def test_sent_messages_are_pruned_after_a_week(client, alice, run_jobs):
    from datetime import timedelta

    from dgml import outbox
    from dgml.db import utcnow

    created(client, alice, "cube")
    pushed(client, alice, "alice/cube", [("cube.stl", CUBE)])
    sessions = client.app.state.services.sessions
    assert outbox.prune(sessions) == 0  # sent just now
    with sessions() as session:
        session.query(OutboxMessage).update({"sent_at": utcnow() - timedelta(days=8)})
        session.commit()
    assert outbox.prune(sessions) == 1
    assert _count(client, OutboxMessage) == 0
