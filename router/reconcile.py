"""The reconciler: whatever the database says is being placed has work queued for it.

Redis carries work, the database is the truth. A flush of Redis, a worker killed in the middle
of a job, or a job that crashed leaves lines in ``accepted`` or ``routing`` with nothing queued
for them. :func:`reconcile` finds those and posts a new placement attempt for each (through the
outbox, like any other), and rebuilds the geo index when it is gone. It runs as the RQ job
:func:`run_reconcile`, which every worker enqueues every ``Settings.reconcile_every_s``.

A line has work when any of these holds:

- its placement job (``place-<line>-<attempt>``, or a scheduled retry of it,
  ``place-<line>-<attempt>-w<n>``) is queued, scheduled, deferred, or started in a worker that
  is alive (:func:`dgml.worker.job_alive`: workers renew a key every few seconds);
- the outbox holds its placement unsent, or sent less than ``Settings.reconcile_grace_s`` ago;
- the line itself changed less than ``Settings.reconcile_grace_s`` ago.

A job whose worker died is treated as lost even if RQ still lists it as started; should it
somehow still run, its attempt is stale by then and it does nothing.

:func:`revive` does the same for the geometry checks and builds a waiting placement depends
on: the registry posts them once, and a wiped Redis would otherwise leave an order waiting for a
report nobody is making.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from redis import Redis
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from dgml import outbox
from dgml.db import utcnow, write_session
from dgml.settings import Settings
from dgml.worker import fetch_job, job_alive, worker_alive
from registry import builds, validation
from registry.models import Build
from router import geo
from router.lifecycle import PLACE_TOPIC, request_placement
from router.models import OrderLine, OrderState
from router.routing import QUEUE, fablab_positions, locked_line

log = logging.getLogger("dgml.router.reconcile")

PLACE_JOB = re.compile(r"^place-(\d+)-(\d+)(?:-w\d+)?$")
OPEN_STATES = (OrderState.ACCEPTED, OrderState.ROUTING)
# Lines looked at per run; the next run takes the rest.
BATCH = 1000
LOST = "reconciled: its placement job was lost"


def _place_job(job_id: str) -> tuple[int, int] | None:
    match = PLACE_JOB.match(job_id)
    return None if match is None else (int(match[1]), int(match[2]))


def live_placements(redis: Redis) -> set[tuple[int, int]]:
    """(line, attempt) of every placement job that will run or is running in a live worker."""
    queue = outbox.queue(redis, QUEUE)
    waiting = set(queue.get_job_ids())
    waiting |= set(ScheduledJobRegistry(queue=queue).get_job_ids(cleanup=False))
    waiting |= set(DeferredJobRegistry(queue=queue).get_job_ids(cleanup=False))
    live = {key for job_id in waiting if (key := _place_job(job_id)) is not None}
    for job_id in StartedJobRegistry(queue=queue).get_job_ids(cleanup=False):
        key = _place_job(job_id)
        if key is None or key in live:
            continue
        job = fetch_job(redis, job_id)
        if job is not None and worker_alive(redis, job.worker_name):
            live.add(key)
    return live


def recently_posted(session: Session, since: datetime) -> set[tuple[int, int]]:
    """(line, attempt) of placements the outbox has not handed over, or handed over lately."""
    rows = session.scalars(
        select(outbox.OutboxMessage.payload).where(
            outbox.OutboxMessage.topic == PLACE_TOPIC,
            or_(outbox.OutboxMessage.sent_at.is_(None), outbox.OutboxMessage.sent_at >= since),
        )
    ).all()
    return {(int(p["line_id"]), int(p["attempt"])) for p in rows}


def lost_lines(
    sessions: sessionmaker[Session], redis: Redis, settings: Settings, now: datetime
) -> list[tuple[int, int]]:
    """(line, attempt) of open lines without any work (see the module notes)."""
    since = now - timedelta(seconds=settings.reconcile_grace_s)
    with sessions() as session:
        candidates = session.execute(
            select(OrderLine.id, OrderLine.attempt)
            .where(OrderLine.state.in_(OPEN_STATES), OrderLine.updated_at <= since)
            .order_by(OrderLine.id)
            .limit(BATCH)
        ).all()
        if not candidates:
            return []
        posted = recently_posted(session, since)
    live = live_placements(redis) | posted
    return [(line_id, attempt) for line_id, attempt in candidates if (line_id, attempt) not in live]


def reconcile(
    sessions: sessionmaker[Session],
    redis: Redis,
    settings: Settings,
    *,
    now: datetime | None = None,
) -> list[int]:
    """Post a new placement attempt for every open line whose work was lost; their ids."""
    now = now or utcnow()
    with sessions() as session:
        geo.ensure(redis, lambda: fablab_positions(session))
    lost = lost_lines(sessions, redis, settings, now)
    if not lost:
        return []
    posted: list[int] = []
    with write_session(sessions) as session:
        for line_id, attempt in lost:
            line = locked_line(session, line_id)
            if line is None or line.attempt != attempt or line.state not in OPEN_STATES:
                continue  # it moved on since it was read
            request_placement(session, line, reason=LOST)
            posted.append(line_id)
    if posted:
        log.warning("reconciler: placement of lines %s was lost; posted again", posted)
        outbox.dispatch(sessions, redis)
    return posted


def run_reconcile() -> list[int]:
    """The RQ job: reconcile once with the worker's database and Redis."""
    from rq import get_current_job

    from dgml.worker import context

    ctx = context()
    job = get_current_job()
    redis = job.connection if job is not None else Redis.from_url(str(ctx.settings.redis_url))
    return reconcile(ctx.sessions, redis, ctx.settings)


# --- the checks and builds a waiting placement depends on --------------------------------------


def _dead(redis: Redis, job_id: str) -> bool:
    """True when no live job has this id; a dead one is deleted so that it can be posted again
    under the same id."""
    job = fetch_job(redis, job_id)
    if job is None:
        return True
    if job_alive(job):
        return False
    job.delete()
    return True


def revive(
    session: Session, redis: Redis, files: Iterable[tuple[str, str]], build_id: int | None
) -> int:
    """Post again, in the caller's transaction, the geometry checks of these ``(path, sha256)``
    model files and the build ``build_id`` whose jobs are gone; how many."""
    dead = [
        (path, sha)
        for path, sha in files
        if (reader := validation.reader_for(path)) is not None
        and _dead(redis, validation.job_key(sha, reader))
    ]
    revived = validation.request_for_files(session, dead) if dead else 0
    if build_id is not None:
        build = session.get(Build, build_id)
        key = f"build_{build_id}"
        if build is not None and build.state in ("queued", "running") and _dead(redis, key):
            outbox.post(session, builds.TOPIC, key, {"build_id": build_id})
            revived += 1
    return revived
