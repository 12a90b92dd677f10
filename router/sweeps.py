"""The router's scheduled sweeps: offers nobody accepted in time, and leases nobody renewed.

:func:`run_sweeps` is the RQ job (no arguments, JSON-friendly counts as its result) that the
hub schedules every few seconds. Both sweeps are safe to run at the same time in several
workers: each row is changed by a conditional update under its order's lock, one transaction
per row, so a row changes once and one slow row never holds up the rest.
"""

from __future__ import annotations

import logging
from datetime import datetime

from redis import Redis
from rq import get_current_job
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dgml import outbox
from dgml.db import utcnow, write_session
from dgml.worker import context
from router.agent_jobs import expire_offer
from router.agent_reports import lose_lease
from router.models import Job, JobState, Offer, OfferState

log = logging.getLogger("dgml.router.sweeps")
# Rows handled by one sweep; the next sweep takes the rest.
BATCH = 500


def expire_offers(
    sessions: sessionmaker[Session], *, now: datetime | None = None, limit: int = BATCH
) -> int:
    """Open offers past their expiry become ``expired`` and their lines are routed again
    without that fablab; how many this call expired."""
    now = now or utcnow()
    with sessions() as session:
        ids = session.scalars(
            select(Offer.id)
            .where(Offer.state == OfferState.OPEN, Offer.expires_at <= now)
            .order_by(Offer.expires_at, Offer.id)
            .limit(limit)
        ).all()
    done = 0
    for offer_id in ids:
        with write_session(sessions) as session:
            done += expire_offer(session, offer_id, now)
    return done


def expire_leases(
    sessions: sessionmaker[Session], *, now: datetime | None = None, limit: int = BATCH
) -> int:
    """Running jobs whose lease ran out become ``disconnected`` (not routed again: the parts
    may be on the machine); how many this call changed."""
    now = now or utcnow()
    with sessions() as session:
        ids = session.scalars(
            select(Job.id)
            .where(Job.state == JobState.IN_PROGRESS, Job.lease_expires_at < now)
            .order_by(Job.lease_expires_at, Job.id)
            .limit(limit)
        ).all()
    done = 0
    for job_id in ids:
        with write_session(sessions) as session:
            done += lose_lease(session, job_id, now)
    return done


def run_sweeps() -> dict[str, int]:
    """The RQ job: both sweeps, then the placements they asked for handed to their queue."""
    ctx = context()
    now = utcnow()
    counts = {
        "offers_expired": expire_offers(ctx.sessions, now=now),
        "leases_lost": expire_leases(ctx.sessions, now=now),
    }
    if counts["offers_expired"]:
        _send_outbox(ctx.sessions, ctx.settings.redis_url)
    if any(counts.values()):
        log.info("sweeps: %s", counts)
    return counts


def _send_outbox(sessions: sessionmaker[Session], redis_url: str | None) -> None:
    """Hand the new placements over now rather than at the worker's next outbox sweep."""
    job = get_current_job()
    if job is not None:
        outbox.dispatch(sessions, job.connection)
    elif redis_url:
        redis = Redis.from_url(redis_url)
        try:
            outbox.dispatch(sessions, redis)
        finally:
            redis.close()
