"""Accepting and declining offers: one winner per offer, retries with the same key, another
fablab's offers and jobs out of reach, and a declined line routed again without its fablab."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from router.models import Job, Offer, Order
from tests.router.agent_world import AGENT, DELIVERY, World, make_world


@pytest.fixture
def world(client, settings, alice, bob, redis_client) -> Iterator[World]:
    yield from make_world(client, settings, alice, bob)


def test_accept_answers_the_job_with_delivery_details(world):
    placed = world.offer("lab-a", quantity=3)

    job = world.accepted(placed)

    assert job["offer_id"] == placed.offer_id
    assert (job["order_id"], job["line"], job["state"]) == (placed.order_id, 1, "in_progress")
    assert job["quantity"] == 3
    assert job["delivery"] == DELIVERY
    assert [f["path"] for f in job["files"]] == ["bracket.stl", "plate.stl"]
    lease = datetime.fromisoformat(job["lease_expires_at"])
    assert lease > datetime.fromisoformat(job["created_at"])
    assert world.line(placed.line_id).state == "in_progress"
    assert world.row(Order, placed.order_id).state == "in_progress"
    assert world.row(Offer, placed.offer_id).state == "accepted"
    assert world.kinds(placed.order_id) == ["accepted"]
    # The accepted job is what a restarted agent finds again.
    listed = world.client.get(f"{AGENT}/jobs", headers=world.headers("lab-a")).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    again = world.client.get(f"{AGENT}/jobs/{job['id']}", headers=world.headers("lab-a"))
    assert again.json()["delivery"] == DELIVERY
    # The offer is no longer open.
    assert world.post("lab-a", "/claim").status_code == 204


def test_a_retry_with_the_same_key_gets_the_same_job_and_others_a_409(world):
    placed = world.offer("lab-a")
    key = {"Idempotency-Key": "accept-7f3a"}

    first = world.post("lab-a", f"/offers/{placed.offer_id}/accept", headers=key)
    retry = world.post("lab-a", f"/offers/{placed.offer_id}/accept", headers=key)
    other_key = world.post(
        "lab-a", f"/offers/{placed.offer_id}/accept", headers={"Idempotency-Key": "other"}
    )
    no_key = world.post("lab-a", f"/offers/{placed.offer_id}/accept")

    assert first.status_code == 200, first.text
    assert retry.status_code == 200
    assert retry.json()["id"] == first.json()["id"]
    for refused in (other_key, no_key):
        assert refused.status_code == 409
        assert "already accepted" in refused.json()["detail"]
    assert len(world.jobs(placed.offer_id)) == 1
    assert world.kinds(placed.order_id) == ["accepted"]


@pytest.mark.parametrize("key", ["", "x" * 201, "clé".encode(), "a\tb"])
def test_a_bad_idempotency_key_is_refused(world, key):
    placed = world.offer("lab-a")

    response = world.post(
        "lab-a", f"/offers/{placed.offer_id}/accept", headers={"Idempotency-Key": key}
    )

    assert response.status_code == 422, response.text
    assert world.row(Offer, placed.offer_id).state == "open"


def test_two_agents_accepting_at_the_same_instant_one_wins(world, live_server):
    headers = world.headers("lab-a")
    # Seen once before, so that the race below is between the two accepts alone.
    httpx.post(f"{live_server}{AGENT}/claim", headers=headers)
    for _ in range(5):
        placed = world.offer("lab-a")
        barrier = threading.Barrier(2)
        answers: list[httpx.Response] = []
        lock = threading.Lock()

        def accept(placed=placed, barrier=barrier, answers=answers, lock=lock) -> None:
            with httpx.Client(timeout=60) as http:
                barrier.wait()
                response = http.post(
                    f"{live_server}{AGENT}/offers/{placed.offer_id}/accept", headers=headers
                )
            with lock:
                answers.append(response)

        threads = [threading.Thread(target=accept) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        assert len(world.jobs(placed.offer_id)) == 1
        assert world.kinds(placed.order_id) == ["accepted"]


def test_another_fablabs_offer_or_job_answers_404(world):
    mine = world.offer("lab-a")
    job = world.accepted(mine)
    open_offer = world.offer("lab-a")

    calls = [
        ("POST", f"/offers/{open_offer.offer_id}/accept", None),
        ("POST", f"/offers/{open_offer.offer_id}/decline", {"reason": "busy"}),
        ("GET", f"/jobs/{job['id']}", None),
        ("POST", f"/jobs/{job['id']}/heartbeat", None),
        ("POST", f"/jobs/{job['id']}/progress", {"percent": 10}),
        ("POST", f"/jobs/{job['id']}/complete", {"result": {}}),
        ("POST", f"/jobs/{job['id']}/fail", {"reason": "no"}),
    ]
    for method, path, body in calls:
        response = world.client.request(
            method, AGENT + path, json=body, headers=world.headers("lab-b")
        )
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "not_found"
    assert world.client.get(f"{AGENT}/jobs", headers=world.headers("lab-b")).json() == {"jobs": []}
    # Nothing changed for lab-a.
    assert world.row(Offer, open_offer.offer_id).state == "open"
    assert world.row(Job, job["id"]).state == "in_progress"


@pytest.mark.parametrize("path", ["/offers/999999/accept", "/jobs/999999/heartbeat"])
def test_unknown_ids_answer_404(world, path):
    assert world.post("lab-a", path).status_code == 404


@pytest.mark.parametrize("path", ["/offers/0/accept", "/offers/abc/accept", "/jobs/-3/heartbeat"])
def test_malformed_ids_answer_422(world, path):
    assert world.post("lab-a", path).status_code == 422


def test_decline_routes_the_line_again_without_the_fablab(world):
    placed = world.offer("lab-a")

    response = world.post("lab-a", f"/offers/{placed.offer_id}/decline", {"reason": "no PLA"})
    again = world.post("lab-a", f"/offers/{placed.offer_id}/decline", {"reason": "changed mind"})

    assert response.status_code == 200, response.text
    assert response.json()["state"] == "declined"
    assert response.json()["reason"] == "no PLA"
    assert again.status_code == 200
    assert again.json() == response.json()
    line = world.line(placed.line_id)
    assert (line.state, line.excluded, line.attempt, line.fablab_id) == (
        "routing",
        ["lab-a"],
        2,
        None,
    )
    [message] = world.placements(placed.line_id)
    assert message.payload == {"line_id": placed.line_id, "attempt": 2}
    assert message.sent_at is not None  # handed to the route queue after the commit
    assert world.kinds(placed.order_id) == ["declined", "routing"]


def test_a_declined_offer_cannot_be_accepted_nor_an_accepted_one_declined(world):
    declined = world.offer("lab-a")
    world.post("lab-a", f"/offers/{declined.offer_id}/decline", {"reason": "full"})
    accepted = world.offer("lab-a")
    world.accepted(accepted)

    late_accept = world.post("lab-a", f"/offers/{declined.offer_id}/accept")
    late_decline = world.post("lab-a", f"/offers/{accepted.offer_id}/decline", {"reason": "x"})

    assert late_accept.status_code == 409
    assert late_accept.json()["state"] == "declined"
    assert "full" in late_accept.json()["detail"]
    assert late_decline.status_code == 409
    assert late_decline.json()["state"] == "accepted"
    assert world.line(accepted.line_id).state == "in_progress"


def test_accepting_an_expired_offer_is_409_and_the_line_goes_elsewhere(world):
    placed = world.offer("lab-a", expires_in=-1)

    response = world.post("lab-a", f"/offers/{placed.offer_id}/accept")

    assert response.status_code == 409
    assert response.json()["state"] == "expired"
    assert world.row(Offer, placed.offer_id).state == "expired"
    line = world.line(placed.line_id)
    assert (line.state, line.excluded) == ("routing", ["lab-a"])
    assert len(world.placements(placed.line_id)) == 1
    assert world.jobs(placed.offer_id) == []


@pytest.mark.parametrize(
    "body", [{}, {"reason": ""}, {"reason": "x" * 501}, {"reason": "a\x00b"}, {"why": "busy"}]
)
def test_a_bad_decline_is_refused(world, body):
    placed = world.offer("lab-a")

    response = world.post("lab-a", f"/offers/{placed.offer_id}/decline", body)

    assert response.status_code == 422, response.text
    assert world.row(Offer, placed.offer_id).state == "open"
