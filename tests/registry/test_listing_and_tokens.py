"""``GET /designs`` with each design's latest verdict and processes and the ``process`` filter;
``DELETE /user/tokens/current``, the revocation ``dgml logout`` calls."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from dgml.db import make_engine, make_sessionmaker, write_session
from registry import accounts, listing
from registry.models import ApiToken, User
from tests.conftest import Account, mesh
from tests.registry.calls import API, created, pushed

CUBE = mesh("20mm-xyz-cube.stl")
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10mm" height="10mm"></svg>\n'


def listed(client, **params) -> dict[str, dict]:
    response = client.get(f"{API}/designs", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return {d["full_name"]: d for d in response.json()["items"]}


def every_page(client, limit: int, **params) -> tuple[list[str], list[dict]]:
    names: list[str] = []
    pages: list[dict] = []
    cursor = None
    while True:
        query = {"limit": limit, **params} | ({"cursor": cursor} if cursor else {})
        response = client.get(f"{API}/designs", params=query)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        names += [d["full_name"] for d in pages[-1]["items"]]
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return names, pages
        assert len(pages) < 50, "pagination does not end"


def design(client, account, name, files, manifest=None) -> None:
    created(client, account, name)
    form = {"manifest": json.dumps(manifest)} if manifest is not None else {}
    pushed(client, account, f"{account.name}/{name}", files, **form)


@pytest.fixture
def library(client, alice, bob, redis_client):
    """Designs whose processes are declared in different ways or read from their files
    (published after Redis was emptied for this test, so ``run_jobs`` finds their checks)."""
    design(client, alice, "cube", [("cube.stl", CUBE)])
    design(
        client, alice, "coaster", [("coaster.svg", SVG), ("cube.stl", CUBE)], {"process": "laser"}
    )
    design(client, bob, "plate", [("plate.step", b"ISO-10303-21;\n")], {"printing-process": "SLA"})
    design(client, bob, "sign", [("sign.svg", SVG)])
    design(client, bob, "box", [("design.py", b"import cadquery as cq\n")])
    design(client, bob, "notes", [("README.md", b"# notes\n")], {"process": ["CNC", "laser"]})
    # Mentions a process in its manifest without declaring one, and has no model file.
    design(client, bob, "idea", [("idea.txt", b"an idea\n")], {"function": "laser-cut, fdm"})
    created(client, alice, "empty")


def test_each_design_carries_its_latest_verdict_and_processes(client, library, alice, run_jobs):
    before = listed(client)
    assert before["alice/cube"]["verdict"] == "pending"
    run_jobs()
    pushed(client, alice, "alice/cube", [("README.md", b"# no model any more\n")])
    rows = listed(client)
    assert rows["alice/cube"]["latest_version"] == 2
    assert rows["alice/cube"]["verdict"] == "none"  # the latest version's, not the first's
    assert rows["alice/cube"]["processes"] == []
    assert rows["alice/coaster"]["verdict"] == "pass"
    assert rows["alice/coaster"]["processes"] == ["laser"]  # declared beats the files
    assert rows["bob/plate"]["processes"] == ["sla"]
    assert rows["bob/sign"]["processes"] == ["laser", "vinyl"]
    assert rows["bob/box"]["processes"] == ["fdm", "sla", "sls"]
    assert rows["bob/notes"]["processes"] == ["cnc", "laser"]
    assert rows["bob/idea"]["verdict"] == "none"
    assert rows["bob/idea"]["processes"] == []
    assert rows["alice/empty"]["verdict"] is None
    assert rows["alice/empty"]["processes"] == []
    # Everything a design document says is still there.
    single = client.get(f"{API}/designs/bob/sign").json()
    assert {k: rows["bob/sign"][k] for k in single} == single


def test_the_process_filter_uses_the_declared_processes_else_the_files(client, library):
    assert set(listed(client, process="fdm")) == {"alice/cube", "bob/box"}
    assert set(listed(client, process="LASER")) == {"alice/coaster", "bob/sign", "bob/notes"}
    assert set(listed(client, process="sla")) == {"alice/cube", "bob/box", "bob/plate"}
    assert set(listed(client, process="cnc")) == {"bob/notes"}
    assert set(listed(client, process="pcb")) == set()
    # The filter combines with the others.
    assert set(listed(client, process="laser", owner="bob")) == {"bob/sign", "bob/notes"}
    assert set(listed(client, process="fdm", q="box")) == {"bob/box"}


def test_process_filter_pages_hold_every_match_once(client, library, monkeypatch):
    names, pages = every_page(client, 1, process="laser")
    assert names == ["bob/notes", "bob/sign", "alice/coaster"]
    assert pages[-1]["next_cursor"] is None
    # A page that looked at its fill of designs answers early; the cursor goes on from there.
    monkeypatch.setattr(listing, "MAX_SCANNED", 2)
    names, pages = every_page(client, 5, process="laser")
    assert names == ["bob/notes", "bob/sign", "alice/coaster"]
    assert all(len(p["items"]) <= 2 for p in pages)


@pytest.mark.parametrize("process", ["", " ", "f%", "fdm;drop", "x" * 80, "é"])
def test_a_process_that_is_not_a_name_is_refused(client, library, process):
    response = client.get(f"{API}/designs", params={"process": process})
    if not process:
        assert response.status_code == 200  # an empty value is no filter, as for q or tag
        return
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "process"


# --- token revocation --------------------------------------------------------------------------


def second_token(settings, account: Account) -> str:
    engine = make_engine(settings.resolved_database_url)
    try:
        with write_session(make_sessionmaker(engine)) as session:
            user = session.scalar(select(User).where(User.name == account.name))
            return accounts.issue_token(session, user, label="laptop")
    finally:
        engine.dispose()


def test_a_token_revokes_itself_and_nothing_else(client, settings, alice, bob):
    other = second_token(settings, alice)
    response = client.delete(f"{API}/user/tokens/current", headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prefix"] == alice.token[:12]
    assert body["revoked_at"] >= body["created_at"]
    assert alice.token not in response.text

    assert client.get(f"{API}/user", headers=alice.headers).status_code == 401
    again = client.delete(f"{API}/user/tokens/current", headers=alice.headers)
    assert again.status_code == 401
    assert "revoked" in again.json()["detail"]
    mine = {"Authorization": f"Bearer {other}"}
    assert client.get(f"{API}/user", headers=mine).json()["name"] == "alice"
    assert client.get(f"{API}/user", headers=bob.headers).json()["name"] == "bob"

    engine = make_engine(settings.resolved_database_url)
    with make_sessionmaker(engine)() as session:
        rows = session.scalars(select(ApiToken).order_by(ApiToken.id)).all()
        revoked = [row.prefix for row in rows if row.revoked_at is not None]
    engine.dispose()
    assert revoked == [alice.token[:12]]  # kept, marked revoked, not deleted


def test_revoking_needs_a_valid_token(client):
    assert client.delete(f"{API}/user/tokens/current").status_code == 401
    wrong = {"Authorization": "Bearer dgml_not_a_token"}
    assert client.delete(f"{API}/user/tokens/current", headers=wrong).status_code == 401
    bad = {"Authorization": "Basic abc"}
    assert client.delete(f"{API}/user/tokens/current", headers=bad).status_code == 401
