"""Orders over HTTP: placed at the nearest fablab that can make them, with the decision
explained; idempotent; dry runs; what the public sees and what only the maker sees; listing
and cancelling."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from dgml.db import utcnow, write_session
from dgml.outbox import OutboxMessage
from registry.models import Build
from router import geo
from router.models import Offer, OfferState, Order, OrderEvent, OrderLine
from tests.registry.calls import API
from tests.router.test_orders_support import (
    LYON,
    hub_fixture,  # noqa: F401  (the hub fixture)
    north,
    order_body,
)

LASER = {"process": "laser", "materials": ["plywood-3mm"], "build_volume_mm": [600, 400, 10]}
TINY = {"process": "fdm", "materials": ["pla"], "build_volume_mm": [10, 10, 10]}
PETG_ONLY = {"process": "fdm", "materials": ["petg"], "build_volume_mm": [200, 200, 200]}
ROUNDED = geo.round_location(*LYON)


def _neighbourhood(hub) -> None:
    """Four fablabs near the maker that cannot make the cube, then two that can."""
    hub.add_lab("laser-only", north(1), [LASER])
    hub.add_lab("offline", north(2), online=False)
    hub.add_lab("tiny", north(3), [TINY])
    hub.add_lab("petg-only", north(4), [PETG_ONLY])
    hub.add_lab("good", north(6))
    hub.add_lab("far", north(30))
    hub.design()
    hub.work()


def _offers(hub, order_id: int) -> list[Offer]:
    with hub.sessions() as session:
        return list(
            session.scalars(
                select(Offer)
                .join(OrderLine, OrderLine.id == Offer.line_id)
                .where(OrderLine.order_id == order_id)
                .order_by(Offer.id)
            )
        )


def test_an_order_goes_to_the_nearest_fablab_that_can_make_it(hub):
    _neighbourhood(hub)
    before = utcnow()
    posted = hub.ordered()
    assert posted["state"] == "routing"
    assert [(line["number"], line["quantity"], line["state"]) for line in posted["lines"]] == [
        (1, 2, "routing")
    ]
    hub.work()
    after = utcnow()

    order = hub.get(posted["id"])
    assert order["state"] == "offered"
    (line,) = order["lines"]
    assert line["fablab"] == {"id": "good", "name": "Lab good"}
    expected_km = geo.distance_km(*ROUNDED, *north(6))
    assert abs(line["distance_km"] - expected_km) < 0.001
    central_km = geo.distance_km(hub.settings.central_lat, hub.settings.central_lon, *ROUNDED)
    assert abs(line["km_avoided"] - (central_km - expected_km)) < 0.002

    decision = order["decision"]
    assert decision["winner"]["fablab_id"] == "good"
    assert abs(decision["km_avoided"] - line["km_avoided"]) < 0.002
    reasons = {c["fablab_id"]: c["reason"] for c in decision["candidates"]}
    assert reasons["laser-only"] == "process"
    assert reasons["offline"] == "offline"
    assert reasons["tiny"] == "build_volume"
    assert reasons["petg-only"] == "material"
    assert reasons["good"] is None
    details = {c["fablab_id"]: c["detail"] for c in decision["candidates"]}
    assert "fdm" in details["laser-only"]
    assert decision["rejected"] == {"process": 1, "offline": 1, "build_volume": 1, "material": 1}

    kinds = [e["kind"] for e in order["events"]]
    assert kinds == ["accepted", "routing", "offered"]
    offered = order["events"][-1]
    assert offered["fablab_id"] == "good"
    assert offered["line"] == 1
    assert abs(offered["data"]["distance_km"] - expected_km) < 0.001
    assert offered["data"]["expected_wait_h"] == 0
    assert offered["data"]["km_avoided"] == line["km_avoided"]

    (offer,) = _offers(hub, posted["id"])
    assert (offer.fablab_id, offer.quantity, offer.state) == ("good", 2, OfferState.OPEN)
    ttl = timedelta(seconds=hub.settings.offer_ttl_s)
    assert before + ttl <= offer.expires_at <= after + ttl
    assert line["offer_expires_at"] is not None


def test_the_same_idempotency_key_answers_the_same_order(hub):
    _neighbourhood(hub)
    first = hub.order(key="order-1")
    assert first.status_code == 201, first.text
    again = hub.order(key="order-1")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    hub.work()
    later = hub.order(key="order-1")
    assert later.status_code == 200
    assert later.json()["state"] == "offered"
    assert (hub.count(Order), hub.count(OrderLine), hub.count(Offer)) == (1, 1, 1)

    other = hub.order(key="order-1", quantity=3)
    assert other.status_code == 409, other.text
    assert other.json()["field"] == "Idempotency-Key"
    assert other.json()["order"] == first.json()["id"]
    # Keys belong to their maker: bob's "order-1" is another order.
    assert hub.order(key="order-1", account=hub.bob).status_code == 201
    assert hub.count(Order) == 2


def test_concurrent_posts_with_one_key_make_one_order(hub, live_server):
    _neighbourhood(hub)
    body = order_body()
    headers = {**hub.alice.headers, "Idempotency-Key": "same-" + uuid.uuid4().hex}
    statuses: list[int] = []
    ids: list[int] = []
    start = threading.Barrier(6)

    def post() -> None:
        start.wait()
        response = httpx.post(f"{live_server}{API}/orders", json=body, headers=headers, timeout=60)
        statuses.append(response.status_code)
        ids.append(response.json()["id"])

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 5 + [201]
    assert len(set(ids)) == 1
    assert (hub.count(Order), hub.count(OrderLine)) == (1, 1)


def test_a_dry_run_answers_the_decision_and_stores_nothing(hub):
    _neighbourhood(hub)
    models = (Order, OrderLine, OrderEvent, Offer, OutboxMessage, Build)
    before = [hub.count(model) for model in models]
    response = hub.client.post(
        f"{API}/orders?dry_run=true", json=order_body(), headers=hub.alice.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True
    assert body["state"] == "offered"
    assert body["decision"]["winner"]["fablab_id"] == "good"
    assert body["decision"]["lines"] == [
        {
            "fablab_id": "good",
            "name": "Lab good",
            "quantity": 2,
            "distance_km": body["decision"]["winner"]["distance_km"],
        }
    ]
    assert [hub.count(model) for model in models] == before
    assert hub.redis.llen("rq:queue:route") == 0


def test_delivery_details_are_shown_to_the_maker_alone(hub):
    _neighbourhood(hub)
    delivery = {"name": "Alice Martin", "address": "12 rue des Tanneurs", "phone": "+33 6 12"}
    posted = hub.ordered(delivery=delivery)
    hub.work()
    assert posted["delivery"] == delivery
    mine = hub.get(posted["id"], hub.alice)
    assert mine["mine"] is True
    assert mine["delivery"] == delivery
    for view in (hub.get(posted["id"]), hub.get(posted["id"], hub.bob)):
        assert view["mine"] is False
        assert view["delivery"] is None
        assert view["idempotency_key"] is None
        assert [e["kind"] for e in view["events"]] == ["accepted", "routing", "offered"]
        text = json.dumps(view)
        for private in ("Tanneurs", "Alice Martin", "+33 6 12", "alice"):
            assert private not in text.replace("alice/cube", "")
    with hub.sessions() as session:
        logged = session.scalars(select(OrderEvent.data)).all()
    assert "Tanneurs" not in json.dumps(logged)


def test_the_routing_location_is_rounded_to_about_a_kilometre(hub):
    _neighbourhood(hub)
    posted = hub.ordered(location={"lat": 45.764043, "lon": 4.835659})
    hub.work()
    assert posted["location"] == {"lat": 45.76, "lon": 4.84}
    stored = hub.stored_order(posted["id"])
    assert (stored.lat, stored.lon) == (45.76, 4.84)
    assert hub.get(posted["id"])["decision"]["location"] == [45.76, 4.84]
    moved = geo.distance_km(45.764043, 4.835659, stored.lat, stored.lon)
    assert 0 < moved < 1.0


def test_a_maker_lists_their_own_orders_page_by_page(hub):
    _neighbourhood(hub)
    ids = [hub.ordered(quantity=q)["id"] for q in (1, 2, 3)]
    hub.ordered(account=hub.bob)
    first = hub.client.get(f"{API}/orders?limit=2", headers=hub.alice.headers).json()
    assert [o["id"] for o in first["items"]] == [ids[2], ids[1]]
    assert first["items"][0]["design"] == "alice/cube"
    assert first["items"][0]["version"] == 1
    cursor = first["next_cursor"]
    rest = hub.client.get(f"{API}/orders?limit=2&cursor={cursor}", headers=hub.alice.headers)
    assert [o["id"] for o in rest.json()["items"]] == [ids[0]]
    assert rest.json()["next_cursor"] is None
    assert len(hub.client.get(f"{API}/orders", headers=hub.bob.headers).json()["items"]) == 1
    assert hub.client.get(f"{API}/orders").status_code == 401
    bad = hub.client.get(f"{API}/orders?cursor=nonsense", headers=hub.alice.headers)
    assert bad.status_code == 422
    assert bad.json()["field"] == "cursor"


def test_unknown_orders_are_404_and_bad_ids_422(hub):
    missing = hub.client.get(f"{API}/orders/4242")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert hub.client.get(f"{API}/orders/0").status_code == 422
    assert hub.client.get(f"{API}/orders/abc").status_code == 422
    assert (
        hub.client.post(f"{API}/orders/4242/cancel", headers=hub.alice.headers).status_code == 404
    )


def test_cancelling_withdraws_open_offers(hub):
    _neighbourhood(hub)
    posted = hub.ordered()
    hub.work()
    refused = hub.client.post(f"{API}/orders/{posted['id']}/cancel", headers=hub.bob.headers)
    assert refused.status_code == 403
    assert hub.client.post(f"{API}/orders/{posted['id']}/cancel").status_code == 401
    response = hub.client.post(f"{API}/orders/{posted['id']}/cancel", headers=hub.alice.headers)
    assert response.status_code == 200, response.text
    order = response.json()
    assert order["state"] == "cancelled"
    assert [line["state"] for line in order["lines"]] == ["cancelled"]
    assert [e["kind"] for e in order["events"]][-2:] == ["offer_withdrawn", "cancelled"]
    (offer,) = _offers(hub, posted["id"])
    assert offer.state == OfferState.WITHDRAWN
    assert offer.decided_at is not None
    again = hub.client.post(f"{API}/orders/{posted['id']}/cancel", headers=hub.alice.headers)
    assert again.status_code == 200
    assert again.json()["state"] == "cancelled"


def test_an_order_cancelled_before_placement_is_never_offered(hub):
    _neighbourhood(hub)
    posted = hub.ordered()
    response = hub.client.post(f"{API}/orders/{posted['id']}/cancel", headers=hub.alice.headers)
    assert response.json()["state"] == "cancelled"
    hub.work()  # the placement job finds the line cancelled and does nothing
    assert hub.get(posted["id"])["state"] == "cancelled"
    assert _offers(hub, posted["id"]) == []


def test_cancelling_leaves_lines_in_progress_to_their_fablab(hub):
    _neighbourhood(hub)
    hub.add_lab("second", north(8))
    posted = hub.ordered(quantity=15)  # 10 at "good", 5 at the next one
    hub.work()
    with write_session(hub.sessions) as session:
        session.execute(
            update(OrderLine)
            .where(OrderLine.order_id == posted["id"], OrderLine.number == 1)
            .values(state="in_progress")
        )
        session.execute(
            update(Offer)
            .where(Offer.line_id.in_(select(OrderLine.id).where(OrderLine.number == 1)))
            .values(state="accepted")
        )
    response = hub.client.post(f"{API}/orders/{posted['id']}/cancel", headers=hub.alice.headers)
    order = response.json()
    assert [(line["number"], line["state"]) for line in order["lines"]] == [
        (1, "in_progress"),
        (2, "cancelled"),
    ]
    assert order["state"] == "in_progress"
    left = [e for e in order["events"] if e["kind"] == "cancel_left_to_fablab"]
    assert [(e["line"], e["fablab_id"]) for e in left] == [(1, "good")]
    assert "left to finish" in left[0]["data"]["detail"]


def test_an_order_that_has_ended_cannot_be_cancelled(hub):
    hub.add_lab("laser-only", north(1), [LASER])
    hub.design()
    hub.work()
    posted = hub.ordered()
    hub.work()
    assert hub.get(posted["id"])["state"] == "unplaceable"
    response = hub.client.post(f"{API}/orders/{posted['id']}/cancel", headers=hub.alice.headers)
    assert response.status_code == 409
    assert "unplaceable" in response.json()["detail"]


def test_the_order_routes_are_in_the_openapi_document(hub):
    paths = hub.client.get(f"{API}/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/api/v1/orders"])
    assert "get" in paths["/api/v1/orders/{order_id}"]
    assert "post" in paths["/api/v1/orders/{order_id}/cancel"]
