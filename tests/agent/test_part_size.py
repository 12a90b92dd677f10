"""The part's size in offers and jobs (both databases): read from the geometry reports placement
sized the part by, and used by the agent to decline a part that fits none of its machines, after
which the order goes to the next fablab and is made there, and to fail at once a job taken up
from the hub that none of them can make."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from registry.models import Design, Version
from router.models import Fablab, Job, Offer, OrderLine
from tests.agent.conftest import config_text, running, wait_until
from tests.conftest import mesh
from tests.registry.calls import created, pushed
from workers.config import AgentConfig, parse_config
from workers.enrolment import enrol, load_credentials
from workers.journal import Journal

AGENT = "/api/v1/agent"
# plate_holes.STL (tests/data/SOURCES.md): a plate of 203.2 x 304.8 x 12.7 mm, which passes.
PLATE = (203.2, 304.8, 12.7)
BIG_BED = [350, 350, 350]


def settle(work: Callable[[], None], check: Callable[[], Any], what: str, timeout=120.0) -> Any:
    """Run the hub's queued jobs, as its workers would, until ``check`` answers something
    true; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        work()
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _design(hub, name: str, files: list[tuple[str, bytes]]) -> int:
    """A design of alice's with one version of these files; the version's id."""
    created(hub.http, hub.maker, name)
    version = pushed(hub.http, hub.maker, f"alice/{name}", files)
    with hub.sessions() as session:
        row = session.scalar(
            select(Version.id)
            .join(Design, Design.id == Version.design_id)
            .where(Design.name == name, Version.number == version["number"])
        )
        assert row is not None
        return row


def _agent_token(hub, lab: dict[str, Any]) -> dict[str, str]:
    answer = hub.http.post(f"{AGENT}/enroll", json={"enrolment_token": lab["enrolment_token"]})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['agent_token']}"}


def _claimed(hub, headers: dict[str, str]) -> dict[int, dict[str, Any]]:
    answer = hub.http.post(f"{AGENT}/claim", headers=headers)
    assert answer.status_code == 200, answer.text
    return {offer["id"]: offer for offer in answer.json()["offers"]}


def test_offers_and_jobs_carry_the_extents_of_the_geometry_reports(hub, run_jobs):
    lab = hub.register_fablab()
    headers = _agent_token(hub, lab)
    before = hub.offer(lab["id"])  # the cube's report is not made yet
    assert _claimed(hub, headers)[before.offer_id]["extents_mm"] is None

    pair = _design(
        hub, "pair", [("cube.stl", mesh("20mm-xyz-cube.stl")), ("pin.stl", mesh("round.stl"))]
    )
    run_jobs()  # the geometry checks, as the hub's workers make them
    cube = hub.offer(lab["id"])
    both = hub.offer(lab["id"], version_id=pair)
    offers = _claimed(hub, headers)
    # One file: its box as its report gives it, x, y, z.
    assert offers[cube.offer_id]["extents_mm"] == pytest.approx([20.0, 20.0, 20.0], abs=1e-3)
    assert offers[before.offer_id]["extents_mm"] == pytest.approx([20.0, 20.0, 20.0], abs=1e-3)
    # Two files: the box that holds each in turn, as placement sizes them (sorted sizes).
    assert offers[both.offer_id]["extents_mm"] == pytest.approx([20.0, 20.0, 60.96], abs=1e-3)

    accepted = hub.http.post(f"{AGENT}/offers/{both.offer_id}/accept", headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["extents_mm"] == pytest.approx([20.0, 20.0, 60.96], abs=1e-3)
    listed = hub.http.get(f"{AGENT}/jobs", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [j["extents_mm"] for j in listed.json()["jobs"]] == [
        pytest.approx([20.0, 20.0, 60.96], abs=1e-3)
    ]


def _lab_agent(
    hub, root: Path, name: str, lat: float, real_bed: str, **options: Any
) -> tuple[AgentConfig, str]:
    """A fablab whose directory entry says it has a 350 mm printer, and its agent, enrolled,
    whose config says what the lab really has (``real_bed``)."""
    machine = {"process": "fdm", "materials": ["pla", "petg"], "build_volume_mm": BIG_BED}
    lab = hub.register_fablab(name, location={"lat": lat, "lon": 2.35}, machines=[machine])
    folder = root / lab["id"]
    folder.mkdir()
    text = config_text(hub.base, folder / "state", volume=real_bed, **options)
    config = parse_config(text, base_dir=folder)
    enrol(config.agent.server, lab["enrolment_token"], config.agent.state_dir)
    return config, lab["id"]


def test_a_lab_whose_printer_is_too_small_declines_and_the_order_goes_elsewhere(
    hub, run_jobs, tmp_path, prusa_slicer
):
    plate = _design(hub, "plate", [("plate.stl", mesh("plate_holes.STL"))])
    run_jobs()  # its geometry report
    # The nearer lab's directory entry is out of date: its only printer is a 250 mm one.
    near, near_id = _lab_agent(hub, tmp_path, "Atelier Nord", 48.86, "[250, 210, 210]")
    far, far_id = _lab_agent(hub, tmp_path, "Atelier Sud", 48.80, "[350, 350, 350]")
    with running(near, near_id), running(far, far_id):
        settle(
            run_jobs,
            lambda: all(hub.get(Fablab, i).last_seen_at for i in (near_id, far_id)),
            "both agents to be online",
        )
        body = {
            "design": "alice/plate",
            "version": 1,
            "process": "fdm",
            "material": "pla",
            "quantity": 1,
            "location": {"lat": 48.87, "lon": 2.35},
            "purpose": "personal",
        }
        posted = hub.http.post(
            "/api/v1/orders",
            json=body,
            headers={**hub.maker.headers, "Idempotency-Key": f"plate-{plate}"},
        )
        assert posted.status_code == 201, posted.text
        order_id = posted.json()["id"]
        settle(
            run_jobs,
            lambda: hub.http.get(f"/api/v1/orders/{order_id}").json()["state"] == "completed",
            "the order to be made at the second lab",
        )

    events = hub.events(order_id)
    kinds = [(e.kind, e.fablab_id) for e in events if e.kind not in ("progress", "waiting")]
    assert kinds == [
        ("accepted", None),
        ("routing", None),
        ("offered", near_id),
        ("declined", near_id),
        ("routing", None),
        ("offered", far_id),
        ("accepted", far_id),
        ("completed", far_id),
    ], kinds
    declined = next(e for e in events if e.kind == "declined")
    assert declined.data["reason"] == "the part (203.2 x 304.8 x 12.7 mm) fits no fdm machine here"
    with hub.sessions() as session:
        offers = session.scalars(select(Offer).order_by(Offer.id)).all()
        assert [(o.fablab_id, o.state) for o in offers] == [
            (near_id, "declined"),
            (far_id, "accepted"),
        ]
        (line,) = session.scalars(select(OrderLine).where(OrderLine.order_id == order_id))
        assert line.excluded == [near_id]
        (job,) = session.scalars(select(Job))
        assert job.fablab_id == far_id and job.result["machine"] == "mk3"
    # The job the far lab made carries the size too, as its agent sees it.
    credentials = load_credentials(far.agent.state_dir)
    assert credentials is not None
    seen = hub.http.get(
        f"{AGENT}/jobs/{job.id}", headers={"Authorization": f"Bearer {credentials.agent_token}"}
    )
    assert seen.status_code == 200, seen.text
    assert seen.json()["extents_mm"] == pytest.approx(list(PLATE), abs=1e-3)


def test_a_job_taken_up_from_the_hub_that_fits_no_machine_is_failed_with_the_size(
    hub, enrolled, run_jobs, prusa_slicer
):
    plate = _design(hub, "plate", [("plate.stl", mesh("plate_holes.STL"))])
    run_jobs()
    config, lab = enrolled()  # one printer, 250 x 210 x 210 mm
    placed = hub.offer(lab, version_id=plate)
    credentials = load_credentials(config.agent.state_dir)
    assert credentials is not None
    headers = {"Authorization": f"Bearer {credentials.agent_token}"}
    taken = hub.http.post(f"{AGENT}/offers/{placed.offer_id}/accept", headers=headers)
    assert taken.status_code == 200, taken.text  # taken while the agent was not running
    with running(config, lab):
        wait_until(lambda: hub.job_state(placed) == "failed", what="the job to be failed")
    assert hub.job(placed).reason == (
        "this agent cannot make it: the part (203.2 x 304.8 x 12.7 mm) fits no fdm machine here"
    )
    with Journal(config.agent.state_dir) as journal:
        assert journal.jobs() == []
