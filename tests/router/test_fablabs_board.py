"""The public board of a fablab: open offers and jobs in progress near it, newest first, and
nothing about who ordered or where the part goes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dgml.db import make_engine, make_sessionmaker, utcnow, write_session
from registry.models import Design, User, Version
from router import geo
from router.models import Job, JobState, Offer, OfferState, Order, OrderLine, OrderState
from tests.router.test_fablabs_api import API, BREST, PARIS, RENNES, lab_body

NEAR_RENNES = (48.13, -1.63)  # about 4 km from the centre, rounded as routing keeps it
DELIVERY = {"name": "Camille Martin", "street": "12 rue de la Soif", "phone": "+33 6 00 00 00 00"}
_keys = itertools.count()


@pytest.fixture
def sessions(settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def design_version(session: Session, owner: str, name: str, number: int) -> Version:
    user = session.scalar(select(User).where(User.name == owner))
    design = Design(
        owner_id=user.id,
        name=name,
        name_folded=name.casefold(),
        title=name,
        license="CC-BY-4.0",
        version_count=number,
    )
    session.add(design)
    session.flush()
    version = None
    for n in range(1, number + 1):
        version = Version(design_id=design.id, number=n, license="CC-BY-4.0", author_id=user.id)
        session.add(version)
    session.flush()
    return version


def order_line(
    session: Session, version: Version, maker: str, where, *, quantity=2, material="pla"
) -> OrderLine:
    owner = session.scalar(select(User).where(User.name == maker))
    order = Order(
        owner_id=owner.id,
        idempotency_key=f"key-{next(_keys)}",
        request_hash="0" * 64,
        design_id=version.design_id,
        version_id=version.id,
        process="fdm",
        material=material,
        quantity=quantity,
        lat=where[0],
        lon=where[1],
        purpose="personal",
        delivery=DELIVERY,
        state=OrderState.OFFERED,
    )
    session.add(order)
    session.flush()
    line = OrderLine(order_id=order.id, number=1, quantity=quantity, state=OrderState.OFFERED)
    session.add(line)
    session.flush()
    return line


def offer(
    session: Session, line: OrderLine, fablab: str, state: str, expires: datetime, at: datetime
) -> Offer:
    row = Offer(
        line_id=line.id,
        fablab_id=fablab,
        quantity=line.quantity,
        state=state,
        expires_at=expires,
        created_at=at,
    )
    session.add(row)
    session.flush()
    return row


def job(session: Session, line: OrderLine, fablab: str, state: str, at: datetime) -> Job:
    accepted = offer(session, line, fablab, OfferState.ACCEPTED, at + timedelta(minutes=5), at)
    row = Job(
        offer_id=accepted.id,
        line_id=line.id,
        fablab_id=fablab,
        state=state,
        lease_expires_at=at + timedelta(minutes=2),
        created_at=at,
    )
    session.add(row)
    session.flush()
    return row


@pytest.fixture
def labs(client, alice, bob) -> dict[str, str]:
    made = {}
    for account, name, where in ((alice, "Rennes", RENNES), (bob, "Brest", BREST)):
        response = client.post(
            f"{API}/fablabs", json=lab_body(name=name, where=where), headers=account.headers
        )
        assert response.status_code == 201, response.text
        made[name] = response.json()["id"]
    made["Paris"] = client.post(
        f"{API}/fablabs", json=lab_body(name="Paris", where=PARIS), headers=alice.headers
    ).json()["id"]
    return made


def test_the_board_shows_open_offers_and_running_jobs_near_the_fablab(
    client, labs, sessions, make_account
):
    make_account("maker")
    now = utcnow()
    with write_session(sessions) as session:
        bracket = design_version(session, "alice", "bracket", 3)
        hinge = design_version(session, "bob", "hinge", 1)
        lines = [order_line(session, bracket, "maker", NEAR_RENNES) for _ in range(6)]
        far = order_line(session, hinge, "maker", BREST)
        shown_offer = offer(
            session, lines[0], labs["Rennes"], OfferState.OPEN, now + timedelta(minutes=5), now
        )
        # Not on the board: expired, declined, accepted (its job is), or far away.
        offer(
            session,
            lines[1],
            labs["Rennes"],
            OfferState.OPEN,
            now - timedelta(seconds=1),
            now - timedelta(minutes=6),
        )
        offer(session, lines[2], labs["Brest"], OfferState.DECLINED, now, now)
        running = job(session, lines[3], labs["Paris"], JobState.IN_PROGRESS, now - timedelta(1))
        job(session, lines[4], labs["Rennes"], JobState.COMPLETED, now - timedelta(hours=2))
        newest = offer(
            session,
            lines[5],
            labs["Brest"],
            OfferState.OPEN,
            now + timedelta(minutes=5),
            now + timedelta(seconds=1),
        )
        offer(session, far, labs["Brest"], OfferState.OPEN, now + timedelta(minutes=5), now)
        ids = {
            "offer": shown_offer.id,
            "newest": newest.id,
            "job": running.id,
            "order": lines[0].order_id,
            "job_order": lines[3].order_id,
        }

    response = client.get(f"{API}/fablabs/{labs['Rennes']}/board")
    assert response.status_code == 200, response.text
    board = response.json()
    assert board["fablab_id"] == labs["Rennes"] and board["radius_km"] == 50
    items = board["items"]
    assert [(i["kind"], i["id"]) for i in items] == [
        ("offer", ids["newest"]),
        ("offer", ids["offer"]),
        ("job", ids["job"]),
    ]
    first = items[1]
    assert first["order_id"] == ids["order"] and first["line"] == 1
    assert first["design"] == {"owner": "alice", "name": "bracket", "version": 3}
    assert (first["process"], first["material"], first["quantity"]) == ("fdm", "pla", 2)
    assert first["state"] == "open"
    assert first["fablab"] == {"id": labs["Rennes"], "name": "Rennes"}
    assert first["distance_km"] == pytest.approx(geo.distance_km(*RENNES, *NEAR_RENNES), abs=1e-3)
    assert datetime.fromisoformat(first["expires_at"]) == now + timedelta(minutes=5)
    held = items[0]["fablab"]
    assert held == {"id": labs["Brest"], "name": "Brest"}  # whoever holds it
    running_item = items[2]
    assert running_item["state"] == "in_progress" and running_item["expires_at"] is None
    assert running_item["order_id"] == ids["job_order"]
    assert running_item["fablab"]["id"] == labs["Paris"]
    # Holoptism minus personal data: nothing of the delivery, nor who the maker is.
    for private in (*DELIVERY.values(), "maker", "delivery"):
        assert private not in response.text

    # From Brest the Rennes orders are 200 km away; its own order is on its board.
    brest = client.get(f"{API}/fablabs/{labs['Brest']}/board").json()["items"]
    assert [i["design"]["name"] for i in brest] == ["hinge"]
    wide = client.get(f"{API}/fablabs/{labs['Brest']}/board", params={"radius_km": 300}).json()
    assert len(wide["items"]) == 4
    assert wide["items"][0]["distance_km"] == pytest.approx(
        geo.distance_km(*BREST, *NEAR_RENNES), abs=1e-3
    )
    limited = client.get(f"{API}/fablabs/{labs['Rennes']}/board", params={"limit": 1}).json()
    assert [i["id"] for i in limited["items"]] == [ids["newest"]]


def test_an_empty_board_is_empty(client, labs):
    response = client.get(f"{API}/fablabs/{labs['Paris']}/board")
    assert response.status_code == 200 and response.json()["items"] == []


@pytest.mark.parametrize("radius", ["0", "-5", "nan", "inf", "100000", "far"])
def test_a_bad_board_radius_is_422(client, labs, radius):
    response = client.get(f"{API}/fablabs/{labs['Rennes']}/board", params={"radius_km": radius})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "radius_km"
