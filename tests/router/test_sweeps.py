"""The scheduled sweeps: offers nobody accepted in time go elsewhere, leases nobody renewed make
their jobs disconnected (never offered again on their own), and two workers sweeping at once
change each row once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import update

from dgml.db import write_session
from dgml.worker import make_context, set_context
from router.models import Job, Offer, Order
from router.sweeps import expire_leases, expire_offers
from tests.router.agent_world import World, later, make_world


@pytest.fixture
def world(client, settings, alice, bob, redis_client) -> Iterator[World]:
    yield from make_world(client, settings, alice, bob)


def test_an_expired_offer_is_routed_again_without_its_fablab(world):
    due = world.offer("lab-a", expires_in=60)
    not_yet = world.offer("lab-b", expires_in=3600)

    assert expire_offers(world.sessions, now=later(61)) == 1
    assert expire_offers(world.sessions, now=later(61)) == 0

    assert world.row(Offer, due.offer_id).state == "expired"
    line = world.line(due.line_id)
    assert (line.state, line.excluded, line.attempt) == ("routing", ["lab-a"], 2)
    [message] = world.placements(due.line_id)
    assert message.payload == {"line_id": due.line_id, "attempt": 2}
    assert world.kinds(due.order_id) == ["offer_expired", "routing"]
    assert world.row(Offer, not_yet.offer_id).state == "open"
    assert world.line(not_yet.line_id).state == "offered"
    # The agent that comes too late is told so.
    late = world.post("lab-a", f"/offers/{due.offer_id}/accept")
    assert late.status_code == 409
    assert late.json()["state"] == "expired"


def test_a_lost_lease_makes_the_job_disconnected_and_it_may_still_complete(world, settings):
    job = world.accepted(world.offer("lab-a"))

    assert expire_leases(world.sessions, now=later(settings.lease_ttl_s - 5)) == 0
    assert expire_leases(world.sessions, now=later(settings.lease_ttl_s + 1)) == 1

    assert world.row(Job, job["id"]).state == "disconnected"
    line = world.line(world.row(Job, job["id"]).line_id)
    assert line.state == "disconnected"
    assert world.row(Order, job["order_id"]).state == "disconnected"
    assert world.placements(line.id) == []  # not routed again: the parts may be on the machine
    [lost] = [e for e in world.events(job["order_id"]) if e.kind == "disconnected"]
    assert lost.alert
    heartbeat = world.post("lab-a", f"/jobs/{job['id']}/heartbeat")
    assert heartbeat.status_code == 409
    assert heartbeat.json()["state"] == "disconnected"
    assert "operator" in heartbeat.json()["detail"]
    progress = world.post("lab-a", f"/jobs/{job['id']}/progress", {"percent": 60})
    assert progress.status_code == 409
    listed = world.client.get("/api/v1/agent/jobs", headers=world.headers("lab-a")).json()
    assert [(j["id"], j["state"]) for j in listed["jobs"]] == [(job["id"], "disconnected")]

    done = world.post("lab-a", f"/jobs/{job['id']}/complete", {"result": {"grams": 12}})

    assert done.status_code == 200, done.text
    assert done.json()["state"] == "completed"
    assert world.line(line.id).state == "completed"
    assert world.row(Order, job["order_id"]).state == "completed"
    [finished] = [e for e in world.events(job["order_id"]) if e.kind == "completed"]
    assert finished.data["after_lost_lease"] is True


def test_heartbeats_keep_the_sweep_away(world, settings):
    job = world.accepted(world.offer("lab-a"))
    with write_session(world.sessions) as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(lease_expires_at=later(-1)))

    assert world.post("lab-a", f"/jobs/{job['id']}/heartbeat").status_code == 200
    assert expire_leases(world.sessions) == 0
    assert world.row(Job, job["id"]).state == "in_progress"


def test_two_workers_sweeping_at_once_change_each_row_once(world, settings):
    offers = [world.offer("lab-a", expires_in=30) for _ in range(6)]
    jobs = [world.accepted(world.offer("lab-b"), "lab-b") for _ in range(4)]
    now = later(settings.lease_ttl_s + 60)
    barrier = threading.Barrier(2)
    counts: list[tuple[int, int]] = []
    lock = threading.Lock()

    def sweep() -> None:
        barrier.wait()
        expired = expire_offers(world.sessions, now=now)
        lost = expire_leases(world.sessions, now=now)
        with lock:
            counts.append((expired, lost))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert len(counts) == 2
    assert sum(c[0] for c in counts) == 6
    assert sum(c[1] for c in counts) == 4
    for placed in offers:
        assert len(world.placements(placed.line_id)) == 1
        assert world.line(placed.line_id).attempt == 2
        assert world.kinds(placed.order_id) == ["offer_expired", "routing"]
    for job in jobs:
        assert world.kinds(job["order_id"]).count("disconnected") == 1


def test_run_sweeps_is_an_rq_job_without_arguments(world, settings, redis_client):
    expired = world.offer("lab-a", expires_in=-1)
    job = world.accepted(world.offer("lab-b"), "lab-b")
    with write_session(world.sessions) as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(lease_expires_at=later(-1)))
    context = make_context(settings)
    set_context(context)
    try:
        queue = Queue("sweeps", connection=redis_client, serializer=JSONSerializer)
        queued = queue.enqueue("router.sweeps.run_sweeps")
        SimpleWorker([queue], connection=redis_client, serializer=JSONSerializer).work(
            burst=True, logging_level="WARNING"
        )
    finally:
        set_context(None)
        context.engine.dispose()

    assert queued.get_status(refresh=True) == "finished"
    assert queued.return_value() == {"offers_expired": 1, "leases_lost": 1}
    [message] = world.placements(expired.line_id)
    assert message.sent_at is not None  # handed to the route queue by the sweep itself
    assert world.row(Job, job["id"]).state == "disconnected"
