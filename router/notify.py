"""Wake-ups for agents waiting in a claim: a Redis channel per fablab.

Offers are in the database; this only tells a waiting claim to look now rather than at the end
of its wait. A lost notification costs latency, never an offer.

The publishing side (:func:`notify_offer`) is called by whoever commits an offer. The waiting
side (:class:`OfferWaiters`) lives in each API process: one pattern subscription on one Redis
connection serves every claim that process holds open, however many agents wait at once, and
a waiting claim holds neither a database connection nor a thread, only an ``asyncio.Event``.
While Redis is away the waiters fall back to looking every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger("dgml.router.notify")

_PREFIX = "dgml:offers:"
PATTERN = _PREFIX + "*"
# While not subscribed, a waiting claim looks again this often.
POLL_S = 2.0
# How long the first claim of a process waits for the subscription before it falls back to
# polling (Redis slow to answer, or away).
READY_S = 1.0
# Back-off between attempts to subscribe again after the connection was lost.
RETRY_MIN_S, RETRY_MAX_S = 0.5, 10.0


def channel(fablab_id: str) -> str:
    return _PREFIX + fablab_id


def notify_offer(redis: Redis | None, fablab_id: str) -> None:
    """Tell the fablab's waiting claims that it has a new offer (best effort, after commit)."""
    if redis is None:
        return
    try:
        redis.publish(channel(fablab_id), "offer")
    except RedisError as exc:
        log.warning(
            "could not wake the agent of %s (%s); its next claim finds the offer", fablab_id, exc
        )


@dataclass
class Watch:
    """One claim's registration: :meth:`wait` returns when the fablab may have a new offer."""

    waiters: OfferWaiters
    fablab_id: str
    event: asyncio.Event

    async def wait(self, timeout: float) -> bool:
        """True: look again (woken, or a polling tick while Redis is away); False: time is up."""
        return await self.waiters.wait(self, timeout)


class OfferWaiters:
    """Every claim waiting in this process, woken through one Redis pattern subscription.

    Made once per app (its router's lifespan) and used on that app's event loop only. The
    listener task starts with the first claim that waits, and subscribes again after the
    connection is lost; each (re)subscription wakes every waiter, since a notification may
    have gone by while nobody listened.
    """

    def __init__(self, redis_url: str | None, *, poll_s: float = POLL_S) -> None:
        self._url = redis_url
        self._poll_s = poll_s
        self._watches: dict[str, set[asyncio.Event]] = {}
        self._waiting: dict[str, int] = {}
        self._listening = False
        # Set once the listener's first attempt to subscribe has succeeded or failed.
        self._settled: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """Subscribed right now: waiters are woken by notifications, not by polling."""
        return self._listening

    def waiting(self, fablab_id: str) -> int:
        """How many claims of this fablab are blocked in a wait right now."""
        return self._waiting.get(fablab_id, 0)

    @contextlib.asynccontextmanager
    async def watch(self, fablab_id: str) -> AsyncIterator[Watch]:
        """Register before looking at the database, so that an offer committed between the
        look and the wait still wakes this claim."""
        await self._start()
        event = asyncio.Event()
        self._watches.setdefault(fablab_id, set()).add(event)
        try:
            yield Watch(self, fablab_id, event)
        finally:
            events = self._watches.get(fablab_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._watches[fablab_id]

    async def wait(self, watch: Watch, timeout: float) -> bool:
        if timeout <= 0:
            return False
        step = timeout if self._listening else min(timeout, self._poll_s)
        self._waiting[watch.fablab_id] = self._waiting.get(watch.fablab_id, 0) + 1
        try:
            await asyncio.wait_for(watch.event.wait(), step)
            woken = True
        except TimeoutError:
            woken = step < timeout
        finally:
            left = self._waiting[watch.fablab_id] - 1
            if left:
                self._waiting[watch.fablab_id] = left
            else:
                del self._waiting[watch.fablab_id]
        watch.event.clear()
        return woken

    async def close(self) -> None:
        """Stop listening (the app is shutting down)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._listening = False

    async def _start(self) -> None:
        if self._url is None or (self._task is not None and not self._task.done()):
            return
        self._settled = asyncio.Event()
        self._task = asyncio.create_task(self._listen(), name="offer-wake-ups")
        # The first claim waits briefly for the subscription; if Redis refuses or does not
        # answer in time, it polls until the listener has caught up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), READY_S)

    def _wake(self, fablab_id: str) -> None:
        for event in self._watches.get(fablab_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._watches.values():
            for event in events:
                event.set()

    def _on_message(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        if kind == "psubscribe":
            self._listening = True
            if self._settled is not None:
                self._settled.set()
            self._wake_all()
        elif kind == "pmessage":
            raw = message.get("channel")
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            if name.startswith(_PREFIX):
                self._wake(name.removeprefix(_PREFIX))

    async def _listen(self) -> None:
        assert self._url is not None
        delay = RETRY_MIN_S
        while True:
            client = aioredis.Redis.from_url(self._url)
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(PATTERN)
                async for message in pubsub.listen():
                    if message.get("type") == "psubscribe":
                        delay = RETRY_MIN_S
                    self._on_message(message)
            except (RedisError, OSError) as exc:
                log.warning("offer wake-ups: Redis connection lost (%s); claims poll", exc)
            finally:
                self._listening = False
                if self._settled is not None:
                    self._settled.set()
                self._wake_all()  # waiters switch to polling
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
