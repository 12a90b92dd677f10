"""Pushes that arrive at the same moment, over real sockets."""

from __future__ import annotations

import threading

import httpx

from tests.conftest import mesh


def test_twenty_concurrent_pushes_get_twenty_consecutive_numbers(live_server, alice, settings):
    design = f"{live_server}/api/v1/designs/alice/bracket"
    created = httpx.post(
        f"{live_server}/api/v1/designs",
        json={"name": "bracket", "title": "Bracket", "license": "CC-BY-4.0"},
        headers=alice.headers,
    )
    assert created.status_code == 201
    cube = mesh("20mm-xyz-cube.stl")
    barrier = threading.Barrier(20)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def push(i: int) -> None:
        with httpx.Client(timeout=60) as http:
            barrier.wait()
            response = http.post(
                design + "/versions",
                files=[("files", (f"part-{i}.stl", cube + str(i).encode()))],
                data={"message": f"push {i}"},
                headers=alice.headers,
            )
        with lock:
            results.append(response)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)

    assert [r.status_code for r in results] == [201] * 20, [r.text for r in results if r.is_error]
    numbers = sorted(r.json()["number"] for r in results)
    assert numbers == list(range(1, 21))
    # Every version's parent is the one numbered just before it: no lost update in the chain.
    listing = httpx.get(design + "/versions", params={"limit": 100}).json()["items"]
    by_number = {v["number"]: v for v in listing}
    assert sorted(by_number) == list(range(1, 21))
    for n in range(2, 21):
        assert by_number[n]["parents"] == [{"owner": "alice", "name": "bracket", "version": n - 1}]
    # Each push kept its own file and message.
    messages = {v["message"] for v in listing}
    assert messages == {f"push {i}" for i in range(20)}
    assert httpx.get(design).json()["latest_version"] == 20
