"""The geo index in step with the directory (a real Redis), and the French fablabs seeded."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dgml.app import create_app
from dgml.db import make_engine, make_sessionmaker, write_session
from router import geo
from router.directory import (
    PROCESSES,
    ensure_geo_index,
    index_fablab,
    load_records,
    sync_geo_index,
)
from router.fablabs_seed import load_listings, seed, seed_fablabs
from router.models import Fablab
from tests.conftest import free_port
from tests.router.conftest import FABLABS_FR
from tests.router.test_fablabs_api import (
    API,
    BREST,
    PARIS,
    RENNES,
    enrol,
    lab_body,
    register,
)

LANNION = (48.7317, -3.4510)


@pytest.fixture
def sessions(settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def around(redis, where, km: float) -> set[str]:
    found = redis.geosearch(geo.KEY, longitude=where[1], latitude=where[0], radius=km, unit="km")
    return {member.decode() for member in found}


def insert(sessions, fablab_id: str, where) -> None:
    """A directory row written straight to the database: the index does not know of it."""
    body = lab_body(name=fablab_id, where=where)
    with write_session(sessions) as session:
        session.add(
            Fablab(
                id=fablab_id,
                name=fablab_id,
                lat=where[0],
                lon=where[1],
                legal_form="nonprofit",
                machines=body["machines"],
                contact={},
            )
        )


def test_ensure_rebuilds_a_wiped_index_from_the_database(redis_client, client, alice, sessions):
    rennes = register(client, alice, name="Rennes", where=RENNES)["id"]
    brest = register(client, alice, name="Brest", where=BREST)["id"]
    assert around(redis_client, RENNES, 1) == {rennes}
    redis_client.flushdb()
    assert around(redis_client, RENNES, 1) == set()
    assert ensure_geo_index(redis_client, sessions) is True
    assert around(redis_client, RENNES, 1) == {rennes}
    assert around(redis_client, BREST, 300) == {rennes, brest}
    # Present: left alone, even when it lags behind the database.
    insert(sessions, "paris", PARIS)
    assert ensure_geo_index(redis_client, sessions) is False
    assert around(redis_client, PARIS, 1) == set()
    # A full rebuild brings it in step, and drops what the database does not hold.
    redis_client.geoadd(geo.KEY, [0.0, 0.0, "stray"])
    assert sync_geo_index(redis_client, sessions) == 3
    assert around(redis_client, PARIS, 1) == {"paris"}
    assert around(redis_client, (0.0, 0.0), 1) == set()


def test_a_registration_on_a_wiped_redis_brings_back_the_whole_index(
    redis_client, client, alice, sessions
):
    first = register(client, alice, name="Rennes", where=RENNES)["id"]
    insert(sessions, "paris", PARIS)
    redis_client.flushdb()
    # A lone GEOADD would make an index of one fablab that looks whole.
    brest = register(client, alice, name="Brest", where=BREST)["id"]
    assert redis_client.zcard(geo.KEY) == 3
    assert around(redis_client, RENNES, 1) == {first}
    assert around(redis_client, PARIS, 1) == {"paris"}
    assert around(redis_client, BREST, 1) == {brest}
    # While the index exists, one fablab is added or moved without a rebuild.
    insert(sessions, "lannion", LANNION)
    index_fablab(redis_client, sessions, "rennes", *BREST)
    assert around(redis_client, BREST, 1) == {brest, "rennes"}
    assert around(redis_client, LANNION, 1) == set()  # not rebuilt: only the add happened


def test_registration_and_changes_do_not_fail_when_redis_is_away(
    settings, alice, sessions, redis_client
):
    away = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(away)) as client:
        lab = register(client, alice, name="Rennes", where=RENNES)
        url = f"{API}/fablabs/{lab['id']}"
        moved = client.patch(
            url, json={"location": {"lat": BREST[0], "lon": BREST[1]}}, headers=alice.headers
        )
        assert moved.status_code == 200, moved.text
        assert client.get(url).json()["location"] == {"lat": BREST[0], "lon": BREST[1]}
    # Redis back: the index is rebuilt from the database, with the fablab where it is now.
    assert ensure_geo_index(redis_client, sessions) is True
    assert around(redis_client, BREST, 1) == {lab["id"]}


def test_the_app_rebuilds_the_index_when_it_starts(settings, redis_client, sessions):
    insert(sessions, "rennes", RENNES)
    insert(sessions, "brest", BREST)
    redis_client.geoadd(geo.KEY, [0.0, 0.0, "gone"])
    with TestClient(create_app(settings)):
        assert redis_client.zcard(geo.KEY) == 2
        assert around(redis_client, RENNES, 1) == {"rennes"}


def test_the_french_fablabs_are_seeded_once_and_work_like_registered_ones(
    redis_client, client, sessions, settings
):
    listings = load_listings(FABLABS_FR)
    tokens = seed(sessions, listings, redis=redis_client)
    assert len(tokens) == len(listings) == 129
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", fablab_id) for fablab_id in tokens)
    assert redis_client.zcard(geo.KEY) == 129
    # Idempotent by id: nothing added the second time, nothing changed.
    with write_session(sessions) as session:
        assert seed_fablabs(session, listings) == {}
        assert session.scalar(select(func.count()).select_from(Fablab)) == 129
        rows = session.scalars(select(Fablab)).all()
    for row in rows:
        assert all(m["process"] in PROCESSES for m in row.machines), row.machines
        assert row.legal_form in ("individual", "nonprofit", "cooperative", "commercial")
    assert sum(1 for row in rows if row.machines) >= 120
    assert any(row.price for row in rows) and any(row.price is None for row in rows)

    # Through the API: listed near Lannion, and its agent enrols with the seeded token.
    near = client.get(
        f"{API}/fablabs", params={"near": f"{LANNION[0]},{LANNION[1]}", "radius_km": 5}
    )
    assert [lab["id"] for lab in near.json()["items"]] == ["fablablannion"]
    lannion = near.json()["items"][0]
    assert lannion["name"] == "Fablab Lannion - KerNEL"
    assert lannion["contact"] == {
        "url": "https://www.fablabs.io/labs/fablablannion",
        "address": "Lannion",
    }
    assert {m["process"] for m in lannion["machines"]} == {"fdm", "cnc"}  # and a PCB mill, left out
    enrolled = enrol(client, tokens["fablablannion"])
    assert enrolled.status_code == 200 and enrolled.json()["fablab_id"] == "fablablannion"
    assert client.get(f"{API}/fablabs/fablablannion").json()["online"] is True
    # Upper-case slugs of fablabs.io become lower-case ids.
    assert "millaulab" in tokens

    # Placement reads them as records, the enrolled one online.
    with sessions() as session:
        records = load_records(session, tokens, online_s=settings.agent_online_s)
    assert len(records) == 129
    assert records["fablablannion"].online is True
    assert sum(record.online for record in records.values()) == 1
