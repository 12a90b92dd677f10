"""What an agent reports about a job it holds: heartbeats, progress, the result, a failure; and
the loss of a lease, which the sweep finds.

Each report is safe to send again: a retried heartbeat or progress extends the lease once
more, a replayed ``complete`` with the same result or a replayed ``fail`` changes nothing. A
job whose lease was lost is ``disconnected``: it is never offered elsewhere on its own (the
parts may be on the machine), an operator resolves it, and the agent may still report that it
really finished or failed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dgml.errors import Conflict
from dgml.settings import Settings
from router.agent_jobs import changed, fresh, job_order_id, lock_order
from router.lifecycle import add_event, request_placement, set_line_state
from router.models import Job, JobState, OrderLine, OrderState

# A line holds its job while the line is in one of these states.
HOLDING = frozenset({OrderState.IN_PROGRESS, OrderState.DISCONNECTED})
# Progress is logged when it enters another band of this many percentage points.
PROGRESS_BAND = 10.0


def not_running(job: Job) -> Conflict:
    """The 409 for a report that needs a running job."""
    if job.state == JobState.DISCONNECTED:
        return Conflict(
            f"the lease of job {job.id} was lost: the job is disconnected and an operator "
            "resolves it. Do not start it again; if it really finished or failed, report that.",
            state=job.state,
        )
    return Conflict(f"job {job.id} has ended ({job.state})", state=job.state)


def heartbeat(
    session: Session, settings: Settings, fablab_id: str, job_id: int, *, now: datetime
) -> Job:
    """Extend the lease of a running job (no order lock: heartbeats are frequent and touch only
    the job's row, and the lease sweep's conditional update settles any race)."""
    job_order_id(session, job_id, fablab_id)
    won = changed(
        session,
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.IN_PROGRESS)
        .values(lease_expires_at=now + timedelta(seconds=settings.lease_ttl_s), updated_at=now),
    )
    job = fresh(session, Job, job_id)
    if not won:
        raise not_running(job)
    return job


def progress(
    session: Session,
    settings: Settings,
    fablab_id: str,
    job_id: int,
    *,
    percent: float,
    message: str,
    now: datetime,
) -> Job:
    """Store the progress and extend the lease; log it when it enters another band of ten
    points or the message changes, so the order's log stays short."""
    # The order's lock first, as every change that logs an event takes it: the event's row
    # refers to the order, and taking the two locks in another order could deadlock.
    lock_order(session, job_order_id(session, job_id, fablab_id))
    job = fresh(session, Job, job_id)
    if job.state != JobState.IN_PROGRESS:
        raise not_running(job)
    band_changed = percent // PROGRESS_BAND != job.percent // PROGRESS_BAND
    message_changed = message != job.message
    job.percent = percent
    job.message = message
    job.lease_expires_at = now + timedelta(seconds=settings.lease_ttl_s)
    job.updated_at = now
    if band_changed or message_changed:
        add_event(
            session,
            job.line.order_id,
            "progress",
            line=job.line,
            fablab_id=fablab_id,
            job=job.id,
            percent=percent,
            message=message,
        )
    return job


def complete(
    session: Session, fablab_id: str, job_id: int, *, result: dict[str, Any], now: datetime
) -> Job:
    """Finish the job (running, or disconnected but really done) and its line. A replay with
    the same result changes nothing; another result is a 409."""
    order = lock_order(session, job_order_id(session, job_id, fablab_id))
    job = fresh(session, Job, job_id)
    if job.state == JobState.COMPLETED:
        if job.result == result:
            return job
        raise Conflict(f"job {job_id} already completed with another result", state=job.state)
    if job.state == JobState.FAILED:
        raise Conflict(f"job {job_id} failed; it cannot complete", state=job.state)
    was = job.state
    job.state = JobState.COMPLETED
    job.result = result
    job.percent = 100.0
    job.finished_at = job.updated_at = now
    line = job.line
    if line.state in HOLDING and line.fablab_id == fablab_id:
        line.reason = None
        set_line_state(session, line, OrderState.COMPLETED)
    add_event(
        session,
        order.id,
        "completed",
        line=line,
        fablab_id=fablab_id,
        job=job.id,
        after_lost_lease=was == JobState.DISCONNECTED,
    )
    return job


def fail(
    session: Session,
    settings: Settings,
    fablab_id: str,
    job_id: int,
    *,
    reason: str,
    now: datetime,
) -> Job:
    """The job failed at this fablab: route the line elsewhere, or give it up as unplaceable
    once it has failed ``settings.max_failures`` times. A replay changes nothing."""
    order = lock_order(session, job_order_id(session, job_id, fablab_id))
    job = fresh(session, Job, job_id)
    if job.state == JobState.FAILED:
        return job
    if job.state == JobState.COMPLETED:
        raise Conflict(f"job {job_id} completed; it cannot fail", state=job.state)
    job.state = JobState.FAILED
    job.reason = reason
    job.finished_at = job.updated_at = now
    line = job.line
    add_event(
        session,
        order.id,
        "failed",
        line=line,
        fablab_id=fablab_id,
        alert=True,
        job=job.id,
        reason=reason,
    )
    if line.state in HOLDING and line.fablab_id == fablab_id:
        line.failures += 1
        if line.failures < settings.max_failures:
            request_placement(
                session, line, reason=f"failed at {fablab_id}: {reason}", exclude=fablab_id
            )
        else:
            give_up(session, settings, line)
    return job


def failures(session: Session, line: OrderLine) -> list[dict[str, str]]:
    """The line's failed jobs, oldest first: where, and why."""
    session.flush()
    rows = session.execute(
        select(Job.fablab_id, Job.reason)
        .where(Job.line_id == line.id, Job.state == JobState.FAILED)
        .order_by(Job.id)
    ).all()
    return [{"fablab": f, "reason": r or ""} for f, r in rows]


def give_up(session: Session, settings: Settings, line: OrderLine) -> None:
    """The line has failed as often as allowed: unplaceable, with every failure listed."""
    listed = failures(session, line)
    reason = f"failed {line.failures} times (at most {settings.max_failures}): " + "; ".join(
        f"{f['fablab']}: {f['reason']}" for f in listed
    )
    set_line_state(session, line, OrderState.UNPLACEABLE, reason=reason)
    add_event(
        session, line.order_id, "unplaceable", line=line, alert=True, reason=reason, failures=listed
    )


def lose_lease(session: Session, job_id: int, now: datetime) -> bool:
    """A running job whose lease ran out becomes ``disconnected`` with its line, for an
    operator to resolve; it is not routed again. Whether this call did it."""
    order = lock_order(session, job_order_id(session, job_id))
    won = changed(
        session,
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.IN_PROGRESS, Job.lease_expires_at < now)
        .values(state=JobState.DISCONNECTED, updated_at=now),
    )
    if not won:
        return False
    job = fresh(session, Job, job_id)
    line = job.line
    expired = job.lease_expires_at.isoformat()
    if line.state == OrderState.IN_PROGRESS and line.fablab_id == job.fablab_id:
        set_line_state(
            session,
            line,
            OrderState.DISCONNECTED,
            reason=f"the lease of job {job.id} at {job.fablab_id} ran out at {expired}",
        )
    add_event(
        session,
        order.id,
        "disconnected",
        line=line,
        fablab_id=job.fablab_id,
        alert=True,
        job=job.id,
        lease_expired_at=expired,
    )
    return True
