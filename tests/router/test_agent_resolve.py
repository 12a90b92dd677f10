"""Operators resolve disconnected jobs: the parts were made, make them elsewhere, or cancel.
Only the fablab's operator or an admin may, and only a disconnected job is resolved."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from router.models import Job, Order
from router.sweeps import expire_leases
from tests.router.agent_world import World, later, make_world


@pytest.fixture
def world(client, settings, alice, bob, redis_client) -> Iterator[World]:
    yield from make_world(client, settings, alice, bob)


@pytest.fixture
def lost(world, settings) -> dict:
    """A job at lab-a whose lease ran out."""
    job = world.accepted(world.offer("lab-a"))
    assert expire_leases(world.sessions, now=later(settings.lease_ttl_s + 1)) == 1
    return job


def resolve(world: World, job_id: int, headers: dict[str, str], **body):
    return world.client.post(f"/api/v1/jobs/{job_id}/resolve", json=body, headers=headers)


def test_the_operator_says_the_parts_were_made(world, lost):
    response = resolve(
        world, lost["id"], world.operator.headers, action="completed", note="all 2 on the shelf"
    )

    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["line_state"]) == ("completed", "completed")
    assert world.row(Job, lost["id"]).state == "completed"
    assert world.row(Order, lost["order_id"]).state == "completed"
    [event] = [e for e in world.events(lost["order_id"]) if e.kind == "resolved"]
    assert event.alert
    assert event.data == {
        "job": lost["id"],
        "action": "completed",
        "note": "all 2 on the shelf",
        "by": world.operator.name,
    }


def test_the_operator_has_the_line_made_elsewhere(world, lost):
    response = resolve(world, lost["id"], world.operator.headers, action="reroute")

    assert response.status_code == 200, response.text
    job = world.row(Job, lost["id"])
    assert job.state == "failed"
    line = world.line(job.line_id)
    assert (line.state, line.excluded, line.failures) == ("routing", ["lab-a"], 0)
    [message] = world.placements(line.id)
    assert message.sent_at is not None
    # The agent that comes back learns that the job is over.
    late = world.post("lab-a", f"/jobs/{lost['id']}/complete", {"result": {}})
    assert late.status_code == 409


def test_the_operator_cancels_the_line(world, lost):
    response = resolve(world, lost["id"], world.operator.headers, action="cancel", note="broken")

    assert response.status_code == 200, response.text
    line = world.line(world.row(Job, lost["id"]).line_id)
    assert line.state == "cancelled"
    assert "broken" in line.reason
    assert world.row(Order, lost["order_id"]).state == "cancelled"
    assert world.placements(line.id) == []


def test_an_admin_may_resolve_too(world, lost, make_account):
    admin = make_account("hubadmin", admin=True)

    assert resolve(world, lost["id"], admin.headers, action="completed").status_code == 200


def test_who_may_resolve_and_what(world, lost):
    maker = resolve(world, lost["id"], world.maker.headers, action="completed")
    agent = resolve(world, lost["id"], world.headers("lab-a"), action="completed")
    nobody = world.client.post(f"/api/v1/jobs/{lost['id']}/resolve", json={"action": "cancel"})
    unknown = resolve(world, 999999, world.operator.headers, action="completed")
    bad_action = resolve(world, lost["id"], world.operator.headers, action="print again")

    assert maker.status_code == 403
    assert agent.status_code == 401
    assert nobody.status_code == 401
    assert unknown.status_code == 404
    assert bad_action.status_code == 422
    assert world.row(Job, lost["id"]).state == "disconnected"
    assert resolve(world, lost["id"], world.operator.headers, action="cancel").status_code == 200
    again = resolve(world, lost["id"], world.operator.headers, action="cancel")
    assert again.status_code == 409


def test_a_running_job_is_not_resolved(world):
    job = world.accepted(world.offer("lab-a"))

    response = resolve(world, job["id"], world.operator.headers, action="completed")

    assert response.status_code == 409
    assert response.json()["state"] == "in_progress"
