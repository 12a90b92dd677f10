"""Wake-ups for agents waiting in a claim: a Redis channel per fablab.

Offers are in the database; this only tells a waiting claim to look now rather than at the end
of its wait. A lost notification costs latency, never an offer.
"""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger("dgml.router.notify")


def channel(fablab_id: str) -> str:
    return f"dgml:offers:{fablab_id}"


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
