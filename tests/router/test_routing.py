"""The placement job: splits, unplaceable and failed orders with their reasons, waiting for a
geometry report, and a job run twice or late doing nothing."""

from __future__ import annotations

import json
import time

import pytest
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from dgml import outbox
from dgml.worker import enqueue_due
from router.models import Offer, OfferState, OrderLine
from router.routing import place_line
from tests.registry.calls import created, push
from tests.router.test_orders_support import (
    PLA_200,
    TEAPOT,
    hub_fixture,  # noqa: F401  (the hub fixture)
    north,
)


def _lines(hub, order_id: int) -> list[OrderLine]:
    with hub.sessions() as session:
        return list(
            session.scalars(
                select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.number)
            )
        )


def _open_offers(hub) -> dict[int, tuple[str, int]]:
    with hub.sessions() as session:
        rows = session.scalars(select(Offer).where(Offer.state == OfferState.OPEN)).all()
        return {offer.line_id: (offer.fablab_id, offer.quantity) for offer in rows}


def test_a_quantity_over_one_fablabs_capacity_is_split_across_nearby_ones(hub):
    hub.add_lab("one", north(2))  # 1 machine: 10 parts
    hub.add_lab("two", north(4), [{**PLA_200, "count": 2}])  # 20 parts
    hub.add_lab("three", north(9))  # 10 parts
    hub.design()
    hub.work()
    posted = hub.ordered(quantity=45)
    hub.work()

    order = hub.get(posted["id"])
    assert order["state"] == "offered"
    got = [
        (li["number"], li["quantity"], li["state"], (li["fablab"] or {}).get("id"))
        for li in order["lines"]
    ]
    assert got == [
        (1, 10, "offered", "one"),
        (2, 20, "offered", "two"),
        (3, 10, "offered", "three"),
        (4, 5, "unplaceable", None),
    ]
    assert "room for 5 more" in order["lines"][3]["reason"]
    lines = _lines(hub, posted["id"])
    assert _open_offers(hub) == {
        lines[0].id: ("one", 10),
        lines[1].id: ("two", 20),
        lines[2].id: ("three", 10),
    }
    split = next(e for e in order["events"] if e["kind"] == "split")
    assert split["data"]["unassigned"] == 5
    assert [part["quantity"] for part in split["data"]["into"]] == [10, 20, 10]
    offered = [e for e in order["events"] if e["kind"] == "offered"]
    assert [(e["line"], e["fablab_id"]) for e in offered] == [(1, "one"), (2, "two"), (3, "three")]
    assert order["decision"]["unassigned"] == 5
    # Each line knows its own distance and km avoided.
    assert lines[0].distance_km < lines[1].distance_km < lines[2].distance_km
    assert lines[0].km_avoided > lines[2].km_avoided


def test_no_fablab_with_the_process_makes_the_order_unplaceable(hub):
    hub.add_lab("printer", north(3))
    hub.design()
    hub.work()
    posted = hub.ordered(process="sls", material="pa12")
    hub.work()
    order = hub.get(posted["id"])
    assert order["state"] == "unplaceable"
    (line,) = order["lines"]
    assert line["state"] == "unplaceable"
    assert "has no sls machine" in line["reason"]
    assert order["reason"] == line["reason"]
    assert order["decision"]["winner"] is None
    assert order["decision"]["candidates"][0]["reason"] == "process"
    assert order["events"][-1]["kind"] == "unplaceable"
    assert order["events"][-1]["data"]["rejected"] == {"process": 1}
    assert _open_offers(hub) == {}


def test_a_non_commercial_design_ordered_commercially_is_refused_by_its_licence(hub):
    hub.add_lab("printer", north(3))
    hub.design(license="CC-BY-NC-4.0")
    hub.work()
    posted = hub.ordered(purpose="commercial")
    hub.work()
    order = hub.get(posted["id"])
    assert order["state"] == "unplaceable"
    assert order["decision"]["refused"] == "licence:non-commercial"
    assert order["decision"]["candidates"] == []
    assert "commercial" in order["lines"][0]["reason"]
    assert order["events"][-1]["data"]["refused"] == "licence:non-commercial"


def test_a_non_commercial_design_goes_to_a_nonprofit_fablab_for_a_personal_order(hub):
    hub.add_lab("company", north(2), legal_form="commercial")
    hub.add_lab("association", north(7), legal_form="nonprofit")
    hub.design(license="CC-BY-NC-4.0")
    hub.work()
    posted = hub.ordered(purpose="personal")
    hub.work()
    order = hub.get(posted["id"])
    assert order["lines"][0]["fablab"]["id"] == "association"
    reasons = {c["fablab_id"]: c["reason"] for c in order["decision"]["candidates"]}
    assert reasons["company"] == "licence:non-commercial"


def test_a_report_that_fails_after_the_order_was_taken_fails_it_with_the_reason(hub):
    hub.add_lab("printer", north(3))
    hub.design("kettle", [("teapot.stl", TEAPOT)])
    posted = hub.ordered("alice/kettle")  # taken while its report is pending
    hub.work()  # the check fails, then the placement reads it
    order = hub.get(posted["id"])
    assert order["state"] == "failed"
    reason = order["lines"][0]["reason"]
    assert "teapot.stl" in reason
    assert "OPEN_EDGES" in reason
    assert order["events"][-1]["kind"] == "failed"
    assert _open_offers(hub) == {}


def test_a_pending_report_makes_the_line_wait_then_it_is_placed(hub):
    hub.add_lab("printer", north(3))
    hub.design()
    posted = hub.ordered()
    hub.work("route")  # placement first: the report is not there yet
    (line,) = _lines(hub, posted["id"])
    assert line.state == "routing"
    order = hub.get(posted["id"])
    assert order["events"][-1]["kind"] == "waiting"
    assert "cube.stl" in order["events"][-1]["data"]["reason"]
    scheduled = ScheduledJobRegistry(queue=outbox.queue(hub.redis, "route")).get_job_ids()
    assert scheduled == [f"place-{line.id}-1-w1"]

    hub.work("validate")
    hub.run_due()
    hub.work("route")
    order = hub.get(posted["id"])
    assert order["state"] == "offered"
    assert order["lines"][0]["fablab"]["id"] == "printer"
    kinds = [e["kind"] for e in order["events"]]
    assert kinds == ["accepted", "routing", "waiting", "offered"]


def test_a_line_that_waits_too_long_for_its_report_fails(hub):
    hub.add_lab("printer", north(3))
    hub.design()
    posted = hub.ordered()
    hub.context.settings.route_report_wait_s = 0.001
    hub.work("route")
    order = hub.get(posted["id"])
    assert order["state"] == "failed"
    assert "gave up" in order["lines"][0]["reason"]


def test_a_placement_run_twice_or_late_does_nothing(hub):
    hub.add_lab("printer", north(3))
    hub.design()
    hub.work()
    posted = hub.ordered()
    hub.work()
    (line,) = _lines(hub, posted["id"])
    events = len(hub.get(posted["id"])["events"])
    assert place_line(line.id, line.attempt) == "stale"  # already offered
    assert place_line(line.id, line.attempt - 1) == "stale"
    assert place_line(line.id + 1000, 1) == "stale"  # no such line
    assert len(_open_offers(hub)) == 1
    assert len(hub.get(posted["id"])["events"]) == events


def test_the_fablab_offered_to_is_woken_on_its_channel(hub):
    hub.add_lab("printer", north(3))
    hub.design()
    hub.work()
    listener = hub.redis.pubsub()
    listener.subscribe("dgml:offers:printer")
    assert listener.get_message(timeout=1)["type"] == "subscribe"
    hub.ordered()
    hub.work()
    message = listener.get_message(timeout=5)
    listener.close()
    assert message is not None
    assert message["channel"] == b"dgml:offers:printer"


BOX = b"""import cadquery as cq

width = 20.0
box = cq.Workplane("XY").box(width, 15.0, 10.0)
show_object(box, name="box")
"""
BOX_MANIFEST = {
    "name": "box",
    "process": "fdm",
    "parameters": [{"name": "width", "type": "float", "min": 10, "max": 120, "unit": "mm"}],
}


@pytest.mark.slow
def test_a_parametric_order_is_sized_by_the_build_made_with_its_parameters(hub):
    hub.add_lab("small", north(2), [{**PLA_200, "build_volume_mm": [60, 60, 60]}])
    hub.add_lab("large", north(20), [{**PLA_200, "build_volume_mm": [300, 300, 300]}])
    created(hub.client, hub.alice, "box", license="CC-BY-SA-4.0")
    response = push(
        hub.client,
        hub.alice,
        "alice/box",
        [("design.py", BOX)],
        manifest=json.dumps(BOX_MANIFEST),
    )
    assert response.status_code == 201, response.text
    default = hub.ordered("alice/box")
    wide = hub.ordered("alice/box", params={"width": 100})
    assert wide["params"] == {"width": 100}
    hub.work()  # builds, then their checks, then placements (which may wait)
    for _ in range(20):
        states = {hub.get(o["id"])["state"] for o in (default, wide)}
        if states == {"offered"}:
            break
        time.sleep(0.5)
        enqueue_due(hub.redis)
        hub.work()
    assert hub.get(default["id"])["lines"][0]["fablab"]["id"] == "small"
    wide_order = hub.get(wide["id"])
    assert wide_order["lines"][0]["fablab"]["id"] == "large"
    reasons = {c["fablab_id"]: c["reason"] for c in wide_order["decision"]["candidates"]}
    assert reasons["small"] == "build_volume"
    bad = hub.order("alice/box", params={"width": 500})
    assert bad.status_code == 422
    assert bad.json()["field"] == "params.width"
