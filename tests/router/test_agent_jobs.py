"""Reports on a job: heartbeats keep the lease, progress is stored and logged sparingly, a
result is final, and failures route the line elsewhere until it is given up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest

from router.models import Job, Order, OrderEvent
from tests.router.agent_world import LABS, Placed, World, make_world


@pytest.fixture
def world(client, settings, alice, bob, redis_client) -> Iterator[World]:
    yield from make_world(client, settings, alice, bob)


@pytest.fixture
def job(world) -> dict:
    placed = world.offer("lab-a")
    return world.accepted(placed)


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_a_heartbeat_extends_the_lease(world, job):
    before = world.row(Job, job["id"]).lease_expires_at

    response = world.post("lab-a", f"/jobs/{job['id']}/heartbeat")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["state"]) == (job["id"], "in_progress")
    assert when(body["lease_expires_at"]) > before
    assert world.row(Job, job["id"]).lease_expires_at == when(body["lease_expires_at"])


def test_progress_is_stored_and_logged_once_per_ten_points_or_new_message(world, job):
    reports = [
        (3, "slicing"),
        (4, "slicing"),  # same band, same message: not logged
        (12, "printing"),
        (15, "printing"),  # not logged
        (15, "printing"),  # a retry: not logged
        (27.5, "printing"),
        (28, "printing"),  # not logged
    ]
    leases = []
    for percent, message in reports:
        response = world.post(
            "lab-a", f"/jobs/{job['id']}/progress", {"percent": percent, "message": message}
        )
        assert response.status_code == 200, response.text
        leases.append(when(response.json()["lease_expires_at"]))

    stored = world.row(Job, job["id"])
    assert (stored.percent, stored.message) == (28, "printing")
    assert leases == sorted(leases) and leases[-1] > when(job["lease_expires_at"])
    logged = [e.data for e in world.events(job["order_id"]) if e.kind == "progress"]
    assert [(d["percent"], d["message"]) for d in logged] == [
        (3, "slicing"),
        (12, "printing"),
        (27.5, "printing"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"percent": 150},
        {"percent": -1},
        {"percent": "NaN"},
        {"percent": "Infinity"},
        {"percent": 50, "message": "m" * 501},
        {"percent": 50, "message": "bad\x00byte"},
        {"message": "no percent"},
    ],
)
def test_bad_progress_is_refused(world, job, body):
    response = world.post("lab-a", f"/jobs/{job['id']}/progress", body)

    assert response.status_code == 422, response.text
    assert world.row(Job, job["id"]).percent == 0


def test_a_nan_in_raw_json_is_refused(world, job):
    response = world.client.post(
        f"/api/v1/agent/jobs/{job['id']}/progress",
        content=b'{"percent": NaN}',
        headers={**world.headers("lab-a"), "content-type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["field"] == "percent"


def test_complete_finishes_the_job_and_a_replay_changes_nothing(world, job):
    result = {"print_minutes": 95, "grams": 41.5, "photo": "https://lab-a.example/p/1.jpg"}

    first = world.post("lab-a", f"/jobs/{job['id']}/complete", {"result": result})
    replay = world.post("lab-a", f"/jobs/{job['id']}/complete", {"result": result})
    other = world.post("lab-a", f"/jobs/{job['id']}/complete", {"result": {"grams": 1}})

    assert first.status_code == 200, first.text
    assert (first.json()["state"], first.json()["result"]) == ("completed", result)
    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert other.status_code == 409
    assert world.kinds(job["order_id"]) == ["accepted", "completed"]
    assert world.row(Order, job["order_id"]).state == "completed"
    assert world.row(Job, job["id"]).result == result
    # A completed job answers no more heartbeats or failures, and is no longer listed.
    assert world.post("lab-a", f"/jobs/{job['id']}/heartbeat").status_code == 409
    assert world.post("lab-a", f"/jobs/{job['id']}/fail", {"reason": "late"}).status_code == 409
    assert world.client.get("/api/v1/agent/jobs", headers=world.headers("lab-a")).json() == {
        "jobs": []
    }


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({"result": {"log": "x" * 20_000}}),
        '{"result": {"grams": NaN}}',
        '{"result": [1, 2]}',
        '{"result": {"a": 1}, "extra": true}',
    ],
)
def test_a_bad_result_is_refused(world, job, raw):
    response = world.client.post(
        f"/api/v1/agent/jobs/{job['id']}/complete",
        content=raw.encode(),
        headers={**world.headers("lab-a"), "content-type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert world.row(Job, job["id"]).state == "in_progress"


def test_a_failure_routes_the_line_elsewhere_and_a_replay_changes_nothing(world, job):
    first = world.post("lab-a", f"/jobs/{job['id']}/fail", {"reason": "nozzle clogged"})
    replay = world.post("lab-a", f"/jobs/{job['id']}/fail", {"reason": "nozzle clogged"})

    assert first.status_code == 200, first.text
    assert (first.json()["state"], first.json()["reason"]) == ("failed", "nozzle clogged")
    assert first.json()["delivery"] is None  # the parts go elsewhere now
    assert replay.status_code == 200
    assert replay.json() == first.json()
    line = world.line(world.row(Job, job["id"]).line_id)
    assert (line.state, line.failures, line.excluded) == ("routing", 1, ["lab-a"])
    assert len(world.placements(line.id)) == 1
    assert world.kinds(job["order_id"]) == ["accepted", "failed", "routing"]
    [failed] = [e for e in world.events(job["order_id"]) if e.kind == "failed"]
    assert failed.alert
    assert world.post("lab-a", f"/jobs/{job['id']}/complete", {"result": {}}).status_code == 409


def test_a_line_that_fails_at_max_failures_fablabs_is_unplaceable(world, settings):
    assert settings.max_failures == 3
    placed = world.offer("lab-a")
    offer_id = placed.offer_id
    for attempt, lab in enumerate(LABS[:3], start=1):
        job = world.accepted(Placed(placed.order_id, placed.line_id, offer_id), lab)
        failed = world.post(lab, f"/jobs/{job['id']}/fail", {"reason": f"warped at {lab}"})
        assert failed.status_code == 200, failed.text
        line = world.line(placed.line_id)
        assert line.failures == attempt
        if attempt < 3:
            assert line.state == "routing"
            offer_id = world.reoffer(placed.line_id, LABS[attempt])

    line = world.line(placed.line_id)
    assert line.state == "unplaceable"
    assert line.excluded == ["lab-a", "lab-b"]
    for lab in LABS[:3]:
        assert f"{lab}: warped at {lab}" in line.reason
    assert world.row(Order, placed.order_id).state == "unplaceable"
    assert len(world.placements(placed.line_id)) == 2  # no third placement
    [given_up] = [e for e in world.events(placed.order_id) if e.kind == "unplaceable"]
    assert given_up.alert
    assert [f["fablab"] for f in given_up.data["failures"]] == ["lab-a", "lab-b", "lab-c"]


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "r" * 1001}])
def test_a_bad_failure_report_is_refused(world, job, body):
    response = world.post("lab-a", f"/jobs/{job['id']}/fail", body)

    assert response.status_code == 422
    assert world.row(Job, job["id"]).state == "in_progress"


def test_the_log_never_carries_delivery_details(world, job):
    world.post("lab-a", f"/jobs/{job['id']}/progress", {"percent": 50, "message": "half"})
    world.post("lab-a", f"/jobs/{job['id']}/complete", {"result": {"ok": True}})

    with world.sessions() as session:
        events = session.query(OrderEvent).filter_by(order_id=job["order_id"]).all()
        logged = json.dumps([e.data for e in events])
    assert "rue des Arts" not in logged
