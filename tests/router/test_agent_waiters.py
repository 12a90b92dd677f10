"""The waiting side of offer wake-ups: one subscription wakes the claims of the fablab that
was announced, and only those; without Redis, waiting claims fall back to looking again."""

from __future__ import annotations

import asyncio
import threading

from router.notify import OfferWaiters, notify_offer
from tests.conftest import free_port


async def _announced_while_waiting(waiters: OfferWaiters, redis, wait_for: str, announce: str):
    async with waiters.watch(wait_for) as watch:
        waiting = asyncio.create_task(watch.wait(0.5 if wait_for != announce else 30))
        while waiters.waiting(wait_for) == 0:
            await asyncio.sleep(0.01)
        thread = threading.Thread(target=notify_offer, args=(redis, announce))
        thread.start()
        woken = await waiting
        thread.join()
    return woken


def test_a_notification_wakes_the_waiting_claims_of_its_fablab(redis_url, redis_client):
    async def main() -> tuple[bool, bool, bool]:
        waiters = OfferWaiters(redis_url)
        try:
            mine = await _announced_while_waiting(waiters, redis_client, "lab-a", "lab-a")
            listening = waiters.listening
            other = await _announced_while_waiting(waiters, redis_client, "lab-a", "lab-b")
        finally:
            await waiters.close()
        return mine, listening, other

    mine, listening, other = asyncio.run(main())

    assert listening
    assert mine is True
    assert other is False  # the wait ran out: lab-b's offer is not lab-a's


def test_without_redis_waiting_claims_look_again_every_few_seconds():
    async def main() -> tuple[bool, bool, bool]:
        waiters = OfferWaiters(f"redis://127.0.0.1:{free_port()}/0", poll_s=0.05)
        try:
            async with waiters.watch("lab-a") as watch:
                tick = await watch.wait(30)  # a polling tick, long before the wait ends
                over = await watch.wait(0.01)  # shorter than a tick: the wait is over
            return waiters.listening, tick, over
        finally:
            await waiters.close()

    listening, tick, over = asyncio.run(main())

    assert not listening
    assert tick is True
    assert over is False


def test_without_a_redis_url_claims_only_poll():
    async def main() -> tuple[bool, bool]:
        waiters = OfferWaiters(None, poll_s=0.05)
        async with waiters.watch("lab-a") as watch:
            return await watch.wait(30), await watch.wait(0)

    assert asyncio.run(main()) == (True, False)
