"""Designs over HTTP: creating, reading, changing and searching them; accounts; activity."""

from __future__ import annotations

import base64
from datetime import datetime

import pytest

from tests.conftest import mesh
from tests.registry.calls import API, create, created, pushed

CUBE = mesh("20mm-xyz-cube.stl")


def search(client, **params) -> list[str]:
    response = client.get(f"{API}/designs", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return [d["full_name"] for d in response.json()["items"]]


def every_page(client, url, limit, **params) -> tuple[list[dict], list[dict]]:
    """All items of a paginated listing, and the raw pages."""
    items: list[dict] = []
    pages: list[dict] = []
    cursor = None
    while True:
        query = {"limit": limit, **params}
        if cursor:
            query["cursor"] = cursor
        response = client.get(url, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages
        assert len(pages) < 50, "pagination does not end"


# --- creating -----------------------------------------------------------------------------------


def test_create_design_answers_201_with_the_public_shape(client, alice):
    response = create(
        client,
        alice,
        "bracket",
        title="Wall bracket",
        description="Holds a 30 cm shelf.",
        license="cern-ohl-s-2.0",
        tags=["shelf", "wall"],
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {
        "owner",
        "name",
        "full_name",
        "title",
        "description",
        "license",
        "tags",
        "maintainers",
        "archived",
        "latest_version",
        "fork_count",
        "forked_from",
        "created_at",
        "updated_at",
    }
    assert body["owner"] == "alice"
    assert body["name"] == "bracket"
    assert body["full_name"] == "alice/bracket"
    assert body["title"] == "Wall bracket"
    assert body["description"] == "Holds a 30 cm shelf."
    assert body["license"] == "CERN-OHL-S-2.0"
    assert body["tags"] == ["shelf", "wall"]
    assert body["maintainers"] == ["alice"]
    assert body["archived"] is False
    assert body["latest_version"] is None
    assert body["fork_count"] == 0
    assert body["forked_from"] is None
    datetime.fromisoformat(body["created_at"])
    datetime.fromisoformat(body["updated_at"])
    assert client.get(f"{API}/designs/alice/bracket").json() == body


def test_create_design_without_token_is_unauthorized(client):
    response = client.post(f"{API}/designs", json={"name": "x", "title": "X", "license": "MIT"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_duplicate_design_name_is_a_conflict(client, alice):
    created(client, alice, "bracket", title="First")
    response = create(client, alice, "bracket", title="Second")
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert response.json()["field"] == "name"
    assert client.get(f"{API}/designs/alice/bracket").json()["title"] == "First"


def test_design_name_differing_only_in_case_is_a_conflict(client, alice):
    created(client, alice, "Bracket")
    response = create(client, alice, "bRACKET")
    assert response.status_code == 409
    assert response.json()["field"] == "name"
    assert search(client, owner="alice") == ["alice/Bracket"]


def test_two_owners_may_use_the_same_design_name(client, alice, bob):
    created(client, alice, "bracket")
    assert create(client, bob, "bracket").status_code == 201
    assert sorted(search(client, q="bracket")) == ["alice/bracket", "bob/bracket"]


def test_design_is_found_whatever_the_case_of_owner_and_name(client, alice):
    created(client, alice, "Bracket")
    body = client.get(f"{API}/designs/ALICE/bracket").json()
    assert body["full_name"] == "alice/Bracket"


@pytest.mark.parametrize("license", ["Not-A-Licence", "CC-BY-5.0", ""])
def test_unknown_licence_is_refused_naming_the_license_field(client, alice, license):
    response = create(client, alice, "bracket", license=license)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid"
    assert body["field"] == "license"
    assert client.get(f"{API}/designs/alice/bracket").status_code == 404


def test_unicode_title_and_description_round_trip(client, alice):
    title = "Étagère 棚 ✓"
    description = "Ein Regal für die Küche — 木製の棚 🪵"
    body = created(client, alice, "etagere", title=title, description=description)
    assert body["title"] == title
    fetched = client.get(f"{API}/designs/alice/etagere").json()
    assert fetched["title"] == title
    assert fetched["description"] == description


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-bracket",
        ".bracket",
        "has space",
        "slash/name",
        "trailing.",
        "two..dots",
        "étagère",
        "x" * 101,
    ],
)
def test_bad_design_names_are_refused(client, alice, name):
    response = create(client, alice, name)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "name"
    assert search(client) == []


@pytest.mark.parametrize("name", ["a", "M3-bolt_v2.1", "x" * 100])
def test_good_design_names_are_accepted(client, alice, name):
    assert create(client, alice, name).status_code == 201


def test_title_may_not_be_blank(client, alice):
    response = create(client, alice, "bracket", title="   ")
    assert response.status_code == 422
    assert response.json()["field"] == "title"


def test_unknown_fields_are_refused(client, alice):
    response = create(client, alice, "bracket", colour="red")
    assert response.status_code == 422
    assert response.json()["field"] == "colour"


def test_tags_are_lower_cased_stripped_and_deduplicated(client, alice):
    body = created(client, alice, "bracket", tags=["Wall", " shelf ", "SHELF", "wall", "3d-print"])
    assert sorted(body["tags"]) == ["3d-print", "shelf", "wall"]
    fetched = client.get(f"{API}/designs/alice/bracket").json()
    assert fetched["tags"] == body["tags"]


@pytest.mark.parametrize("tag", ["two words", "", "-dash", "x" * 51, "ünï"])
def test_bad_tags_are_refused(client, alice, tag):
    response = create(client, alice, "bracket", tags=[tag])
    assert response.status_code == 422
    assert response.json()["field"] == "tags"


def test_unknown_design_is_404(client, alice):
    created(client, alice, "bracket")
    for url in ("alice/nope", "nobody/bracket"):
        response = client.get(f"{API}/designs/{url}")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
        assert url in response.json()["detail"]


# --- changing -----------------------------------------------------------------------------------


def test_owner_may_change_title_description_and_tags(client, alice):
    before = created(client, alice, "bracket", title="Old", tags=["old"])
    response = client.patch(
        f"{API}/designs/alice/bracket",
        json={"title": "New title", "description": "Now with ribs", "tags": ["Ribbed", "wall"]},
        headers=alice.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["title"] == "New title"
    assert body["description"] == "Now with ribs"
    assert body["tags"] == ["ribbed", "wall"]
    assert body["updated_at"] >= before["updated_at"]
    assert client.get(f"{API}/designs/alice/bracket").json() == body
    assert search(client, q="ribs") == ["alice/bracket"]
    assert search(client, tag="old") == []


def test_patch_changes_only_what_it_names(client, alice):
    created(client, alice, "bracket", title="Keep", description="Keep too", tags=["keep"])
    body = client.patch(
        f"{API}/designs/alice/bracket", json={"description": "Changed"}, headers=alice.headers
    ).json()
    assert (body["title"], body["description"], body["tags"]) == ("Keep", "Changed", ["keep"])


def test_another_user_may_not_change_a_design(client, alice, bob):
    created(client, alice, "bracket", title="Alice's")
    response = client.patch(
        f"{API}/designs/alice/bracket", json={"title": "Bob's"}, headers=bob.headers
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert client.get(f"{API}/designs/alice/bracket").json()["title"] == "Alice's"


def test_maintainer_may_change_a_design(client, alice, bob):
    created(client, alice, "bracket")
    client.put(f"{API}/designs/alice/bracket/maintainers/bob", headers=alice.headers)
    response = client.patch(
        f"{API}/designs/alice/bracket", json={"title": "By bob"}, headers=bob.headers
    )
    assert response.status_code == 200
    assert response.json()["title"] == "By bob"
    assert response.json()["maintainers"] == ["alice", "bob"]


def test_patch_without_token_is_unauthorized_and_unknown_design_is_404(client, alice):
    created(client, alice, "bracket")
    assert client.patch(f"{API}/designs/alice/bracket", json={"title": "X"}).status_code == 401
    response = client.patch(f"{API}/designs/alice/nope", json={"title": "X"}, headers=alice.headers)
    assert response.status_code == 404


def test_patch_may_not_rename_or_relicense(client, alice):
    created(client, alice, "bracket", license="CC-BY-SA-4.0")
    for field, value in (("license", "MIT"), ("name", "other")):
        response = client.patch(
            f"{API}/designs/alice/bracket", json={field: value}, headers=alice.headers
        )
        assert response.status_code == 422
        assert response.json()["field"] == field
    body = client.get(f"{API}/designs/alice/bracket").json()
    assert (body["name"], body["license"]) == ("bracket", "CC-BY-SA-4.0")


# --- searching ----------------------------------------------------------------------------------


@pytest.fixture
def catalogue(client, alice, bob):
    """Five designs from two owners, created in this order."""
    created(
        client,
        alice,
        "shelf-bracket",
        title="Shelf bracket",
        description="Holds a wooden shelf",
        tags=["shelf", "wall"],
        license="CC-BY-SA-4.0",
    )
    created(
        client,
        alice,
        "etagere",
        title="Étagère 棚 ✓",
        description="Petite étagère murale",
        tags=["shelf"],
        license="CC-BY-4.0",
    )
    created(
        client,
        bob,
        "cable-clip",
        title="Cable clip",
        description="Keeps cables along a desk",
        tags=["desk"],
        license="MIT",
    )
    created(
        client,
        bob,
        "desk-shelf",
        title="Desk shelf",
        description="A small monitor riser",
        tags=["desk", "shelf"],
        license="CC-BY-SA-4.0",
    )
    created(
        client,
        alice,
        "gear_100",
        title="Gear with 100% infill",
        description="Spur gear",
        tags=["gear"],
        license="CERN-OHL-S-2.0",
    )


def test_search_without_filters_lists_every_design_newest_first(client, catalogue):
    assert search(client) == [
        "alice/gear_100",
        "bob/desk-shelf",
        "bob/cable-clip",
        "alice/etagere",
        "alice/shelf-bracket",
    ]


def test_search_by_words_matches_title_and_description_ignoring_case(client, catalogue):
    assert search(client, q="Clip") == ["bob/cable-clip"]
    assert search(client, q="MONITOR") == ["bob/desk-shelf"]
    assert search(client, q="WOODEN Bracket") == ["alice/shelf-bracket"]
    assert search(client, q="murale") == ["alice/etagere"]


def test_search_by_words_also_matches_names_and_tags(client, catalogue):
    # etagere says "shelf" only in its tags, gear_100 only in its name.
    assert search(client, q="SHELF") == [
        "bob/desk-shelf",
        "alice/etagere",
        "alice/shelf-bracket",
    ]
    assert search(client, q="gear_100") == ["alice/gear_100"]


def test_search_needs_every_word(client, catalogue):
    assert search(client, q="shelf cables") == []
    assert search(client, q="desk cables") == ["bob/cable-clip"]


def test_search_matches_unicode_words_whatever_their_case(client, catalogue):
    assert search(client, q="ÉTAGÈRE") == ["alice/etagere"]
    assert search(client, q="棚") == ["alice/etagere"]
    assert search(client, q="✓") == ["alice/etagere"]


def test_search_treats_like_wildcards_as_plain_text(client, catalogue):
    assert search(client, q="100%") == ["alice/gear_100"]
    assert search(client, q="%") == ["alice/gear_100"]
    assert search(client, q="_") == ["alice/gear_100"]
    assert search(client, q="\\") == []


def test_search_by_tag(client, catalogue):
    assert search(client, tag="desk") == ["bob/desk-shelf", "bob/cable-clip"]
    assert search(client, tag="SHELF") == [
        "bob/desk-shelf",
        "alice/etagere",
        "alice/shelf-bracket",
    ]
    assert search(client, tag="nothing") == []


def test_search_by_licence(client, catalogue):
    assert search(client, license="cc-by-sa-4.0") == ["bob/desk-shelf", "alice/shelf-bracket"]
    assert search(client, license="MIT") == ["bob/cable-clip"]
    assert search(client, license="CC0-1.0") == []


def test_search_by_unknown_licence_is_refused(client, catalogue):
    response = client.get(f"{API}/designs", params={"license": "Not-A-Licence"})
    assert response.status_code == 422
    assert response.json()["field"] == "license"


def test_search_by_owner(client, catalogue):
    assert search(client, owner="BOB") == ["bob/desk-shelf", "bob/cable-clip"]
    assert search(client, owner="nobody") == []


def test_search_combines_every_filter(client, catalogue):
    assert search(client, q="wooden", tag="shelf", owner="alice") == ["alice/shelf-bracket"]
    assert search(client, q="shelf", owner="alice", license="CC-BY-4.0") == ["alice/etagere"]
    assert search(client, tag="shelf", license="CC-BY-SA-4.0", owner="bob") == ["bob/desk-shelf"]
    assert search(client, q="shelf", tag="desk", license="MIT") == []
    assert search(client, q="étagère", owner="bob") == []


def test_search_pages_return_every_design_once_newest_first(client, catalogue):
    items, pages = every_page(client, f"{API}/designs", 2)
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert pages[-1]["next_cursor"] is None
    assert [d["full_name"] for d in items] == search(client)
    assert len({d["full_name"] for d in items}) == 5


def test_search_pages_respect_filters(client, catalogue):
    items, pages = every_page(client, f"{API}/designs", 1, tag="shelf")
    assert [d["full_name"] for d in items] == [
        "bob/desk-shelf",
        "alice/etagere",
        "alice/shelf-bracket",
    ]
    assert len(pages) == 3


def test_search_page_that_fits_exactly_has_no_next_cursor(client, catalogue):
    page = client.get(f"{API}/designs", params={"limit": 5}).json()
    assert len(page["items"]) == 5
    assert page["next_cursor"] is None


def test_designs_created_while_paging_do_not_disturb_later_pages(client, alice, catalogue):
    first = client.get(f"{API}/designs", params={"limit": 2}).json()
    created(client, alice, "newcomer")
    rest, _ = every_page(client, f"{API}/designs", 2, cursor=first["next_cursor"])
    names = [d["full_name"] for d in first["items"] + rest]
    assert "alice/newcomer" not in names
    assert len(names) == len(set(names)) == 5


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        base64.urlsafe_b64encode(b"id:x").decode(),
        base64.urlsafe_b64encode(b"page:3").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"id:99999999999999999999999").decode(),
    ],
)
def test_garbage_cursor_is_refused(client, catalogue, cursor):
    response = client.get(f"{API}/designs", params={"cursor": cursor})
    assert response.status_code == 422
    assert response.json()["field"] == "cursor"


def test_page_limit_below_one_is_refused(client, catalogue):
    response = client.get(f"{API}/designs", params={"limit": 0})
    assert response.status_code == 422
    assert response.json()["field"] == "limit"


# --- accounts -----------------------------------------------------------------------------------


def test_current_user_is_the_token_owner(client, alice):
    response = client.get(f"{API}/user", headers=alice.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "alice"
    assert body["is_admin"] is False
    datetime.fromisoformat(body["created_at"])


def test_current_user_needs_a_valid_token(client, alice):
    assert client.get(f"{API}/user").status_code == 401
    response = client.get(f"{API}/user", headers={"Authorization": "Bearer dgml_wrong"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    basic = client.get(f"{API}/user", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert basic.status_code == 401


def test_admin_creates_an_account_whose_token_works(client, make_account):
    root = make_account("root", admin=True)
    response = client.post(f"{API}/users", json={"name": "dana"}, headers=root.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "dana"
    assert body["is_admin"] is False
    token = body["token"]
    me = client.get(f"{API}/user", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["name"] == "dana"
    design = client.post(
        f"{API}/designs",
        json={"name": "lamp", "title": "Lamp", "license": "MIT"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert design.status_code == 201
    assert design.json()["owner"] == "dana"


def test_admin_may_create_another_admin(client, make_account):
    root = make_account("root", admin=True)
    body = client.post(
        f"{API}/users", json={"name": "ops", "admin": True}, headers=root.headers
    ).json()
    assert body["is_admin"] is True
    me = client.get(f"{API}/user", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json()["is_admin"] is True


def test_non_admin_may_not_create_accounts(client, alice):
    response = client.post(f"{API}/users", json={"name": "mallory"}, headers=alice.headers)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert client.get(f"{API}/users/mallory").status_code == 404
    assert client.post(f"{API}/users", json={"name": "mallory"}).status_code == 401


def test_account_names_are_unique_whatever_their_case(client, make_account, alice):
    root = make_account("root", admin=True)
    response = client.post(f"{API}/users", json={"name": "ALICE"}, headers=root.headers)
    assert response.status_code == 409
    assert response.json()["field"] == "name"


@pytest.mark.parametrize("name", ["", "-dash", "dash-", "two--dashes", "has space", "x" * 41])
def test_bad_account_names_are_refused(client, make_account, name):
    root = make_account("root", admin=True)
    response = client.post(f"{API}/users", json={"name": name}, headers=root.headers)
    assert response.status_code == 422
    assert response.json()["field"] == "name"


# --- activity -----------------------------------------------------------------------------------


@pytest.fixture
def busy_design(client, alice, bob, make_account):
    """alice/x with pushes, a maintainer, a fork and an accepted change request."""
    carol = make_account("carol")
    created(client, alice, "x", license="CC-BY-4.0")
    pushed(client, alice, "alice/x", [("a.stl", CUBE)], message="first")
    assert client.put(f"{API}/designs/alice/x/maintainers/bob", headers=alice.headers).is_success
    pushed(client, bob, "alice/x", [("a.stl", CUBE + b"\n")], message="by bob")
    fork = client.post(f"{API}/designs/alice/x/versions/2/fork", headers=carol.headers)
    assert fork.status_code == 201, fork.text
    pushed(client, carol, "carol/x", [("a.stl", CUBE + b"\n\n")], message="carol's")
    opened = client.post(
        f"{API}/designs/alice/x/change-requests",
        json={"from": {"owner": "carol", "name": "x", "version": 2}, "title": "Thicker"},
        headers=carol.headers,
    )
    assert opened.status_code == 201, opened.text
    request_id = opened.json()["id"]
    accepted = client.post(
        f"{API}/designs/alice/x/change-requests/{request_id}/accept", headers=alice.headers
    )
    assert accepted.status_code == 200, accepted.text
    return request_id


def activity(client, design, **params) -> list[dict]:
    response = client.get(f"{API}/designs/{design}/activity", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_activity_lists_what_happened_newest_first_with_actor_names(client, busy_design):
    events = activity(client, "alice/x")
    assert [(e["kind"], e["actor"]) for e in events] == [
        ("change_request.accepted", "alice"),
        ("version.created", "alice"),
        ("change_request.opened", "carol"),
        ("design.forked", "carol"),
        ("version.created", "bob"),
        ("maintainer.added", "alice"),
        ("version.created", "alice"),
        ("design.created", "alice"),
    ]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True)
    assert all(e["design"] == "alice/x" for e in events)
    times = [datetime.fromisoformat(e["created_at"]) for e in events]
    assert times == sorted(times, reverse=True)


def test_activity_events_carry_their_details(client, busy_design):
    by_kind: dict[str, list[dict]] = {}
    for event in activity(client, "alice/x"):
        by_kind.setdefault(event["kind"], []).append(event["data"])
    assert by_kind["design.created"] == [{"license": "CC-BY-4.0"}]
    assert by_kind["maintainer.added"] == [{"maintainer": "bob"}]
    assert [d["version"] for d in by_kind["version.created"]] == [3, 2, 1]
    assert [d["kind"] for d in by_kind["version.created"]] == ["merge", "push", "push"]
    assert by_kind["design.forked"] == [{"fork": "carol/x", "version": 2}]
    opened = by_kind["change_request.opened"][0]
    assert opened["id"] == busy_design
    assert opened["source"] == {"owner": "carol", "name": "x", "version": 2}
    assert opened["title"] == "Thicker"
    assert by_kind["change_request.accepted"] == [{"id": busy_design, "version": 3}]


def test_activity_of_a_fork_starts_with_its_origin(client, busy_design):
    events = activity(client, "carol/x")
    assert [(e["kind"], e["actor"]) for e in events] == [
        ("version.created", "carol"),
        ("fork.created", "carol"),
        ("version.created", "carol"),
        ("design.created", "carol"),
    ]
    assert events[1]["data"] == {"origin": {"owner": "alice", "name": "x", "version": 2}}
    assert events[2]["data"]["kind"] == "fork"


def test_activity_records_updates_and_declines(client, alice, bob):
    created(client, alice, "x")
    pushed(client, alice, "alice/x", [("a.stl", CUBE)])
    client.patch(f"{API}/designs/alice/x", json={"title": "Renamed"}, headers=alice.headers)
    client.post(f"{API}/designs/alice/x/versions/1/fork", headers=bob.headers)
    opened = client.post(
        f"{API}/designs/alice/x/change-requests",
        json={"from": {"owner": "bob", "name": "x", "version": 1}, "title": "Same"},
        headers=bob.headers,
    ).json()
    client.post(
        f"{API}/designs/alice/x/change-requests/{opened['id']}/decline",
        json={"message": "nothing new"},
        headers=alice.headers,
    )
    events = activity(client, "alice/x")
    assert events[0]["kind"] == "change_request.declined"
    assert events[0]["actor"] == "alice"
    assert events[0]["data"] == {"id": opened["id"], "message": "nothing new"}
    updated = next(e for e in events if e["kind"] == "design.updated")
    assert updated["data"] == {"fields": ["title"]}


def test_activity_pages_return_every_event_once(client, busy_design):
    everything = activity(client, "alice/x")
    items, pages = every_page(client, f"{API}/designs/alice/x/activity", 3)
    assert [len(p["items"]) for p in pages] == [3, 3, 2]
    assert pages[-1]["next_cursor"] is None
    assert items == everything


def test_activity_of_unknown_design_is_404_and_garbage_cursor_422(client, alice):
    assert client.get(f"{API}/designs/alice/nope/activity").status_code == 404
    created(client, alice, "x")
    response = client.get(f"{API}/designs/alice/x/activity", params={"cursor": "garbage"})
    assert response.status_code == 422
    assert response.json()["field"] == "cursor"
