"""The verbs that work in a working copy: ``status``, ``push``, ``pull``, ``propose``, ``diff``."""

from __future__ import annotations

import json
import tomllib

import httpx
import pytest

from tests.cli.conftest import API, publish, push_files
from tests.conftest import mesh


@pytest.fixture
def cube_copy(dgml, logged_in, live_server, alice, cube_design, workdir):
    """alice's working copy of her own alice/cube at version 1."""
    logged_in(alice)
    assert dgml("fetch", "alice/cube").code == 0
    return workdir / "cube"


def meta(copy) -> dict:
    return tomllib.loads((copy / "dgml.toml").read_text())


def test_status_sees_changed_added_and_deleted_files(dgml, cube_copy):
    (cube_copy / "README.md").write_text("# A better cube\n")
    (cube_copy / "docs").mkdir()
    (cube_copy / "docs" / "notes.md").write_text("notes")
    (cube_copy / "cube.stl").unlink()
    # Junk that is never part of a design.
    (cube_copy / ".git").mkdir()
    (cube_copy / ".git" / "HEAD").write_text("ref")
    (cube_copy / "__pycache__").mkdir()
    (cube_copy / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (cube_copy / ".DS_Store").write_bytes(b"\0")
    (cube_copy / "docs" / "y.pyc").write_bytes(b"\0")
    result = dgml("status", "--json", cwd=cube_copy / "docs")  # found by walking up
    assert result.code == 0, result.stderr
    body = result.json()
    assert body["design"] == "alice/cube"
    assert body["base"] == 1
    assert body["clean"] is False
    assert (body["changed"], body["added"], body["removed"]) == (
        ["README.md"],
        ["docs/notes.md"],
        ["cube.stl"],
    )
    text = dgml("status", cwd=cube_copy)
    assert "modified:" in text.stdout and "README.md" in text.stdout
    assert "added:" in text.stdout and "docs/notes.md" in text.stdout
    assert "deleted:" in text.stdout and "cube.stl" in text.stdout


def test_dgmlignore_and_nested_working_copies(dgml, live_server, cube_copy):
    (cube_copy / ".dgmlignore").write_text("# build output\nbuild/\n*.log\n")
    (cube_copy / "build").mkdir()
    (cube_copy / "build" / "part.stl").write_bytes(b"solid")
    (cube_copy / "run.log").write_text("log")
    assert dgml("fetch", "alice/cube", "-o", "inner", cwd=cube_copy).code == 0
    body = dgml("status", "--json", cwd=cube_copy).json()
    assert body["added"] == [".dgmlignore"]
    inner = dgml("status", "--json", cwd=cube_copy / "inner").json()
    assert inner["root"] == str((cube_copy / "inner").resolve())
    assert inner["clean"] is True


def test_status_outside_a_working_copy(dgml, workdir):
    result = dgml("status")
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "not in a dgml working copy" in result.stderr
    assert "dgml fetch" in result.stderr


@pytest.mark.parametrize(
    "text",
    [
        "this is [not toml",
        "[origin]\nserver = 'http://x'\n",
        "[origin]\nserver='h'\nowner='a'\nname='b'\nversion='one'\n[files]\n",
        "[origin]\nserver='h'\nowner='a'\nname='b'\nversion=1\n[files]\n'a' = 'nothex'\n",
    ],
)
def test_a_hand_broken_dgml_toml_is_a_clear_error(dgml, cube_copy, text):
    (cube_copy / "dgml.toml").write_text(text)
    for verb in (("status",), ("push", "-m", "x"), ("pull",), ("log",), ("diff",)):
        result = dgml(*verb, cwd=cube_copy)
        assert result.code == 1, (verb, result.stderr)
        assert result.one_line_error, result.stderr
        assert "dgml.toml is not readable" in result.stderr


def test_binary_garbage_in_dgml_toml(dgml, cube_copy):
    (cube_copy / "dgml.toml").write_bytes(b"\xff\xfe\x00garbage")
    result = dgml("status", cwd=cube_copy)
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "not UTF-8" in result.stderr


@pytest.mark.slow
def test_push_makes_a_new_version_and_moves_the_base(dgml, live_server, cube_copy, run_jobs):
    (cube_copy / "README.md").write_text("# A cube, now documented\n")
    (cube_copy / "round.stl").write_bytes(mesh("round.stl"))
    result = dgml("push", "-m", "document it", "--tag", "doc", "--wait", "0", cwd=cube_copy)
    assert result.code == 0, result.stderr
    assert "Pushed alice/cube version 2" in result.stdout
    assert meta(cube_copy)["origin"]["version"] == 2
    assert set(meta(cube_copy)["files"]) == {"README.md", "cube.stl", "round.stl"}
    assert dgml("status", "--json", cwd=cube_copy).json()["clean"] is True
    version = httpx.get(f"{live_server}{API}/designs/alice/cube/versions/2").json()
    assert version["message"] == "document it"
    assert version["tag"] == "doc"
    # No manifest.json in the copy: the description of version 1 goes on, renumbered.
    assert version["manifest"]["process"] == "fdm"
    assert version["manifest"]["version"] == "2"
    assert version["parents"] == [{"owner": "alice", "name": "cube", "version": 1}]
    files = {f["path"]: f for f in version["files"]}
    assert files["round.stl"]["size"] == len(mesh("round.stl"))
    run_jobs()
    log = dgml("log", "--json", cwd=cube_copy).json()
    assert log[0]["verdict"] == "pass"


def test_push_with_nothing_changed(dgml, cube_copy):
    result = dgml("push", "-m", "nothing", cwd=cube_copy)
    assert result.code == 1
    assert "nothing to push" in result.stderr


def test_push_needs_a_message(dgml, cube_copy):
    (cube_copy / "README.md").write_text("changed")
    assert dgml("push", cwd=cube_copy).code == 2


def test_push_from_a_stale_base_is_refused(dgml, live_server, cube_copy, workdir):
    assert dgml("fetch", "alice/cube", "-o", "second").code == 0
    second = workdir / "second"
    (cube_copy / "README.md").write_text("first change")
    assert dgml("push", "-m", "one", "--wait", "0", cwd=cube_copy).code == 0
    (second / "README.md").write_text("a change made at the same time")
    result = dgml("push", "-m", "two", cwd=second)
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert (
        "the server is at version 2, your copy is based on 1: run dgml pull (or fetch into a "
        "new folder) and apply your changes again" in result.stderr
    )
    assert httpx.get(f"{live_server}{API}/designs/alice/cube").json()["latest_version"] == 2
    # pull will not overwrite the local change either
    pulled = dgml("pull", cwd=second)
    assert pulled.code == 1
    assert "local changes" in pulled.stderr
    assert (second / "README.md").read_text() == "a change made at the same time"


def test_pull_brings_an_unchanged_copy_to_the_latest_version(
    dgml, live_server, alice, cube_copy, workdir
):
    assert dgml("fetch", "alice/cube", "-o", "second").code == 0
    second = workdir / "second"
    (cube_copy / "README.md").write_text("new readme")
    (cube_copy / "cube.stl").unlink()
    (cube_copy / "parts").mkdir()
    (cube_copy / "parts" / "round.stl").write_bytes(mesh("round.stl"))
    assert dgml("push", "-m", "rework", "--wait", "0", cwd=cube_copy).code == 0
    result = dgml("pull", "--json", cwd=second)
    assert result.code == 0, result.stderr
    body = result.json()
    assert (body["from"], body["to"]) == (1, 2)
    assert body["changed"] == ["README.md"]
    assert body["added"] == ["parts/round.stl"]
    assert body["removed"] == ["cube.stl"]
    assert (second / "README.md").read_text() == "new readme"
    assert (second / "parts" / "round.stl").read_bytes() == mesh("round.stl")
    assert not (second / "cube.stl").exists()
    assert not [p for p in second.iterdir() if p.name.startswith(".dgml-")]
    assert meta(second)["origin"]["version"] == 2
    assert dgml("status", "--json", cwd=second).json()["clean"] is True
    again = dgml("pull", cwd=second)
    assert again.code == 0
    assert "Already at the latest version (2)" in again.stdout
    # A file that went away from the design also takes its emptied folder with it.
    (cube_copy / "parts" / "round.stl").unlink()
    assert dgml("push", "-m", "no parts", "--wait", "0", cwd=cube_copy).code == 0
    assert dgml("pull", cwd=second).code == 0
    assert not (second / "parts").exists()


def test_push_to_a_design_of_someone_else_hints_at_fork(dgml, logged_in, bob, cube_copy):
    logged_in(bob)
    (cube_copy / "README.md").write_text("bob was here")
    result = dgml("push", "-m", "mine now", cwd=cube_copy)
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "only the owner and maintainers of alice/cube may push versions" in result.stderr
    assert "dgml fork alice/cube@1" in result.stderr
    assert meta(cube_copy)["origin"]["version"] == 1


def test_push_without_a_login(dgml, cube_copy, config_dir):
    (config_dir / "logins.toml").unlink()
    (cube_copy / "README.md").write_text("changed")
    result = dgml("push", "-m", "x", cwd=cube_copy)
    assert result.code == 1
    assert "not logged in to http://127.0.0.1" in result.stderr


@pytest.mark.slow
def test_a_model_file_edited_to_garbage(dgml, live_server, cube_copy, run_jobs):
    """The hub takes the version (it is the maker's to push) and its verdict says unreadable;
    offline validation says the same before any push."""
    (cube_copy / "cube.stl").write_bytes(b"solid broken\n this is no facet at all\n")
    offline = dgml("validate", "cube.stl", "--json", cwd=cube_copy)
    assert offline.code == 2
    assert json.loads(offline.stdout)["verdict"] == "unreadable"
    assert dgml("push", "-m", "oops", "--wait", "0", cwd=cube_copy).code == 0
    run_jobs()
    assert dgml("log", "--json", cwd=cube_copy).json()[0]["verdict"] == "unreadable"


def test_a_manifest_edited_to_bad_json(dgml, live_server, cube_copy):
    (cube_copy / "manifest.json").write_text('{"license": ')
    result = dgml("push", "-m", "with manifest", cwd=cube_copy)
    assert result.code == 2
    assert result.one_line_error, result.stderr
    assert "manifest is not valid JSON" in result.stderr
    assert meta(cube_copy)["origin"]["version"] == 1


def test_an_upload_over_the_hubs_limit(dgml, live_server, cube_copy, settings):
    (cube_copy / "big.bin").write_bytes(b"\0" * (settings.max_upload_bytes + 1))
    result = dgml("push", "-m", "too big", cwd=cube_copy)
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "limit" in result.stderr
    assert httpx.get(f"{live_server}{API}/designs/alice/cube").json()["latest_version"] == 1


def test_file_names_that_need_quoting(dgml, live_server, cube_copy, workdir):
    for name in ('say "hi".txt', "café.md", "with space.txt"):
        (cube_copy / name).write_text(name)
    assert dgml("push", "-m", "names", "--wait", "0", cwd=cube_copy).code == 0
    assert {'say "hi".txt', "café.md", "with space.txt"} <= set(meta(cube_copy)["files"])
    assert dgml("fetch", "alice/cube", "-o", "again").code == 0
    assert (workdir / "again" / 'say "hi".txt').read_text() == 'say "hi".txt'


@pytest.mark.slow
def test_diff_of_the_working_copy_and_of_two_versions(dgml, live_server, cube_copy):
    (cube_copy / "cube.stl").write_bytes(mesh("round.stl"))
    (cube_copy / "extra.txt").write_text("extra")
    local = dgml("diff", "--json", cwd=cube_copy)
    assert local.code == 0, local.stderr
    body = local.json()
    assert (body["old"], body["new"]) == (1, "working copy")
    assert body["added"] == ["extra.txt"]
    assert body["unchanged"] == ["README.md"]
    [change] = body["changed"]
    assert change["path"] == "cube.stl"
    geometry = change["geometry"]
    assert "error" not in geometry, geometry
    assert geometry["volume_delta_mm3"] != 0
    assert geometry["distance"]["max_mm"] > 0
    text = dgml("diff", "--no-geometry", cwd=cube_copy)
    assert "modified:" in text.stdout and "cube.stl" in text.stdout
    assert "volume" not in text.stdout

    assert dgml("push", "-m", "round", "--wait", "0", cwd=cube_copy).code == 0
    hub = dgml("diff", "1", "2", "--json", cwd=cube_copy)
    assert hub.code == 0, hub.stderr
    versions = hub.json()
    assert (versions["old"], versions["new"]) == (1, 2)
    assert versions["added"] == ["extra.txt"]
    assert versions["changed"][0]["geometry"]["volume_delta_mm3"] == pytest.approx(
        geometry["volume_delta_mm3"], rel=1e-6
    )
    shown = dgml("diff", "1", "2", cwd=cube_copy)
    assert "volume" in shown.stdout
    assert dgml("diff", "--json", cwd=cube_copy).json()["changed"] == []
    from_one = dgml("diff", "1", "--json", "--no-geometry", cwd=cube_copy).json()
    assert [c["path"] for c in from_one["changed"]] == ["cube.stl"]
    missing = dgml("diff", "7", "--json", cwd=cube_copy)
    assert missing.code == 1
    assert "no version 7 of alice/cube" in missing.stderr


def test_propose_offers_the_forks_version_to_its_origin(
    dgml, logged_in, live_server, alice, bob, cube_design, workdir
):
    logged_in(bob)
    assert dgml("fork", "alice/cube").code == 0
    copy = workdir / "cube"
    (copy / "README.md").write_text("# A cube, by bob too\n")
    unpushed = dgml("propose", "-m", "better readme", cwd=copy)
    assert unpushed.code == 1
    assert "dgml push -m MSG first" in unpushed.stderr
    assert dgml("push", "-m", "better readme", "--wait", "0", cwd=copy).code == 0
    result = dgml("propose", "-m", "Better readme\n\nIt says who made it.", "--json", cwd=copy)
    assert result.code == 0, result.stderr
    request = result.json()
    assert request["design"] == "alice/cube"
    assert request["from"] == {"owner": "bob", "name": "cube", "version": 2}
    assert request["title"] == "Better readme"
    assert request["message"] == "It says who made it."
    assert request["state"] == "open"
    listed = httpx.get(f"{live_server}{API}/designs/alice/cube/change-requests").json()
    assert [r["id"] for r in listed["items"]] == [request["id"]]


def test_propose_from_a_design_that_is_no_fork(dgml, cube_copy, live_server, alice):
    result = dgml("propose", "-m", "to whom?", cwd=cube_copy)
    assert result.code == 1
    assert "alice/cube is not a fork" in result.stderr
    publish(live_server, alice, "other", [("a.txt", b"a")])
    to_other = dgml("propose", "-m", "x", "--to", "alice/other", cwd=cube_copy)
    assert to_other.code == 2
    assert "is not a fork of alice/other" in to_other.stderr


def test_status_push_pull_propose_print_parseable_json(
    dgml, logged_in, live_server, alice, bob, cube_design, workdir
):
    logged_in(bob)
    assert dgml("fork", "alice/cube", "--json").code == 0
    copy = workdir / "cube"
    (copy / "README.md").write_text("changed")
    for args in (
        ("status",),
        ("diff", "--no-geometry"),
        ("push", "-m", "x", "--wait", "0"),
        ("pull",),
        ("log",),
        ("propose", "-m", "x"),
        ("logout",),
    ):
        result = dgml(*args, "--json", cwd=copy)
        assert result.code == 0, (args, result.stderr)
        json.loads(result.stdout)


def test_push_is_refused_after_a_push_through_the_api(dgml, live_server, alice, cube_copy):
    push_files(live_server, alice, "alice/cube", [("only.txt", b"only")])
    (cube_copy / "README.md").write_text("late")
    assert dgml("push", "-m", "late", cwd=cube_copy).code == 1
    assert dgml("status", "--json", cwd=cube_copy).json()["base"] == 1
