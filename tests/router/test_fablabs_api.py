"""The fablab directory over HTTP: registration, reading, listing, changes, and agent enrolment."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from dgml.app import create_app
from dgml.db import make_engine, make_sessionmaker, utcnow, write_session
from registry.accounts import hash_token
from router import geo
from router.directory import AGENT_PREFIX, ENROLMENT_PREFIX, AgentCaller
from router.models import Fablab

API = "/api/v1"
RENNES = (48.1173, -1.6778)
RENNES_SOUTH = (48.0833, -1.6833)  # about 4 km from the centre
BREST = (48.3904, -4.4861)  # about 210 km from Rennes
PARIS = (48.8566, 2.3522)  # about 310 km from Rennes


def lab_body(name: str = "FabLab de Rennes", where=RENNES, **fields) -> dict:
    body = {
        "name": name,
        "location": {"lat": where[0], "lon": where[1]},
        "legal_form": "nonprofit",
        "machines": [
            {"process": "fdm", "materials": ["PLA", "petg"], "build_volume_mm": [250, 210, 210]}
        ],
    }
    body.update(fields)
    return body


def register(client, account, **fields) -> dict:
    response = client.post(f"{API}/fablabs", json=lab_body(**fields), headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


def enrol(client, token: str) -> httpx.Response:
    return client.post(f"{API}/agent/enroll", json={"enrolment_token": token})


@pytest.fixture
def sessions(settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def agent_client(settings) -> Iterator[TestClient]:
    """The app with one extra route behind the agent's authentication, to call it as an agent."""
    app = create_app(settings)

    @app.get("/probe/agent")
    def probe(agent: AgentCaller) -> dict[str, str]:
        return {"fablab_id": agent.fablab_id}

    with TestClient(app) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- registration -----------------------------------------------------------------------------


def test_register_answers_an_id_from_the_name_and_a_token_shown_once(client, alice, sessions):
    lab = register(client, alice, contact={"email": "hello@lab.example", "url": "https://lab.fr"})
    assert lab["id"] == "fablab-de-rennes"
    assert lab["operator"] == "alice"
    assert lab["location"] == {"lat": RENNES[0], "lon": RENNES[1]}
    assert lab["machines"] == [
        {
            "process": "fdm",
            "materials": ["pla", "petg"],
            "build_volume_mm": [250, 210, 210],
            "count": 1,
        }
    ]
    assert lab["contact"] == {"email": "hello@lab.example", "url": "https://lab.fr"}
    assert lab["online"] is False and lab["last_seen_at"] is None
    token = lab["enrolment_token"]
    assert token.startswith(ENROLMENT_PREFIX)
    with sessions() as session:
        row = session.get(Fablab, lab["id"])
        assert row.enrolment_token_hash == hash_token(token)
        assert row.agent_token_hash is None
    shown = client.get(f"{API}/fablabs/{lab['id']}")
    assert shown.status_code == 200
    assert token not in shown.text and row.enrolment_token_hash not in shown.text
    assert "enrolment_token" not in shown.json()
    assert shown.json() == {k: v for k, v in lab.items() if k != "enrolment_token"}


def test_names_taken_get_a_numbered_id_and_an_explicit_id_is_kept_or_refused(client, alice, bob):
    ids = [register(client, alice, name="Le Garage!")["id"] for _ in range(3)]
    assert ids == ["le-garage", "le-garage-2", "le-garage-3"]
    assert register(client, bob, name="Économie Circulaire")["id"] == "economie-circulaire"
    assert register(client, bob, name="工房")["id"] == "fablab"
    assert register(client, bob, name="Anything", id="my-lab")["id"] == "my-lab"
    taken = client.post(f"{API}/fablabs", json=lab_body(id="my-lab"), headers=bob.headers)
    assert taken.status_code == 409
    assert taken.json()["error"] == "conflict" and taken.json()["field"] == "id"


def test_processes_and_materials_are_casefolded_and_materials_deduplicated(client, alice):
    machine = {
        "process": "Laser",
        "materials": ["Plywood-3mm", "plywood-3MM", " Acrylic "],
        "build_volume_mm": [600, 400, 10],
        "count": 2,
        "kerf_mm": 0.2,
        "model": "Trotec Speedy 100",
    }
    lab = register(client, alice, machines=[machine])
    assert lab["machines"] == [
        {
            "process": "laser",
            "materials": ["plywood-3mm", "acrylic"],
            "build_volume_mm": [600, 400, 10],
            "count": 2,
            "kerf_mm": 0.2,
            "model": "Trotec Speedy 100",
        }
    ]


def test_an_unknown_fablab_is_404(client, alice):
    for path in ("/fablabs/nowhere", "/fablabs/nowhere/board", "/fablabs/" + "x" * 300):
        response = client.get(API + path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"
    patched = client.patch(f"{API}/fablabs/nowhere", json={"name": "x"}, headers=alice.headers)
    assert patched.status_code == 404
    token = client.post(f"{API}/fablabs/nowhere/enrolment-token", headers=alice.headers)
    assert token.status_code == 404


def test_registering_needs_a_user_token(client):
    response = client.post(f"{API}/fablabs", json=lab_body())
    assert response.status_code == 401
    assert client.get(f"{API}/fablabs").json()["items"] == []


# --- listing ----------------------------------------------------------------------------------


def test_listing_pages_through_every_fablab_once(client, alice):
    made = {register(client, alice, name=f"Lab {i}")["id"] for i in range(7)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{API}/fablabs", params=params).json()
        assert len(page["items"]) <= 3
        seen += [lab["id"] for lab in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(made) and len(seen) == len(made)
    assert all("enrolment_token" not in lab for lab in page["items"])


def test_listing_filters_on_process_and_material_of_one_machine(client, alice):
    fdm = {"process": "fdm", "materials": ["pla"], "build_volume_mm": [200, 200, 200]}
    sla = {"process": "sla", "materials": ["resin"], "build_volume_mm": [145, 145, 175]}
    laser = {"process": "laser", "materials": ["pla", "mdf-3mm"], "build_volume_mm": [600, 400, 9]}
    register(client, alice, name="Printers", machines=[fdm])
    register(client, alice, name="Resin", machines=[sla, fdm])
    register(client, alice, name="Cutter", machines=[laser])

    def ids(**params) -> set[str]:
        response = client.get(f"{API}/fablabs", params={**params, "limit": 1})
        assert response.status_code == 200, response.text
        found, page = set(), response.json()
        while True:
            found |= {lab["id"] for lab in page["items"]}
            if not page["next_cursor"]:
                return found
            page = client.get(
                f"{API}/fablabs", params={**params, "limit": 1, "cursor": page["next_cursor"]}
            ).json()

    assert ids(process="fdm") == {"printers", "resin"}
    assert ids(process="SLA") == {"resin"}
    assert ids(material="PLA") == {"printers", "resin", "cutter"}
    # One machine must do both: the cutter takes pla, but not as fdm.
    assert ids(process="fdm", material="pla") == {"printers", "resin"}
    assert ids(process="laser", material="resin") == set()
    assert ids(material="pla 'or 1=1") == set()
    unknown = client.get(f"{API}/fablabs", params={"process": "vinyl"})
    assert unknown.status_code == 422 and unknown.json()["field"] == "process"


def test_listing_near_a_place_is_nearest_first_within_the_radius(client, alice):
    register(client, alice, name="Paris", where=PARIS)
    register(client, alice, name="Brest", where=BREST)
    register(client, alice, name="Rennes South", where=RENNES_SOUTH)
    register(client, alice, name="Rennes", where=RENNES)
    near = f"{RENNES[0]},{RENNES[1]}"
    close = client.get(f"{API}/fablabs", params={"near": near, "radius_km": 100}).json()
    assert [lab["id"] for lab in close["items"]] == ["rennes", "rennes-south"]
    assert close["items"][0]["distance_km"] == 0
    expected = geo.distance_km(*RENNES, *RENNES_SOUTH)
    assert close["items"][1]["distance_km"] == pytest.approx(expected, abs=1e-5)
    # Paged nearest first over a wider circle.
    seen, cursor = [], None
    while True:
        params = {
            "near": near,
            "radius_km": 400,
            "limit": 1,
            **({"cursor": cursor} if cursor else {}),
        }
        page = client.get(f"{API}/fablabs", params=params).json()
        seen += [(lab["id"], lab["distance_km"]) for lab in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert [i for i, _ in seen] == ["rennes", "rennes-south", "brest", "paris"]
    assert [km for _, km in seen] == sorted(km for _, km in seen)
    # The default radius is 50 km; a plain listing has no distances.
    default = client.get(f"{API}/fablabs", params={"near": near}).json()["items"]
    assert {lab["id"] for lab in default} == {"rennes", "rennes-south"}
    assert all(lab["distance_km"] is None for lab in client.get(f"{API}/fablabs").json()["items"])


def test_listing_near_the_antimeridian_and_a_pole(client, alice):
    register(client, alice, name="Fiji East", where=(-17.0, 179.9))
    register(client, alice, name="Fiji West", where=(-17.0, -179.9))
    register(client, alice, name="Station", where=(89.9, 10.0))
    register(client, alice, name="Opposite", where=(89.9, -170.0))
    fiji = client.get(f"{API}/fablabs", params={"near": "-17.0,179.95", "radius_km": 50}).json()
    assert {lab["id"] for lab in fiji["items"]} == {"fiji-east", "fiji-west"}
    pole = client.get(f"{API}/fablabs", params={"near": "90,0", "radius_km": 20}).json()
    assert {lab["id"] for lab in pole["items"]} == {"station", "opposite"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "garbage!"}, "cursor"),
        ({"near": "48.1,-1.6", "cursor": "aWQ6Zm9v"}, "cursor"),  # a cursor of the id order
        ({"radius_km": 10}, "radius_km"),
        ({"near": "48.1"}, "near"),
        ({"near": "north,south"}, "near"),
        ({"near": "91,0"}, "near"),
        ({"near": "nan,0"}, "near"),
        ({"near": "48,2", "radius_km": 0}, "radius_km"),
        ({"near": "48,2", "radius_km": "nan"}, "radius_km"),
        ({"near": "48,2", "radius_km": 1e6}, "radius_km"),
        ({"limit": 0}, "limit"),
    ],
)
def test_listing_refuses_bad_parameters(client, params, field):
    response = client.get(f"{API}/fablabs", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


# --- changes ----------------------------------------------------------------------------------


def test_the_operator_changes_machines_price_hours_contact_and_location(
    redis_client, client, alice
):
    lab = register(client, alice, price={"per_job_eur": 5, "per_cm3_eur": 0.1})
    change = {
        "machines": [{"process": "cnc", "materials": ["mdf"], "build_volume_mm": [600, 400, 80]}],
        "price": None,
        "opening_hours": {"wed": "14:00-19:00", "sat": "10:00-18:00"},
        "contact": {"phone": "+33 2 99 00 00 00"},
        "location": {"lat": BREST[0], "lon": BREST[1]},
    }
    response = client.patch(f"{API}/fablabs/{lab['id']}", json=change, headers=alice.headers)
    assert response.status_code == 200, response.text
    shown = client.get(f"{API}/fablabs/{lab['id']}").json()
    assert shown == response.json()
    assert shown["machines"][0]["process"] == "cnc"
    assert shown["price"] is None
    assert shown["opening_hours"] == change["opening_hours"]
    assert shown["contact"] == {"phone": "+33 2 99 00 00 00"}
    assert shown["location"] == {"lat": BREST[0], "lon": BREST[1]}
    assert shown["name"] == lab["name"]
    # The geo index moved it too.
    near_brest = redis_client.geosearch(
        geo.KEY, longitude=BREST[1], latitude=BREST[0], radius=1, unit="km"
    )
    assert near_brest == [lab["id"].encode()]
    assert (
        redis_client.geosearch(
            geo.KEY, longitude=RENNES[1], latitude=RENNES[0], radius=50, unit="km"
        )
        == []
    )


def test_only_the_operator_or_an_admin_may_change_a_fablab(client, alice, bob, make_account):
    lab = register(client, alice)
    url = f"{API}/fablabs/{lab['id']}"
    refused = client.patch(url, json={"name": "Mine now"}, headers=bob.headers)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert client.patch(url, json={"name": "Mine now"}).status_code == 401
    admin = make_account("root", admin=True)
    allowed = client.patch(url, json={"name": "Renamed"}, headers=admin.headers)
    assert allowed.status_code == 200 and allowed.json()["name"] == "Renamed"
    assert allowed.json()["operator"] == "alice"
    assert client.get(url).json()["name"] == "Renamed"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": None}, "name"),
        ({"machines": None}, "machines"),
        ({"machines": []}, "machines"),
        ({"location": {"lat": 91, "lon": 0}}, "location"),
        ({"legal_form": "company"}, "legal_form"),
        ({"operator": "bob"}, "operator"),
    ],
)
def test_a_bad_change_is_refused_and_changes_nothing(client, alice, change, field):
    lab = register(client, alice)
    url = f"{API}/fablabs/{lab['id']}"
    response = client.patch(url, json=change, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    after = client.get(url).json()
    assert after == {k: v for k, v in lab.items() if k != "enrolment_token"}


# --- enrolment --------------------------------------------------------------------------------


def test_an_agent_enrols_once_and_its_fablab_comes_online(agent_client, alice, sessions):
    client = agent_client
    lab = register(client, alice)
    enrolled = enrol(client, lab["enrolment_token"])
    assert enrolled.status_code == 200, enrolled.text
    body = enrolled.json()
    assert body["fablab_id"] == lab["id"] and body["agent_token"].startswith(AGENT_PREFIX)
    shown = client.get(f"{API}/fablabs/{lab['id']}").json()
    assert shown["online"] is True and shown["enrolled_at"] is not None
    probe = client.get("/probe/agent", headers=bearer(body["agent_token"]))
    assert probe.status_code == 200 and probe.json() == {"fablab_id": lab["id"]}
    with sessions() as session:
        row = session.get(Fablab, lab["id"])
        assert row.agent_token_hash == hash_token(body["agent_token"])
        assert row.enrolment_token_hash is None

    replayed = enrol(client, lab["enrolment_token"])
    assert replayed.status_code == 401
    assert "already used" in replayed.json()["detail"]
    # The replay changed nothing: the agent token in use still works.
    assert client.get("/probe/agent", headers=bearer(body["agent_token"])).status_code == 200

    # Silent for longer than agent_online_s: offline; its next call brings it back.
    with write_session(sessions) as session:
        session.execute(
            update(Fablab)
            .where(Fablab.id == lab["id"])
            .values(last_seen_at=utcnow() - timedelta(hours=1))
        )
    assert client.get(f"{API}/fablabs/{lab['id']}").json()["online"] is False
    assert client.get("/probe/agent", headers=bearer(body["agent_token"])).status_code == 200
    assert client.get(f"{API}/fablabs/{lab['id']}").json()["online"] is True


def test_a_new_enrolment_token_replaces_the_agent_token_only_once_used(agent_client, alice, bob):
    client = agent_client
    lab = register(client, alice)
    first = enrol(client, lab["enrolment_token"]).json()["agent_token"]
    url = f"{API}/fablabs/{lab['id']}/enrolment-token"
    assert client.post(url, headers=bob.headers).status_code == 403
    assert client.post(url).status_code == 401
    unused = client.post(url, headers=alice.headers)
    assert unused.status_code == 201
    fresh = client.post(url, headers=alice.headers).json()
    assert fresh["fablab_id"] == lab["id"] and fresh["enrolment_token"].startswith(ENROLMENT_PREFIX)
    # Until the fresh token is used, the agent token in use keeps working.
    assert client.get("/probe/agent", headers=bearer(first)).status_code == 200
    # A newer enrolment token makes the unused older one void.
    assert enrol(client, unused.json()["enrolment_token"]).status_code == 401
    second = enrol(client, fresh["enrolment_token"])
    assert second.status_code == 200
    assert client.get("/probe/agent", headers=bearer(first)).status_code == 401
    probe = client.get("/probe/agent", headers=bearer(second.json()["agent_token"]))
    assert probe.json() == {"fablab_id": lab["id"]}


def test_tokens_only_work_where_they_belong(agent_client, alice):
    client = agent_client
    lab = register(client, alice)
    enrolment = lab["enrolment_token"]
    # An enrolment token is neither a user token nor an agent token.
    assert client.get(f"{API}/user", headers=bearer(enrolment)).status_code == 401
    assert client.get("/probe/agent", headers=bearer(enrolment)).status_code == 401
    agent = enrol(client, enrolment).json()["agent_token"]
    # An agent token is not a user token ...
    as_user = client.post(f"{API}/fablabs", json=lab_body(name="Sneaky"), headers=bearer(agent))
    assert as_user.status_code == 401 and as_user.json()["error"] == "unauthorized"
    patch = client.patch(f"{API}/fablabs/{lab['id']}", json={"name": "x"}, headers=bearer(agent))
    assert patch.status_code == 401
    # ... nor an enrolment token, and a user token is not an agent token.
    again = enrol(client, agent)
    assert again.status_code == 401 and "agent token" in again.json()["detail"]
    assert client.get("/probe/agent", headers=alice.headers).status_code == 401
    assert client.get("/probe/agent").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"enrolment_token": "dgml_enrol_not-a-real-token"},
        {"enrolment_token": "garbage"},
        {"enrolment_token": "é" * 150},
    ],
)
def test_enrolling_with_a_garbage_token_is_401(client, body):
    response = client.post(f"{API}/agent/enroll", json=body)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    "body", [{}, {"enrolment_token": ""}, {"enrolment_token": 42}, {"enrolment_token": "x" * 201}]
)
def test_enrolling_with_a_malformed_body_is_422(client, body):
    response = client.post(f"{API}/agent/enroll", json=body)
    assert response.status_code == 422
    assert response.json()["field"] in ("enrolment_token", "body")


def test_of_concurrent_enrolments_with_one_token_exactly_one_wins(live_server, alice):
    lab = httpx.post(f"{live_server}{API}/fablabs", json=lab_body(), headers=alice.headers)
    assert lab.status_code == 201
    token = lab.json()["enrolment_token"]
    callers = 8
    barrier = threading.Barrier(callers)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def call() -> None:
        with httpx.Client(timeout=60) as http:
            barrier.wait()
            response = http.post(
                f"{live_server}{API}/agent/enroll", json={"enrolment_token": token}
            )
        with lock:
            results.append(response)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [401] * (callers - 1), [r.text for r in results]
    winner = next(r for r in results if r.status_code == 200).json()
    shown = httpx.get(f"{live_server}{API}/fablabs/{winner['fablab_id']}").json()
    assert shown["online"] is True


def test_concurrent_registrations_of_one_name_get_distinct_ids(live_server, alice):
    callers = 6
    barrier = threading.Barrier(callers)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def call() -> None:
        with httpx.Client(timeout=60) as http:
            barrier.wait()
            response = http.post(
                f"{live_server}{API}/fablabs", json=lab_body(name="Twin"), headers=alice.headers
            )
        with lock:
            results.append(response)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [r.status_code for r in results] == [201] * callers, [r.text for r in results]
    ids = sorted(r.json()["id"] for r in results)
    assert ids == sorted(["twin"] + [f"twin-{n}" for n in range(2, callers + 1)])
    listed = httpx.get(f"{live_server}{API}/fablabs", params={"limit": 100}).json()["items"]
    assert sorted(lab["id"] for lab in listed) == ids
