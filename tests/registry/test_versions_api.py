"""Pushing versions and reading them back: files, hashes, archives, and every bad input."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest

from tests.conftest import mesh

CUBE = mesh("20mm-xyz-cube.stl")
CUBE_SHA = hashlib.sha256(CUBE).hexdigest()


@pytest.fixture
def design(client, alice):
    response = client.post(
        "/api/v1/designs",
        json={"name": "bracket", "title": "Wall bracket", "license": "CERN-OHL-S-2.0"},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    return "/api/v1/designs/alice/bracket"


def push(client, account, url, files, **form):
    return client.post(
        url + "/versions",
        files=[("files", (path, data)) for path, data in files],
        data=form,
        headers=account.headers,
    )


def stored_blobs(settings) -> list[str]:
    root = settings.resolved_blob_dir
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_push_stores_files_and_serves_them_back(client, alice, design):
    response = push(
        client,
        alice,
        design,
        [("parts/cube.stl", CUBE), ("box.3mf", mesh("box.3mf"))],
        message="first cut",
        manifest=json.dumps({"function": "holds a shelf", "material": ["PLA", "PETG"]}),
    )
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["number"] == 1
    assert version["parents"] == []
    assert version["author"] == "alice"
    assert version["message"] == "first cut"
    files = {f["path"]: f for f in version["files"]}
    assert files["parts/cube.stl"] == {
        "path": "parts/cube.stl",
        "sha256": CUBE_SHA,
        "size": len(CUBE),
        "media_type": "model/stl",
    }
    assert files["box.3mf"]["media_type"] == "model/3mf"
    assert version["manifest"]["function"] == "holds a shelf"
    assert version["manifest"]["license"] == "CERN-OHL-S-2.0"
    assert version["manifest"]["name"] == "Wall bracket"

    got = client.get(design + "/versions/1/files/parts/cube.stl")
    assert got.status_code == 200
    assert got.content == CUBE
    assert got.headers["etag"] == f'"{CUBE_SHA}"'
    assert got.headers["content-type"].startswith("model/stl")
    again = client.get(
        design + "/versions/1/files/parts/cube.stl", headers={"If-None-Match": f'"{CUBE_SHA}"'}
    )
    assert again.status_code == 304
    head = client.head(design + "/versions/1/files/parts/cube.stl")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(CUBE)


def test_versions_are_numbered_and_chained(client, alice, design):
    for i in range(3):
        assert push(client, alice, design, [("a.stl", CUBE + bytes([i]))]).status_code == 201
    listing = client.get(design + "/versions").json()
    assert [v["number"] for v in listing["items"]] == [3, 2, 1]
    third = client.get(design + "/versions/3").json()
    assert third["parents"] == [{"owner": "alice", "name": "bracket", "version": 2}]
    assert client.get(design + "/versions/latest").json()["number"] == 3
    assert client.get(design).json()["latest_version"] == 3


def test_version_tag_resolves_and_is_unique(client, alice, design):
    assert push(client, alice, design, [("a.stl", CUBE)], tag="v1.0").status_code == 201
    assert client.get(design + "/versions/v1.0").json()["number"] == 1
    duplicate = push(client, alice, design, [("a.stl", CUBE)], tag="v1.0")
    assert duplicate.status_code == 409
    assert client.get(design + "/versions").json()["items"][0]["number"] == 1


def test_identical_content_is_stored_once(client, alice, design, settings):
    push(client, alice, design, [("a.stl", CUBE), ("copy/b.stl", CUBE)])
    push(client, alice, design, [("a.stl", CUBE)])
    assert stored_blobs(settings) == [CUBE_SHA]


def test_archive_holds_every_file(client, alice, design):
    push(client, alice, design, [("parts/cube.stl", CUBE), ("tube.obj", mesh("tube.obj"))])
    response = client.get(design + "/versions/1/archive.zip")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["parts/cube.stl", "tube.obj"]
        assert archive.read("parts/cube.stl") == CUBE


def test_versions_cannot_be_changed_or_deleted(client, alice, design):
    push(client, alice, design, [("a.stl", CUBE)])
    for method in ("PUT", "PATCH", "DELETE"):
        response = client.request(method, design + "/versions/1", headers=alice.headers)
        assert response.status_code == 405
        assert response.json()["error"] == "method_not_allowed"
    assert client.get(design + "/versions/1/files/a.stl").content == CUBE


@pytest.mark.parametrize(
    "path",
    [
        "../escape.stl",
        "parts/../../escape.stl",
        "/etc/passwd",
        "parts\\cube.stl",
        "C:\\parts\\cube.stl",
        "cube\x00.stl",
        "parts//cube.stl",
        "./cube.stl",
        "parts/",
    ],
)
def test_bad_file_paths_are_refused_and_nothing_is_stored(client, alice, design, settings, path):
    response = push(client, alice, design, [("good.stl", CUBE), (path, b"solid x\nendsolid x\n")])
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid"
    assert body["field"] == "files"
    assert stored_blobs(settings) == []
    assert client.get(design + "/versions").json()["items"] == []


def test_raw_nul_byte_in_file_name_is_refused(client, alice, design, settings):
    boundary = "xyzzy"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="files"; filename="a\x00.stl"\r\n\r\n'
        "solid a\nendsolid a\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    response = client.post(
        design + "/versions",
        content=body,
        headers={**alice.headers, "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 422
    assert stored_blobs(settings) == []


def test_upload_over_the_cap_is_refused_and_nothing_is_stored(client, alice, design, settings):
    big = b"\x00" * (settings.max_upload_bytes + 1)
    response = push(client, alice, design, [("big.stl", big)])
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert stored_blobs(settings) == []
    assert list(settings.resolved_blob_dir.joinpath("tmp").iterdir()) == []


def test_streamed_upload_without_length_over_the_cap_is_refused(client, alice, design, settings):
    boundary = "b0undary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            'filename="big.stl"\r\n\r\n'
        ).encode()
        chunk = b"\x01" * 65536
        for _ in range(settings.max_upload_bytes // len(chunk) + 2):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        design + "/versions",
        content=body(),
        headers={**alice.headers, "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert stored_blobs(settings) == []
    assert list(settings.resolved_blob_dir.joinpath("tmp").iterdir()) == []


def test_push_by_someone_else_is_forbidden(client, bob, design, settings):
    response = push(client, bob, design, [("a.stl", CUBE)])
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert stored_blobs(settings) == []


def test_maintainer_may_push(client, alice, bob, design):
    assert client.put(design + "/maintainers/bob", headers=bob.headers).status_code == 403
    assert client.put(design + "/maintainers/bob", headers=alice.headers).status_code == 200
    response = push(client, bob, design, [("a.stl", CUBE)])
    assert response.status_code == 201
    assert response.json()["author"] == "bob"
    assert client.delete(design + "/maintainers/bob", headers=alice.headers).status_code == 200
    assert push(client, bob, design, [("a.stl", CUBE)]).status_code == 403


def test_push_without_token_is_unauthorized(client, design):
    response = client.post(design + "/versions", files=[("files", ("a.stl", CUBE))])
    assert response.status_code == 401
    wrong = client.post(
        design + "/versions",
        files=[("files", ("a.stl", CUBE))],
        headers={"Authorization": "Bearer dgml_not-a-token"},
    )
    assert wrong.status_code == 401


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ("{not json", "manifest"),
        ("[1, 2]", "manifest"),
        (
            '{"outer-dimensions": {"width": -5, "depth": 1, "height": 1}}',
            "manifest.outer-dimensions.width",
        ),
        ('{"bom": [{"name": "M3 screw", "quantity": 0}]}', "manifest.bom[0].quantity"),
        ('{"documentation-language": "english please"}', "manifest.documentation-language"),
        ('{"license": "MIT"}', "manifest.license"),
        ('{"license": "Not-A-Licence"}', "manifest.license"),
        ('{"licensor": 42}', "manifest.licensor"),
    ],
)
def test_malformed_manifest_is_refused_naming_the_field(
    client, alice, design, settings, manifest, field
):
    response = push(client, alice, design, [("a.stl", CUBE)], manifest=manifest)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert stored_blobs(settings) == []


def test_push_without_files_is_refused(client, alice, design):
    response = client.post(
        design + "/versions",
        data={"message": "nothing"},
        files=[("manifest", (None, "{}"))],
        headers=alice.headers,
    )
    assert response.status_code == 422
    assert response.json()["field"] == "files"


def test_same_path_twice_is_refused(client, alice, design, settings):
    response = push(client, alice, design, [("a.stl", CUBE), ("a.stl", CUBE)])
    assert response.status_code == 422
    assert stored_blobs(settings) == []


def test_unknown_design_and_version_are_404(client, alice, design):
    assert client.get("/api/v1/designs/alice/nope").status_code == 404
    assert client.get("/api/v1/designs/nobody/bracket").status_code == 404
    assert client.get(design + "/versions/1").status_code == 404
    push(client, alice, design, [("a.stl", CUBE)])
    assert client.get(design + "/versions/2").status_code == 404
    assert client.get(design + "/versions/nosuchtag").status_code == 404
    missing = client.get(design + "/versions/1/files/b.stl")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert push(client, alice, "/api/v1/designs/alice/nope", [("a.stl", CUBE)]).status_code == 404


def test_archived_design_takes_no_versions(client, alice, design):
    push(client, alice, design, [("a.stl", CUBE)])
    assert client.patch(design, json={"archived": True}, headers=alice.headers).json()["archived"]
    assert push(client, alice, design, [("a.stl", CUBE)]).status_code == 422
    assert client.get(design + "/versions/1/files/a.stl").status_code == 200


def test_push_on_the_newest_version_as_base_is_taken(client, alice, design):
    assert push(client, alice, design, [("a.txt", b"one")], base="0").status_code == 201
    response = push(client, alice, design, [("a.txt", b"two")], base="1")
    assert response.status_code == 201, response.text
    assert response.json()["number"] == 2


def test_push_from_a_stale_base_is_refused_and_stores_nothing(client, alice, design, settings):
    assert push(client, alice, design, [("a.txt", b"one")]).status_code == 201
    assert push(client, alice, design, [("a.txt", b"two")]).status_code == 201
    before = stored_blobs(settings)
    response = push(client, alice, design, [("a.txt", b"from an old copy")], base="1")
    assert response.status_code == 409
    body = response.json()
    assert body["latest_version"] == 2 and body["field"] == "base"
    assert "at version 2" in body["detail"] and "based on version 1" in body["detail"]
    assert stored_blobs(settings) == before
    assert client.get(design).json()["latest_version"] == 2


@pytest.mark.parametrize("base", ["-1", "one", "1.5", "99999999999"])
def test_push_with_a_malformed_base_is_refused(client, alice, design, base):
    response = push(client, alice, design, [("a.txt", b"one")], base=base)
    assert response.status_code == 422
    assert response.json()["field"] == "base"
