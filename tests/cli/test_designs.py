"""``dgml search``, ``fetch``, ``fork`` and ``log`` against a live hub."""

from __future__ import annotations

import hashlib
import json
import tomllib

import httpx
import pytest

from tests.cli.conftest import API, publish, push_files
from tests.conftest import mesh


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_search_shows_version_licence_verdict_and_forks(
    dgml, live_server, alice, bob, cube_design, run_jobs
):
    publish(live_server, bob, "hook", [("hook.stl", mesh("round.stl"))], license="CC-BY-SA-4.0")
    httpx.post(f"{live_server}{API}/designs/alice/cube/versions/1/fork", headers=bob.headers)
    run_jobs()
    result = dgml("search", "--server", live_server, "--json")
    assert result.code == 0, result.stderr
    rows = {row["design"]: row for row in result.json()}
    assert set(rows) == {"alice/cube", "bob/hook", "bob/cube"}
    cube = rows["alice/cube"]
    assert cube["latest_version"] == 1
    assert cube["license"] == "CC-BY-4.0"
    assert cube["verdict"] == "pass"
    assert cube["fork_count"] == 1
    assert cube["processes"] == ["fdm"]  # declared in its manifest
    assert rows["bob/hook"]["processes"] == ["fdm", "sla", "sls"]  # what an STL suits
    assert rows["bob/cube"]["forked_from"] == {"owner": "alice", "name": "cube", "version": 1}

    table = dgml("search", "cube", "--server", live_server)
    assert table.code == 0, table.stderr
    assert "alice/cube" in table.stdout
    assert "CC-BY-4.0" in table.stdout
    assert "pass" in table.stdout
    assert "made by" in table.stdout and "fdm" in table.stdout
    assert "bob/hook" not in table.stdout


def test_search_filters(dgml, live_server, alice, bob, cube_design):
    publish(live_server, bob, "hook", [("hook.stl", mesh("round.stl"))], license="CC-BY-SA-4.0")

    def names(*args: str) -> set[str]:
        result = dgml("search", *args, "--server", live_server, "--json")
        assert result.code == 0, result.stderr
        return {row["design"] for row in result.json()}

    assert names("--tag", "calibration") == {"alice/cube"}
    assert names("--license", "CC-BY-SA-4.0") == {"bob/hook"}
    # alice/cube declares fdm; bob/hook declares nothing, and its STL suits fdm, sla and sls.
    assert names("--process", "FDM") == {"alice/cube", "bob/hook"}
    assert names("--process", "sla") == {"bob/hook"}
    assert names("--process", "laser") == set()
    assert names("--process", "fdm", "--owner", "alice") == {"alice/cube"}
    assert names("--owner", "bob") == {"bob/hook"}
    assert names("no-such-words") == set()
    assert "No designs found" in dgml("search", "zzz", "--server", live_server).stdout
    unknown = dgml("search", "--license", "NOT-A-LICENCE", "--server", live_server)
    assert unknown.code == 2
    assert unknown.one_line_error, unknown.stderr
    not_a_process = dgml("search", "--process", "f%", "--server", live_server)
    assert not_a_process.code == 2
    assert not_a_process.one_line_error and "process must be a name" in not_a_process.stderr


def test_search_pages_with_a_limit(dgml, live_server, alice):
    for index in range(3):
        publish(live_server, alice, f"part-{index}", [("p.txt", b"x")])
    result = dgml("search", "part", "--limit", "2", "--server", live_server)
    assert result.code == 0, result.stderr
    assert "More designs match" in result.stderr
    assert (
        len(dgml("search", "part", "--limit", "2", "--server", live_server, "--json").json()) == 2
    )


def test_fetch_makes_a_working_copy_with_verified_hashes(dgml, live_server, cube_design, workdir):
    result = dgml("fetch", "alice/cube", "--server", live_server)
    assert result.code == 0, result.stderr
    assert "Fetched alice/cube version 1" in result.stdout
    copy = workdir / "cube"
    assert (copy / "cube.stl").read_bytes() == mesh("20mm-xyz-cube.stl")
    assert (copy / "README.md").read_text() == "# A cube\n"
    meta = tomllib.loads((copy / "dgml.toml").read_text())
    assert meta["origin"] == {
        "server": live_server,
        "owner": "alice",
        "name": "cube",
        "version": 1,
    }
    assert meta["files"] == {
        "cube.stl": sha(mesh("20mm-xyz-cube.stl")),
        "README.md": sha(b"# A cube\n"),
    }
    assert sorted(p.name for p in copy.iterdir()) == ["README.md", "cube.stl", "dgml.toml"]
    status = dgml("status", "--json", cwd=copy)
    assert status.code == 0, status.stderr
    assert status.json()["clean"] is True


def test_fetch_a_version_by_number_or_tag_into_a_folder(
    dgml, live_server, alice, cube_design, workdir
):
    push_files(live_server, alice, "alice/cube", [("cube.stl", b"solid\nendsolid\n")])
    httpx.post(
        f"{live_server}{API}/designs/alice/cube/versions",
        files=[("files", ("a.txt", b"a"))],
        data={"tag": "v-three"},
        headers=alice.headers,
    )
    first = dgml("fetch", "alice/cube@1", "-o", "one", "--server", live_server, "--json")
    assert first.code == 0, first.stderr
    assert first.json()["version"] == 1
    assert (workdir / "one" / "cube.stl").read_bytes() == mesh("20mm-xyz-cube.stl")
    tagged = dgml("fetch", "alice/cube@v-three", "-o", "nested/three", "--server", live_server)
    assert tagged.code == 0, tagged.stderr
    assert sorted(p.name for p in (workdir / "nested" / "three").iterdir()) == [
        "a.txt",
        "dgml.toml",
    ]


def test_fetch_of_a_version_that_does_not_exist(dgml, live_server, cube_design, workdir):
    result = dgml("fetch", "alice/cube@99", "--server", live_server)
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "no version 99 of alice/cube" in result.stderr
    assert not (workdir / "cube").exists()
    nobody = dgml("fetch", "alice/nothing", "--server", live_server)
    assert nobody.code == 1
    assert "no design alice/nothing" in nobody.stderr
    bad = dgml("fetch", "just-a-name", "--server", live_server)
    assert bad.code == 2
    assert "OWNER/NAME" in bad.stderr


def test_fetch_refuses_a_folder_that_is_not_empty(dgml, live_server, cube_design, workdir):
    (workdir / "cube").mkdir()
    (workdir / "cube" / "mine.txt").write_text("keep me")
    result = dgml("fetch", "alice/cube", "--server", live_server)
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "is not empty" in result.stderr
    assert [p.name for p in (workdir / "cube").iterdir()] == ["mine.txt"]
    (workdir / "empty").mkdir()
    assert dgml("fetch", "alice/cube", "-o", "empty", "--server", live_server).code == 0


def test_fetch_refuses_damaged_bytes_and_leaves_nothing(
    dgml, live_server, settings, cube_design, workdir
):
    """A hub whose stored file was damaged serves bytes that do not match the version's hash."""
    stored = settings.resolved_blob_dir
    digest = sha(mesh("20mm-xyz-cube.stl"))
    blob = stored / digest[:2] / digest[2:4] / digest
    blob.chmod(0o644)
    blob.write_bytes(b"X" * len(mesh("20mm-xyz-cube.stl")))
    result = dgml("fetch", "alice/cube", "--server", live_server)
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "cube.stl arrived damaged" in result.stderr
    assert not (workdir / "cube").exists()


def test_fork_then_fetch_the_fork(dgml, logged_in, live_server, alice, bob, cube_design, workdir):
    logged_in(bob)
    result = dgml("fork", "alice/cube@1", "--as", "my-cube", "--json")
    assert result.code == 0, result.stderr
    body = result.json()
    assert body["design"] == "bob/my-cube"
    assert body["forked_from"] == {"owner": "alice", "name": "cube", "version": 1}
    meta = tomllib.loads((workdir / "my-cube" / "dgml.toml").read_text())
    assert meta["origin"]["owner"] == "bob"
    assert meta["origin"]["name"] == "my-cube"
    assert meta["origin"]["version"] == 1
    design = httpx.get(f"{live_server}{API}/designs/alice/cube").json()
    assert design["fork_count"] == 1


def test_fork_refusals(dgml, logged_in, live_server, alice, bob, workdir):
    publish(live_server, alice, "shared", [("a.txt", b"a")], license="CC-BY-SA-4.0")
    anonymous = dgml("fork", "alice/shared", "--server", live_server)
    assert anonymous.code == 1
    assert "not logged in" in anonymous.stderr
    logged_in(bob)
    closed = dgml("fork", "alice/shared", "--license", "CC0-1.0")
    assert closed.code == 2
    assert closed.one_line_error, closed.stderr
    assert not (workdir / "shared").exists()
    (workdir / "shared").mkdir()
    (workdir / "shared" / "x").write_text("x")
    busy = dgml("fork", "alice/shared")
    assert busy.code == 1
    assert "is not empty" in busy.stderr
    # Refused before anything happened on the hub.
    assert httpx.get(f"{live_server}{API}/designs/bob/shared").status_code == 404


@pytest.mark.slow
def test_log_lists_versions_with_author_message_and_verdict(
    dgml, live_server, alice, cube_design, run_jobs, workdir
):
    push_files(live_server, alice, "alice/cube", [("cube.stl", mesh("round.stl"))], message="round")
    run_jobs()
    result = dgml("log", "alice/cube", "--server", live_server, "--json")
    assert result.code == 0, result.stderr
    items = result.json()
    assert [(v["number"], v["author"], v["message"], v["verdict"]) for v in items] == [
        (2, "alice", "round", "pass"),
        (1, "alice", "first version", "pass"),
    ]
    assert dgml("fetch", "alice/cube@1", "--server", live_server).code == 0
    text = dgml("log", cwd=workdir / "cube")
    assert text.code == 0, text.stderr
    assert "round" in text.stdout
    assert "1 *" in text.stdout
    assert "based on version 1" in text.stderr
    outside = dgml("log")
    assert outside.code == 1
    assert "not in a dgml working copy" in outside.stderr


def test_every_verb_prints_parseable_json(dgml, logged_in, live_server, alice, bob, cube_design):
    logged_in(bob)
    for args in (
        ("whoami",),
        ("search",),
        ("log", "alice/cube"),
        ("diff", "1", "1", "--design", "alice/cube"),
    ):
        result = dgml(*args, "--json")
        assert result.code == 0, (args, result.stderr)
        json.loads(result.stdout)
