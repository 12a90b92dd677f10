"""Change requests over HTTP: a fork's version proposed back to its origin, and the origin's
maintainers accepting (a merge version with two parents) or declining it."""

from __future__ import annotations

import pytest

from tests.conftest import mesh
from tests.registry.calls import API, created, forked, get, pushed, sha

CUBE = mesh("20mm-xyz-cube.stl")
TUBE = mesh("tube.obj")
BOX = mesh("box.3mf")
ORIGIN = "alice/x"
REQUESTS = f"{API}/designs/{ORIGIN}/change-requests"


def propose(client, account, owner, name, version, *, to=ORIGIN, title="Thicker walls", **body):
    return client.post(
        f"{API}/designs/{to}/change-requests",
        json={"from": {"owner": owner, "name": name, "version": version}, "title": title, **body},
        headers=account.headers,
    )


def proposed(client, account, owner, name, version, **kwargs) -> dict:
    response = propose(client, account, owner, name, version, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


def accept(client, account, request_id, **body):
    return client.post(
        f"{REQUESTS}/{request_id}/accept", json=body or None, headers=account.headers
    )


def decline(client, account, request_id, **body):
    return client.post(
        f"{REQUESTS}/{request_id}/decline", json=body or None, headers=account.headers
    )


@pytest.fixture
def carol(make_account):
    return make_account("carol")


@pytest.fixture
def bobs_change(client, alice, bob) -> dict:
    """alice/x at version 1; bob forks it and pushes version 2 of bob/x with a new file."""
    created(client, alice, "x")
    pushed(client, alice, ORIGIN, [("body.stl", CUBE)], message="first")
    forked(client, bob, ORIGIN, 1)
    return pushed(
        client, bob, "bob/x", [("body.stl", CUBE + b"\n"), ("tube.obj", TUBE)], message="thicker"
    )


# --- opening ------------------------------------------------------------------------------------


def test_fork_owner_opens_a_change_request(client, bob, bobs_change):
    response = propose(client, bob, "bob", "x", 2, message="Walls are 2 mm now")
    assert response.status_code == 201, response.text
    request = response.json()
    assert isinstance(request["id"], int)
    assert request["state"] == "open"
    assert request["design"] == "alice/x"
    assert request["from"] == {"owner": "bob", "name": "x", "version": 2}
    assert request["title"] == "Thicker walls"
    assert request["message"] == "Walls are 2 mm now"
    assert request["author"] == "bob"
    assert request["decided_by"] is None
    assert request["decided_at"] is None
    assert request["decision_message"] == ""
    assert request["merged_version"] is None
    assert client.get(f"{REQUESTS}/{request['id']}").json() == request


def test_opening_a_change_request_writes_no_version(client, bob, bobs_change):
    proposed(client, bob, "bob", "x", 2)
    assert get(client, ORIGIN)["latest_version"] == 1


def test_opening_a_change_request_needs_a_token(client, bobs_change):
    response = client.post(
        REQUESTS, json={"from": {"owner": "bob", "name": "x", "version": 2}, "title": "T"}
    )
    assert response.status_code == 401


def test_change_request_to_unknown_design_is_404(client, bob, bobs_change):
    response = propose(client, bob, "bob", "x", 2, to="alice/nope")
    assert response.status_code == 404


def test_change_request_from_a_design_that_is_not_a_fork_is_refused(client, bob, bobs_change):
    created(client, bob, "unrelated")
    pushed(client, bob, "bob/unrelated", [("body.stl", TUBE)])
    response = propose(client, bob, "bob", "unrelated", 1)
    assert response.status_code == 422
    assert response.json()["field"] == "from"
    assert "not a fork" in response.json()["detail"]
    assert client.get(REQUESTS).json()["items"] == []


def test_change_request_from_a_fork_of_another_design_is_refused(client, alice, bob, bobs_change):
    created(client, alice, "other")
    pushed(client, alice, "alice/other", [("body.stl", BOX)])
    forked(client, bob, "alice/other", 1)
    response = propose(client, bob, "bob", "other", 1)
    assert response.status_code == 422
    assert response.json()["field"] == "from"


def test_change_request_from_unknown_version_or_design_is_404(client, bob, bobs_change):
    for owner, name, version in (("bob", "x", 9), ("bob", "nope", 1), ("nobody", "x", 1)):
        response = propose(client, bob, owner, name, version)
        assert response.status_code == 404, (owner, name, version)
        assert response.json()["error"] == "not_found"


def test_change_request_from_the_design_itself_is_refused(client, alice, bobs_change):
    response = propose(client, alice, "alice", "x", 1)
    assert response.status_code == 422
    assert response.json()["field"] == "from"


def test_change_request_from_a_fork_of_a_fork_reaches_the_root(client, bob, carol, bobs_change):
    forked(client, carol, "bob/x", 2)
    pushed(client, carol, "carol/x", [("body.stl", CUBE + b"carol")])
    request = proposed(client, carol, "carol", "x", 2)
    assert request["from"] == {"owner": "carol", "name": "x", "version": 2}
    assert request["author"] == "carol"


def test_change_request_needs_a_source_and_a_title(client, bob, bobs_change):
    missing_from = client.post(REQUESTS, json={"title": "T"}, headers=bob.headers)
    assert missing_from.status_code == 422
    assert missing_from.json()["field"] == "from"
    blank_title = propose(client, bob, "bob", "x", 2, title="  ")
    assert blank_title.status_code == 422
    assert blank_title.json()["field"] == "title"


def test_relicensed_fork_cannot_be_merged_back(client, alice, bob):
    created(client, alice, "x", license="CC-BY-4.0")
    pushed(client, alice, ORIGIN, [("body.stl", CUBE)])
    forked(client, bob, ORIGIN, 1, license="CC-BY-SA-4.0")
    pushed(client, bob, "bob/x", [("body.stl", CUBE + b"\n")])
    response = propose(client, bob, "bob", "x", 2)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "licence_incompatible"
    assert body["rule"] == "share-alike"
    assert body["field"] == "license"
    assert "share-alike" in body["detail"]
    assert "cannot be merged" in body["detail"]
    assert client.get(REQUESTS).json()["items"] == []


def test_fork_under_a_compatible_licence_may_be_merged_back(client, alice, bob):
    created(client, alice, "x", license="CC-BY-SA-3.0")
    pushed(client, alice, ORIGIN, [("body.stl", CUBE)])
    forked(client, bob, ORIGIN, 1)
    pushed(client, bob, "bob/x", [("body.stl", CUBE + b"\n")])
    request = proposed(client, bob, "bob", "x", 2)
    assert accept(client, alice, request["id"]).status_code == 200


# --- accepting ----------------------------------------------------------------------------------


def test_accepting_writes_a_merge_version_with_both_parents(client, alice, bob, bobs_change):
    head = pushed(client, alice, ORIGIN, [("body.stl", CUBE + b"alice")], message="alice's own")
    assert head["number"] == 2
    request = proposed(client, bob, "bob", "x", 2)
    response = accept(client, alice, request["id"], message="Thanks!")
    assert response.status_code == 200, response.text

    merged = get(client, f"{ORIGIN}/versions/3")
    assert merged["kind"] == "merge"
    assert merged["author"] == "alice"
    assert merged["parents"] == [
        {"owner": "alice", "name": "x", "version": 2},
        {"owner": "bob", "name": "x", "version": 2},
    ]
    assert merged["message"].startswith(f"Merge change request #{request['id']}: Thicker walls")
    assert "Thanks!" in merged["message"]
    assert merged["license"] == "CC-BY-4.0"
    assert merged["manifest"]["licensor"] == "alice"
    assert get(client, ORIGIN)["latest_version"] == 3


def test_merge_version_holds_the_forks_files(client, alice, bob, bobs_change):
    request = proposed(client, bob, "bob", "x", 2)
    accept(client, alice, request["id"])
    merged = get(client, f"{ORIGIN}/versions/2")
    assert merged["files"] == bobs_change["files"]
    assert {f["path"]: f["sha256"] for f in merged["files"]} == {
        "body.stl": sha(CUBE + b"\n"),
        "tube.obj": sha(TUBE),
    }
    served = client.get(f"{API}/designs/{ORIGIN}/versions/2/files/tube.obj")
    assert served.content == TUBE


def test_accepted_change_request_shows_who_decided_and_the_merged_version(
    client, alice, bob, bobs_change
):
    request = proposed(client, bob, "bob", "x", 2)
    body = accept(client, alice, request["id"], message="Merged").json()
    assert body["state"] == "accepted"
    assert body["decided_by"] == "alice"
    assert body["decided_at"] is not None
    assert body["decision_message"] == "Merged"
    assert body["merged_version"] == 2
    assert body["author"] == "bob"
    assert client.get(f"{REQUESTS}/{request['id']}").json() == body


def test_merge_credits_the_forks_contributors(client, alice, bob, bobs_change):
    request = proposed(client, bob, "bob", "x", 2)
    accept(client, alice, request["id"])
    credit = get(client, f"{ORIGIN}/versions/2/attribution")
    assert [c["name"] for c in credit["contributors"]] == ["alice", "bob"]


def test_accepting_twice_is_a_conflict(client, alice, bob, bobs_change):
    request = proposed(client, bob, "bob", "x", 2)
    assert accept(client, alice, request["id"]).status_code == 200
    again = accept(client, alice, request["id"])
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"
    assert again.json()["state"] == "accepted"
    assert decline(client, alice, request["id"]).status_code == 409
    assert get(client, ORIGIN)["latest_version"] == 2
    assert client.get(f"{REQUESTS}/{request['id']}").json()["state"] == "accepted"


def test_only_a_maintainer_may_accept(client, alice, bob, bobs_change):
    request = proposed(client, bob, "bob", "x", 2)
    response = accept(client, bob, request["id"])
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert decline(client, bob, request["id"]).status_code == 403
    assert client.post(f"{REQUESTS}/{request['id']}/accept").status_code == 401
    after = client.get(f"{REQUESTS}/{request['id']}").json()
    assert after["state"] == "open"
    assert after["decided_by"] is None
    assert get(client, ORIGIN)["latest_version"] == 1


def test_a_maintainer_who_is_not_the_owner_may_accept(client, alice, bob, carol, bobs_change):
    client.put(f"{API}/designs/{ORIGIN}/maintainers/carol", headers=alice.headers)
    request = proposed(client, bob, "bob", "x", 2)
    body = accept(client, carol, request["id"]).json()
    assert body["state"] == "accepted"
    assert body["decided_by"] == "carol"
    assert get(client, f"{ORIGIN}/versions/2")["author"] == "carol"


def test_archived_design_takes_no_merge(client, alice, bob, bobs_change):
    request = proposed(client, bob, "bob", "x", 2)
    client.patch(f"{API}/designs/{ORIGIN}", json={"archived": True}, headers=alice.headers)
    response = accept(client, alice, request["id"])
    assert response.status_code == 409
    assert client.get(f"{REQUESTS}/{request['id']}").json()["state"] == "open"
    assert get(client, ORIGIN)["latest_version"] == 1


# --- declining ----------------------------------------------------------------------------------


def test_declining_stores_the_message_and_writes_no_version(client, alice, bob, bobs_change):
    request = proposed(client, bob, "bob", "x", 2)
    response = decline(client, alice, request["id"], message="Too thick for the printer bed")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "declined"
    assert body["decided_by"] == "alice"
    assert body["decided_at"] is not None
    assert body["decision_message"] == "Too thick for the printer bed"
    assert body["merged_version"] is None
    assert client.get(f"{REQUESTS}/{request['id']}").json() == body
    assert get(client, ORIGIN)["latest_version"] == 1


def test_declined_change_request_cannot_be_accepted(client, alice, bob, bobs_change):
    request = proposed(client, bob, "bob", "x", 2)
    decline(client, alice, request["id"])
    response = accept(client, alice, request["id"])
    assert response.status_code == 409
    assert response.json()["state"] == "declined"
    assert get(client, ORIGIN)["latest_version"] == 1


def test_declining_without_a_message_is_allowed(client, alice, bob, bobs_change):
    request = proposed(client, bob, "bob", "x", 2)
    body = decline(client, alice, request["id"]).json()
    assert (body["state"], body["decision_message"]) == ("declined", "")


# --- listing and looking up ---------------------------------------------------------------------


@pytest.fixture
def three_requests(client, alice, bob, bobs_change) -> list[int]:
    """Three change requests on alice/x: the first accepted, the second declined, one open."""
    pushed(client, bob, "bob/x", [("body.stl", CUBE + b"v3")])
    ids = [proposed(client, bob, "bob", "x", n, title=f"Change {n}")["id"] for n in (1, 2, 3)]
    accept(client, alice, ids[0])
    decline(client, alice, ids[1])
    return ids


def listing(client, **params) -> list[dict]:
    response = client.get(REQUESTS, params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_listing_shows_every_change_request_newest_first(client, three_requests):
    items = listing(client)
    assert [r["id"] for r in items] == three_requests[::-1]
    assert [r["state"] for r in items] == ["open", "declined", "accepted"]


@pytest.mark.parametrize(("state", "index"), [("open", 2), ("accepted", 0), ("declined", 1)])
def test_listing_filters_by_state(client, three_requests, state, index):
    items = listing(client, state=state)
    assert [r["id"] for r in items] == [three_requests[index]]
    assert items[0]["state"] == state


def test_listing_by_unknown_state_is_refused(client, three_requests):
    response = client.get(REQUESTS, params={"state": "merged"})
    assert response.status_code == 422
    assert response.json()["field"] == "state"


def test_listing_pages_return_every_change_request_once(client, three_requests):
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(REQUESTS, params=params).json()
        seen.extend(r["id"] for r in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == three_requests[::-1]
    assert cursor is None


def test_listing_is_per_design(client, alice, bob, three_requests):
    created(client, alice, "y")
    assert client.get(f"{API}/designs/alice/y/change-requests").json()["items"] == []
    assert client.get(f"{API}/designs/alice/nope/change-requests").status_code == 404


def test_unknown_change_request_is_404(client, alice, three_requests):
    for response in (
        client.get(f"{REQUESTS}/999999"),
        client.post(f"{REQUESTS}/999999/accept", headers=alice.headers),
        client.post(f"{REQUESTS}/999999/decline", headers=alice.headers),
    ):
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
        assert "999999" in response.json()["detail"]


def test_change_request_is_not_found_through_another_design(client, alice, three_requests):
    created(client, alice, "y")
    other = f"{API}/designs/alice/y/change-requests/{three_requests[2]}"
    assert client.get(other).status_code == 404
    assert client.post(other + "/accept", headers=alice.headers).status_code == 404
    assert client.get(f"{REQUESTS}/{three_requests[2]}").json()["state"] == "open"
