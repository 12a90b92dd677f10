"""Offers becoming jobs: accept, decline and expiry, the job document, and the locking rule every
change to an order's offers and jobs follows.

**Locking.** Every change takes the order's row lock first (:func:`lock_order`; on SQLite the
write transaction already holds the database), then changes offers, jobs and lines with
conditional updates (``WHERE state = 'open'`` ...). Two requests, two sweeping workers or a
request and a sweep therefore change a row once, and never derive the order's state from each
other's stale lines. The caller commits: a state change, its events and the outbox row of the
next placement are one transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from dgml.errors import Conflict, NotFound
from dgml.settings import Settings
from router.agent_offers import (
    DesignRef,
    Extents,
    FileEntry,
    design_ref,
    order_files,
    part_size,
    reports_of,
)
from router.lifecycle import add_event, request_placement, set_line_state
from router.models import (
    Job,
    JobState,
    Offer,
    OfferState,
    Order,
    OrderLine,
    OrderState,
)

T = TypeVar("T", Offer, Job)
# A fablab that accepted a job sees where the parts go while it makes or ships them; once its
# job failed (the line went elsewhere) it no longer does.
SHOWS_DELIVERY = frozenset({JobState.IN_PROGRESS, JobState.DISCONNECTED, JobState.COMPLETED})


class JobPublic(BaseModel):
    """A job as its fablab's agent sees it, with the order's delivery details."""

    id: int
    offer_id: int
    order_id: int
    line: int
    state: str
    lease_expires_at: datetime
    percent: float
    message: str
    design: DesignRef
    process: str
    material: str
    quantity: int
    params: dict[str, Any]
    files: list[FileEntry]
    # The part's bounding box in mm, as offers give it (router.agent_offers).
    extents_mm: Extents | None
    delivery: dict[str, Any] | None
    result: dict[str, Any] | None
    reason: str | None
    created_at: datetime
    finished_at: datetime | None


class OfferDecision(BaseModel):
    id: int
    state: str
    reason: str | None
    decided_at: datetime | None


def job_public(session: Session, job: Job) -> JobPublic:
    order = session.get(Order, job.line.order_id)
    assert order is not None
    files = order_files(session, order)
    return JobPublic(
        id=job.id,
        offer_id=job.offer_id,
        order_id=order.id,
        line=job.line.number,
        state=job.state,
        lease_expires_at=job.lease_expires_at,
        percent=job.percent,
        message=job.message,
        design=design_ref(session, order),
        process=order.process,
        material=order.material,
        quantity=job.offer.quantity,
        params=order.params or {},
        files=files,
        extents_mm=part_size(files, reports_of(session, files)),
        delivery=order.delivery if job.state in SHOWS_DELIVERY else None,
        result=job.result,
        reason=job.reason,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


def offer_decision(offer: Offer) -> OfferDecision:
    return OfferDecision(
        id=offer.id, state=offer.state, reason=offer.reason, decided_at=offer.decided_at
    )


# --- locking and loading ----------------------------------------------------------------------


def lock_order(session: Session, order_id: int) -> Order:
    """Take the order's row lock and load it with its lines as they are now."""
    session.execute(select(Order.id).where(Order.id == order_id).with_for_update())
    order = session.get(Order, order_id, populate_existing=True)
    assert order is not None  # the caller read the id in this transaction
    return order


def changed(session: Session, statement: Update) -> bool:
    """Run a conditional update of one row; whether it changed it."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def fresh(session: Session, model: type[T], row_id: int) -> T:
    row = session.get(model, row_id, populate_existing=True)
    assert row is not None
    return row


def offer_order_id(session: Session, offer_id: int, fablab_id: str | None = None) -> int:
    """The order of an offer; 404 when there is none, or it is another fablab's."""
    row = session.execute(
        select(Offer.fablab_id, OrderLine.order_id)
        .join(OrderLine, OrderLine.id == Offer.line_id)
        .where(Offer.id == offer_id)
    ).first()
    if row is None or (fablab_id is not None and row.fablab_id != fablab_id):
        raise NotFound(f"no offer {offer_id} for this fablab")
    return row.order_id


def job_order_id(session: Session, job_id: int, fablab_id: str | None = None) -> int:
    """The order of a job; 404 when there is none, or it is another fablab's."""
    row = session.execute(
        select(Job.fablab_id, OrderLine.order_id)
        .join(OrderLine, OrderLine.id == Job.line_id)
        .where(Job.id == job_id)
    ).first()
    if row is None or (fablab_id is not None and row.fablab_id != fablab_id):
        raise NotFound(f"no job {job_id} for this fablab")
    return row.order_id


def get_job(session: Session, fablab_id: str, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.fablab_id != fablab_id:
        raise NotFound(f"no job {job_id} for this fablab")
    return job


def current_jobs(session: Session, fablab_id: str) -> list[Job]:
    """The fablab's jobs that are not over: what a restarted agent picks up (or reports)."""
    return list(
        session.scalars(
            select(Job)
            .where(
                Job.fablab_id == fablab_id,
                Job.state.in_([JobState.IN_PROGRESS, JobState.DISCONNECTED]),
            )
            .order_by(Job.id)
        ).all()
    )


# --- offers -----------------------------------------------------------------------------------


def accept(
    session: Session,
    settings: Settings,
    fablab_id: str,
    offer_id: int,
    *,
    key: str | None,
    now: datetime,
) -> Job:
    """Turn the open offer into a job with a lease. Exactly one accept wins: the conditional
    update, under the order's lock, and the unique ``jobs.offer_id`` behind it."""
    order = lock_order(session, offer_order_id(session, offer_id, fablab_id))
    won = changed(
        session,
        update(Offer)
        .where(Offer.id == offer_id, Offer.state == OfferState.OPEN, Offer.expires_at > now)
        .values(state=OfferState.ACCEPTED, decided_at=now),
    )
    offer = fresh(session, Offer, offer_id)
    if not won:
        return _accept_refused(session, offer, key, now)
    line = offer.line
    if line.state != OrderState.OFFERED:
        raise Conflict(
            f"the order no longer waits for offer {offer_id} (its line is {line.state})",
            state=line.state,
        )
    job = Job(
        offer_id=offer.id,
        line_id=line.id,
        fablab_id=fablab_id,
        state=JobState.IN_PROGRESS,
        lease_expires_at=now + timedelta(seconds=settings.lease_ttl_s),
        accept_key=key,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"offer {offer_id} is already accepted", state="accepted") from None
    line.fablab_id = fablab_id
    set_line_state(session, line, OrderState.IN_PROGRESS)
    add_event(
        session, order.id, "accepted", line=line, fablab_id=fablab_id, offer=offer.id, job=job.id
    )
    return job


def _accept_refused(session: Session, offer: Offer, key: str | None, now: datetime) -> Job:
    """The answer to an accept that did not win: the same job for a retry with the same
    Idempotency-Key, else a 409 that says why."""
    if offer.state == OfferState.ACCEPTED:
        job = session.scalar(select(Job).where(Job.offer_id == offer.id))
        if job is not None and key is not None and job.accept_key == key:
            return job
        raise Conflict(f"offer {offer.id} is already accepted", state=offer.state)
    if offer.state == OfferState.OPEN:  # past its expiry, and no sweep has come by yet
        expire_offer(session, offer.id, now)
        session.commit()
        raise Conflict(
            f"offer {offer.id} expired at {offer.expires_at.isoformat()}; "
            "the order is routed elsewhere",
            state=OfferState.EXPIRED,
        )
    why = f": {offer.reason}" if offer.reason else ""
    raise Conflict(f"offer {offer.id} was {offer.state}{why}", state=offer.state)


def decline(
    session: Session, fablab_id: str, offer_id: int, *, reason: str, now: datetime
) -> Offer:
    """Decline the open offer and route its line again without this fablab. Declining twice
    answers the first decision."""
    order = lock_order(session, offer_order_id(session, offer_id, fablab_id))
    won = changed(
        session,
        update(Offer)
        .where(Offer.id == offer_id, Offer.state == OfferState.OPEN)
        .values(state=OfferState.DECLINED, reason=reason, decided_at=now),
    )
    offer = fresh(session, Offer, offer_id)
    if not won:
        if offer.state == OfferState.DECLINED:
            return offer
        if offer.state == OfferState.ACCEPTED:
            raise Conflict(
                f"offer {offer_id} is accepted: report its job as failed instead",
                state=offer.state,
            )
        raise Conflict(f"offer {offer_id} is {offer.state}; nothing to decline", state=offer.state)
    line = offer.line
    add_event(
        session, order.id, "declined", line=line, fablab_id=fablab_id, offer=offer.id, reason=reason
    )
    if line.state == OrderState.OFFERED:
        request_placement(session, line, reason=f"{fablab_id} declined", exclude=fablab_id)
    return offer


def expire_offer(session: Session, offer_id: int, now: datetime) -> bool:
    """Expire an open offer whose time is up and route its line without that fablab; whether
    this call did it (another sweep, or an accept, may have come first)."""
    order = lock_order(session, offer_order_id(session, offer_id))
    won = changed(
        session,
        update(Offer)
        .where(Offer.id == offer_id, Offer.state == OfferState.OPEN, Offer.expires_at <= now)
        .values(state=OfferState.EXPIRED, reason="not accepted in time", decided_at=now),
    )
    if not won:
        return False
    offer = fresh(session, Offer, offer_id)
    line = offer.line
    add_event(
        session, order.id, "offer_expired", line=line, fablab_id=offer.fablab_id, offer=offer.id
    )
    if line.state == OrderState.OFFERED:
        request_placement(
            session,
            line,
            reason=f"the offer to {offer.fablab_id} expired",
            exclude=offer.fablab_id,
        )
    return True
