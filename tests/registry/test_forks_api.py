"""Forks over HTTP: copying a version into another namespace, the fork tree, licence rules
along it, and attribution of everyone who worked on a version."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.conftest import mesh
from tests.registry.calls import API, created, fork, forked, get, pushed, sha

CUBE = mesh("20mm-xyz-cube.stl")
BOX = mesh("box.3mf")
TUBE = mesh("tube.obj")


def create(client, account, name, license="CC-BY-SA-4.0", **fields) -> dict:
    return created(client, account, name, license=license, **fields)


def published(client, account, name, license, files=(("a.stl", CUBE),)) -> str:
    """A design of ``account`` under ``license`` with one version; its full name."""
    create(client, account, name, license=license)
    pushed(client, account, f"{account.name}/{name}", list(files))
    return f"{account.name}/{name}"


@pytest.fixture
def carol(make_account):
    return make_account("carol")


@pytest.fixture
def dave(make_account):
    return make_account("dave")


@pytest.fixture
def origin(client, alice) -> str:
    """alice/bracket with two versions; version 1 holds a cube and a 3MF box."""
    create(client, alice, "bracket", tags=["shelf", "wall"], description="Holds a shelf")
    pushed(client, alice, "alice/bracket", [("parts/cube.stl", CUBE), ("box.3mf", BOX)])
    pushed(client, alice, "alice/bracket", [("parts/cube.stl", CUBE), ("tube.obj", TUBE)])
    return "alice/bracket"


# --- forking ------------------------------------------------------------------------------------


def test_anyone_may_fork_a_design_into_their_namespace(client, bob, origin):
    response = fork(client, bob, origin, 1)
    assert response.status_code == 201, response.text
    design = response.json()
    assert design["full_name"] == "bob/bracket"
    assert design["owner"] == "bob"
    assert design["maintainers"] == ["bob"]
    assert design["forked_from"] == {"owner": "alice", "name": "bracket", "version": 1}
    assert design["latest_version"] == 1
    assert design["license"] == "CC-BY-SA-4.0"
    assert design["title"] == "Design bracket"
    assert design["description"] == "Holds a shelf"
    assert design["tags"] == ["shelf", "wall"]
    assert design["fork_count"] == 0
    assert get(client, "bob/bracket") == design


def test_fork_copies_the_files_of_the_version_and_links_to_it(client, bob, origin):
    forked(client, bob, origin, 1)
    copy = get(client, "bob/bracket/versions/1")
    assert copy["kind"] == "fork"
    assert copy["author"] == "bob"
    assert copy["message"] == "Fork of alice/bracket@1"
    assert copy["parents"] == [{"owner": "alice", "name": "bracket", "version": 1}]
    assert {f["path"]: f["sha256"] for f in copy["files"]} == {
        "parts/cube.stl": sha(CUBE),
        "box.3mf": sha(BOX),
    }
    original = get(client, "alice/bracket/versions/1")
    assert copy["files"] == original["files"]
    served = client.get(f"{API}/designs/bob/bracket/versions/1/files/box.3mf")
    assert served.content == BOX


def test_fork_stores_no_new_blobs(client, bob, origin, settings):
    before = sorted(p.name for p in settings.resolved_blob_dir.rglob("*") if p.is_file())
    forked(client, bob, origin, 2)
    after = sorted(p.name for p in settings.resolved_blob_dir.rglob("*") if p.is_file())
    assert after == before


def test_fork_manifest_names_the_forks_licence_and_licensor(client, bob, origin):
    forked(client, bob, origin, 1, license="CC-BY-SA-4.0")
    manifest = get(client, "bob/bracket/versions/1")["manifest"]
    assert manifest["license"] == "CC-BY-SA-4.0"
    assert manifest["licensor"] == "bob"


def test_fork_of_an_older_version_takes_that_versions_files(client, bob, origin):
    design = forked(client, bob, origin, 1)
    assert design["forked_from"]["version"] == 1
    paths = [f["path"] for f in get(client, "bob/bracket/versions/1")["files"]]
    assert sorted(paths) == ["box.3mf", "parts/cube.stl"]


def test_fork_of_latest_and_of_a_tag_resolve_to_a_number(client, alice, bob, origin):
    pushed(client, alice, origin, [("a.stl", CUBE)], tag="v3")
    assert forked(client, bob, origin, "latest")["forked_from"]["version"] == 3
    assert forked(client, bob, origin, "v3", name="tagged")["forked_from"]["version"] == 3


def test_fork_may_take_a_new_name(client, bob, origin):
    design = forked(client, bob, origin, 2, name="my-bracket")
    assert design["full_name"] == "bob/my-bracket"
    assert design["forked_from"] == {"owner": "alice", "name": "bracket", "version": 2}
    assert client.get(f"{API}/designs/bob/bracket").status_code == 404


def test_owner_may_fork_their_own_design_under_another_name(client, alice, origin):
    assert fork(client, alice, origin, 1).status_code == 409
    design = forked(client, alice, origin, 1, name="bracket-variant")
    assert design["forked_from"] == {"owner": "alice", "name": "bracket", "version": 1}


def test_forking_twice_into_the_same_name_is_a_conflict(client, bob, origin):
    forked(client, bob, origin, 1)
    response = fork(client, bob, origin, 2)
    assert response.status_code == 409
    assert response.json()["field"] == "name"
    assert get(client, "bob/bracket")["forked_from"]["version"] == 1
    assert get(client, origin)["fork_count"] == 1


def test_fork_into_a_name_differing_only_in_case_is_a_conflict(client, bob, origin):
    create(client, bob, "Bracket")
    assert fork(client, bob, origin, 1).status_code == 409
    assert get(client, origin)["fork_count"] == 0


def test_fork_of_unknown_version_or_design_is_404(client, bob, origin):
    for url, ref in ((origin, 9), (origin, "nosuchtag"), ("alice/nope", 1), ("nobody/x", 1)):
        response = fork(client, bob, url, ref)
        assert response.status_code == 404, (url, ref)
        assert response.json()["error"] == "not_found"
    assert client.get(f"{API}/designs", params={"owner": "bob"}).json()["items"] == []


def test_fork_needs_a_token(client, origin):
    response = client.post(f"{API}/designs/{origin}/versions/1/fork")
    assert response.status_code == 401
    assert get(client, origin)["fork_count"] == 0


def test_fork_with_a_bad_name_is_refused(client, bob, origin):
    response = fork(client, bob, origin, 1, name="bad name")
    assert response.status_code == 422
    assert response.json()["field"] == "name"


def test_fork_with_unknown_fields_is_refused(client, bob, origin):
    response = fork(client, bob, origin, 1, owner="alice")
    assert response.status_code == 422
    assert response.json()["field"] == "owner"


def test_fork_counts_on_the_origin(client, bob, carol, origin):
    assert get(client, origin)["fork_count"] == 0
    forked(client, bob, origin, 1)
    forked(client, carol, origin, 2)
    forked(client, carol, origin, 2, name="second")
    assert get(client, origin)["fork_count"] == 3
    listed = client.get(f"{API}/designs", params={"owner": "alice"}).json()["items"]
    assert listed[0]["fork_count"] == 3
    # A fork of a fork counts on its direct origin only.
    forked(client, bob, "carol/bracket", 1, name="grandchild")
    assert get(client, "carol/bracket")["fork_count"] == 1
    assert get(client, origin)["fork_count"] == 3


def test_fork_may_be_pushed_to_by_its_owner_only(client, alice, bob, origin):
    forked(client, bob, origin, 1)
    version = pushed(client, bob, "bob/bracket", [("a.stl", CUBE + b"\n")])
    assert version["number"] == 2
    assert version["parents"] == [{"owner": "bob", "name": "bracket", "version": 1}]
    refused = client.post(
        f"{API}/designs/bob/bracket/versions",
        files=[("files", ("a.stl", CUBE))],
        headers=alice.headers,
    )
    assert refused.status_code == 403
    assert get(client, origin)["latest_version"] == 2


# --- lineage ------------------------------------------------------------------------------------


@pytest.fixture
def family(client, alice, bob, carol, dave, origin):
    """alice/bracket -> bob/bracket -> carol/bracket, and dave/bracket beside bob's."""
    forked(client, bob, origin, 1)
    pushed(client, bob, "bob/bracket", [("a.stl", CUBE + b"bob")])
    forked(client, carol, "bob/bracket", 2)
    forked(client, dave, origin, 2, license="CC-BY-SA-4.0")


def lineage(client, design) -> dict:
    return get(client, f"{design}/lineage")


def test_lineage_of_the_root_shows_the_whole_fork_tree(client, family):
    tree = lineage(client, "alice/bracket")
    assert tree["design"] == "alice/bracket"
    assert tree["ancestors"] == []
    assert tree["fork_count"] == 2
    assert tree["descendant_count"] == 3
    assert tree["descendants"] == [
        {
            "owner": "bob",
            "name": "bracket",
            "forked_from_version": 1,
            "fork_count": 1,
            "license": "CC-BY-SA-4.0",
            "descendants": [
                {
                    "owner": "carol",
                    "name": "bracket",
                    "forked_from_version": 2,
                    "fork_count": 0,
                    "license": "CC-BY-SA-4.0",
                    "descendants": [],
                }
            ],
        },
        {
            "owner": "dave",
            "name": "bracket",
            "forked_from_version": 2,
            "fork_count": 0,
            "license": "CC-BY-SA-4.0",
            "descendants": [],
        },
    ]


def test_lineage_of_a_leaf_lists_its_ancestors_nearest_first(client, family):
    tree = lineage(client, "carol/bracket")
    assert tree["ancestors"] == [
        {"owner": "bob", "name": "bracket", "version": 2},
        {"owner": "alice", "name": "bracket", "version": 1},
    ]
    assert tree["descendants"] == []
    assert (tree["fork_count"], tree["descendant_count"]) == (0, 0)


def test_lineage_of_a_middle_fork_shows_both_directions(client, family):
    tree = lineage(client, "bob/bracket")
    assert tree["design"] == "bob/bracket"
    assert tree["ancestors"] == [{"owner": "alice", "name": "bracket", "version": 1}]
    assert [(n["owner"], n["descendants"]) for n in tree["descendants"]] == [("carol", [])]
    assert tree["descendant_count"] == 1


def test_lineage_of_a_sibling_does_not_include_the_other_branch(client, family):
    tree = lineage(client, "dave/bracket")
    assert tree["ancestors"] == [{"owner": "alice", "name": "bracket", "version": 2}]
    assert tree["descendants"] == []


def test_lineage_of_a_design_without_forks(client, alice):
    create(client, alice, "lonely")
    tree = lineage(client, "alice/lonely")
    assert tree == {
        "design": "alice/lonely",
        "ancestors": [],
        "descendants": [],
        "fork_count": 0,
        "descendant_count": 0,
    }


def test_lineage_of_unknown_design_is_404(client):
    assert client.get(f"{API}/designs/alice/nope/lineage").status_code == 404


# --- licence rules over HTTP --------------------------------------------------------------------


def test_share_alike_design_forked_as_mit_is_refused_naming_the_rule(client, alice, bob):
    design = published(client, alice, "sa", "CC-BY-SA-4.0")
    response = fork(client, bob, design, 1, license="MIT")
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "licence_incompatible"
    assert body["field"] == "license"
    assert body["rule"] == "share-alike"
    assert body["origin"] == "CC-BY-SA-4.0"
    assert body["requested"] == "MIT"
    assert "share-alike" in body["detail"]
    assert client.get(f"{API}/designs/bob/sa").status_code == 404
    assert get(client, design)["fork_count"] == 0


@pytest.mark.parametrize("licence", ["CC-BY-ND-4.0", "CC-BY-NC-ND-4.0"])
def test_no_derivatives_design_cannot_be_forked_at_all(client, alice, bob, licence):
    design = published(client, alice, "nd", licence)
    for body in ({}, {"license": licence}, {"license": "CC-BY-4.0"}):
        response = fork(client, bob, design, 1, **body)
        assert response.status_code == 422
        assert response.json()["rule"] == "no-derivatives"
        assert "no-derivatives" in response.json()["detail"]
    assert client.get(f"{API}/designs/bob/nd").status_code == 404


def test_non_commercial_fork_keeps_non_commercial_terms(client, alice, bob):
    design = published(client, alice, "nc", "CC-BY-NC-4.0")
    assert forked(client, bob, design, 1)["license"] == "CC-BY-NC-4.0"
    nc_sa = forked(client, bob, design, 1, name="nc-sa", license="CC-BY-NC-SA-4.0")
    assert nc_sa["license"] == "CC-BY-NC-SA-4.0"
    refused = fork(client, bob, design, 1, name="free", license="CC-BY-4.0")
    assert refused.status_code == 422
    assert refused.json()["rule"] == "non-commercial"


@pytest.mark.parametrize("origin_licence", ["CC0-1.0", "CC-BY-4.0", "CERN-OHL-P-2.0", "MIT"])
@pytest.mark.parametrize(
    "target", ["MIT", "CC-BY-SA-4.0", "CC-BY-NC-ND-4.0", "LicenseRef-PPL", "CERN-OHL-S-2.0"]
)
def test_permissive_design_may_be_forked_under_any_licence(
    client, alice, bob, origin_licence, target
):
    design = published(client, alice, "free", origin_licence)
    fork_design = forked(client, bob, design, 1, license=target)
    assert fork_design["license"] == target
    assert get(client, "bob/free/versions/1")["license"] == target


def test_weakly_reciprocal_design_may_be_forked_as_strongly_reciprocal_not_permissive(
    client, alice, bob
):
    design = published(client, alice, "w", "CERN-OHL-W-2.0")
    assert forked(client, bob, design, 1, license="cern-ohl-s-2.0")["license"] == "CERN-OHL-S-2.0"
    refused = fork(client, bob, design, 1, name="p", license="CERN-OHL-P-2.0")
    assert refused.status_code == 422
    assert refused.json()["rule"] == "weak-copyleft"


def test_fork_keeps_the_origins_licence_when_none_is_given(client, alice, bob):
    design = published(client, alice, "ppl", "LicenseRef-PPL")
    assert forked(client, bob, design, 1)["license"] == "LicenseRef-PPL"


def test_fork_with_unknown_licence_is_refused(client, bob, origin):
    response = fork(client, bob, origin, 1, license="Not-A-Licence")
    assert response.status_code == 422
    assert response.json()["error"] == "invalid"
    assert response.json()["field"] == "license"


def test_rules_follow_the_nearest_origin_down_the_tree(client, alice, bob, carol):
    design = published(client, alice, "chain", "CC-BY-4.0")
    forked(client, bob, design, 1, license="CC-BY-SA-4.0")
    refused = fork(client, carol, "bob/chain", 1, license="CC-BY-4.0")
    assert refused.status_code == 422
    assert refused.json()["rule"] == "share-alike"
    assert forked(client, carol, "bob/chain", 1)["license"] == "CC-BY-SA-4.0"


# --- attribution --------------------------------------------------------------------------------


def attribution(client, design, ref) -> dict:
    return get(client, f"{design}/versions/{ref}/attribution")


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def names(credit: dict) -> list[str]:
    return [c["name"] for c in credit["contributors"]]


def test_attribution_of_an_original_version_credits_its_authors(client, alice, bob, origin):
    credit = attribution(client, origin, 2)
    assert credit["design"] == "alice/bracket"
    assert credit["version"] == 2
    assert credit["license"] == "CC-BY-SA-4.0"
    assert credit["licence_name"] == "Creative Commons Attribution-ShareAlike 4.0"
    assert names(credit) == ["alice"]
    assert credit["origins"] == []
    assert credit["notice"] == (
        "Design bracket (alice/bracket@2) by alice. "
        "Licensed under Creative Commons Attribution-ShareAlike 4.0 (CC-BY-SA-4.0)."
    )


def test_attribution_credits_maintainers_who_pushed(client, alice, bob, origin):
    client.put(f"{API}/designs/{origin}/maintainers/bob", headers=alice.headers)
    pushed(client, bob, origin, [("a.stl", CUBE)])
    assert names(attribution(client, origin, 3)) == ["alice", "bob"]
    assert names(attribution(client, origin, 2)) == ["alice"]


def test_fork_copy_alone_does_not_credit_the_forker(client, bob, origin):
    forked(client, bob, origin, 2)
    credit = attribution(client, "bob/bracket", 1)
    assert names(credit) == ["alice"]
    assert credit["origins"] == [{"owner": "alice", "name": "bracket", "version": 2}]
    assert credit["notice"] == (
        "Design bracket (bob/bracket@1) by alice, based on alice/bracket@2. "
        "Licensed under Creative Commons Attribution-ShareAlike 4.0 (CC-BY-SA-4.0)."
    )


def test_attribution_credits_everyone_along_the_lineage(client, alice, bob, carol, origin):
    forked(client, bob, origin, 2)
    pushed(client, bob, "bob/bracket", [("a.stl", CUBE + b"bob")])
    forked(client, carol, "bob/bracket", 2)
    assert names(attribution(client, "carol/bracket", 1)) == ["alice", "bob"]
    pushed(client, carol, "carol/bracket", [("a.stl", CUBE + b"carol")])

    credit = attribution(client, "carol/bracket", 2)
    assert names(credit) == ["alice", "bob", "carol"]
    sinces = [c["since"] for c in credit["contributors"]]
    assert sinces == sorted(sinces)
    # Each person is credited from their first contribution, not from the latest copy.
    alice_first = get(client, "alice/bracket/versions/1")["created_at"]
    bob_first = get(client, "bob/bracket/versions/2")["created_at"]
    assert moment(credit["contributors"][0]["since"]) == moment(alice_first)
    assert moment(credit["contributors"][1]["since"]) == moment(bob_first)
    assert credit["origins"] == [
        {"owner": "bob", "name": "bracket", "version": 2},
        {"owner": "alice", "name": "bracket", "version": 2},
    ]
    assert credit["notice"] == (
        "Design bracket (carol/bracket@2) by alice, bob, carol, "
        "based on bob/bracket@2, alice/bracket@2. "
        "Licensed under Creative Commons Attribution-ShareAlike 4.0 (CC-BY-SA-4.0)."
    )


def test_attribution_names_the_licence_of_the_fork(client, alice, bob):
    design = published(client, alice, "free", "CC-BY-4.0")
    forked(client, bob, design, 1, license="CERN-OHL-S-2.0")
    credit = attribution(client, "bob/free", 1)
    assert credit["license"] == "CERN-OHL-S-2.0"
    assert credit["notice"].endswith(
        "Licensed under CERN Open Hardware Licence v2 Strongly Reciprocal (CERN-OHL-S-2.0)."
    )


def test_attribution_of_unknown_version_is_404(client, origin):
    assert client.get(f"{API}/designs/{origin}/versions/9/attribution").status_code == 404
    assert client.get(f"{API}/designs/alice/nope/versions/1/attribution").status_code == 404
