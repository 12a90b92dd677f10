"""Claiming offers: what an offer holds, whose offers a claim sees, and the long poll that a
notification on the fablab's channel wakes."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from dgml.app import create_app
from dgml.db import write_session
from registry.blobs import BlobStore
from registry.models import Build
from router.notify import notify_offer
from tests.conftest import mesh
from tests.router.agent_world import AGENT, DELIVERY, World, make_world


@pytest.fixture
def world(client, settings, alice, bob, redis_client) -> Iterator[World]:
    yield from make_world(client, settings, alice, bob)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def claim(world: World, lab: str = "lab-a", wait: float | str = 0) -> httpx.Response:
    return world.post(lab, f"/claim?wait={wait}")


def test_claim_answers_the_offer_with_its_model_files_and_hashes(world):
    placed = world.offer("lab-a", quantity=3)

    response = claim(world)

    assert response.status_code == 200, response.text
    [offer] = response.json()["offers"]
    assert offer["id"] == placed.offer_id
    assert offer["order_id"] == placed.order_id
    assert offer["line"] == 1
    assert offer["state"] == "open"
    assert offer["design"] == {"owner": "alice", "name": "bracket", "version": 1}
    assert (offer["process"], offer["material"], offer["quantity"]) == ("fdm", "pla", 3)
    assert offer["params"] == {"infill": 20}
    assert offer["expires_at"]
    # The model files, not the README; each downloads to the bytes its hash names.
    assert [f["path"] for f in offer["files"]] == ["bracket.stl", "plate.stl"]
    originals = {"bracket.stl": mesh("20mm-xyz-cube.stl"), "plate.stl": mesh("plate_holes.STL")}
    for entry in offer["files"]:
        assert entry["sha256"] == sha(originals[entry["path"]])
        assert entry["size"] == len(originals[entry["path"]])
        download = world.client.get(entry["url"])
        assert download.status_code == 200
        assert sha(download.content) == entry["sha256"]
    # The maker's address is for the fablab that accepts, not for every fablab offered.
    assert "delivery" not in offer
    assert DELIVERY["address"] not in response.text


def test_claim_sees_only_this_fablabs_open_offers_oldest_first(world):
    first = world.offer("lab-a")
    second = world.offer("lab-a")
    theirs = world.offer("lab-b")
    world.offer("lab-a", expires_in=-1)  # past its expiry, not yet swept

    mine = claim(world, "lab-a").json()["offers"]
    others = claim(world, "lab-b").json()["offers"]

    assert [o["id"] for o in mine] == [first.offer_id, second.offer_id]
    assert [o["id"] for o in others] == [theirs.offer_id]
    assert claim(world, "lab-c").status_code == 204


def test_an_order_naming_files_offers_just_those(world):
    world.offer("lab-a", files=["plate.stl"])

    [offer] = claim(world).json()["offers"]

    assert [f["path"] for f in offer["files"]] == ["plate.stl"]
    assert offer["files"][0]["sha256"] == sha(mesh("plate_holes.STL"))


def test_an_order_of_a_parametric_build_offers_the_built_files(world):
    built = mesh("unit_cube.STL")
    stored = BlobStore(world.settings.resolved_blob_dir).put(built)
    with write_session(world.sessions) as session:
        build = Build(
            version_id=world.version_id,
            parameter_hash="ab" * 32,
            parameters={"width": 30},
            state="done",
            files=[{"part": "box", "path": "box.stl", "sha256": stored.sha256, "size": len(built)}],
        )
        session.add(build)
        session.flush()
        build_id = build.id
    world.offer("lab-a", build_id=build_id)

    [offer] = claim(world).json()["offers"]

    [entry] = offer["files"]
    assert (entry["path"], entry["sha256"], entry["size"]) == ("box.stl", sha(built), len(built))
    download = world.client.get(entry["url"])
    assert download.status_code == 200, download.text
    assert sha(download.content) == entry["sha256"]


def test_a_claim_with_nothing_to_offer_answers_204_after_its_wait(world):
    response = claim(world, wait=0.2)

    assert response.status_code == 204
    assert response.content == b""


def test_a_waiting_claim_wakes_up_when_an_offer_is_announced(world, redis_client):
    waiters = world.client.app.state.offer_waiters
    assert claim(world, wait=0.1).status_code == 204  # the process now listens on Redis
    assert waiters.listening
    answers: list[httpx.Response] = []
    waiting = threading.Thread(target=lambda: answers.append(claim(world, wait=20)))
    waiting.start()
    deadline = time.monotonic() + 20
    while waiters.waiting("lab-a") == 0:
        assert time.monotonic() < deadline, "the claim never started waiting"
        time.sleep(0.01)

    placed = world.offer("lab-a")
    notifier = threading.Thread(target=notify_offer, args=(redis_client, "lab-a"))
    notifier.start()
    notifier.join()
    waiting.join(30)

    [answer] = answers
    assert answer.status_code == 200, answer.text
    assert [o["id"] for o in answer.json()["offers"]] == [placed.offer_id]


def test_another_fablabs_announcement_does_not_answer_a_claim(world, redis_client):
    waiters = world.client.app.state.offer_waiters
    answers: list[httpx.Response] = []
    waiting = threading.Thread(target=lambda: answers.append(claim(world, "lab-a", wait=1)))
    waiting.start()
    deadline = time.monotonic() + 20
    while waiters.waiting("lab-a") == 0:
        assert time.monotonic() < deadline, "the claim never started waiting"
        time.sleep(0.01)
    world.offer("lab-b")
    notify_offer(redis_client, "lab-b")
    waiting.join(30)

    assert [a.status_code for a in answers] == [204]


def test_the_wait_is_capped_by_the_hub(world, settings):
    capped = settings.model_copy(update={"claim_wait_max_s": 0.1})
    with TestClient(create_app(capped)) as client:
        response = client.post(f"{AGENT}/claim?wait=100000", headers=world.headers("lab-a"))

    assert response.status_code == 204


@pytest.mark.parametrize("wait", ["-1", "nan", "inf", "-inf", "soon"])
def test_a_bad_wait_is_refused(world, wait):
    response = claim(world, wait=wait)

    assert response.status_code == 422
    assert response.json()["field"] == "wait"


def test_the_agent_api_wants_an_agent_token(world):
    world.offer("lab-a")
    user_token = world.client.post(f"{AGENT}/claim", headers=world.maker.headers)
    no_token = world.client.post(f"{AGENT}/claim")
    made_up = world.client.post(f"{AGENT}/claim", headers={"Authorization": "Bearer dgml_agent_x"})

    for response in (user_token, no_token, made_up):
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
