"""RQ workers of the hub: ``dgml worker`` runs one, ``dgml up`` starts them as child processes.

Jobs run in the worker process itself (RQ's SimpleWorker): the heavy or untrusted part of each
job (checking a model file) already runs in a child process of its own with caps on time and
memory, so a second fork per job would only cost time.

Every few seconds (``Settings.worker_tick_s``) each worker also, in a thread of its own:
hands over outbox messages whose request could not (Redis was down, the API process died between
commit and enqueue); renews a key saying it is alive, which is how a job left "started" by a
worker that died is told from one still running (:func:`job_alive`); moves scheduled jobs that
are due onto their queues (a placement waiting for a geometry report retries that way); and
enqueues the router's periodic work, the offer and lease sweeps and the reconciler, with a job
id per time slot, so that however many workers there are, each slot runs once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from redis import Redis
from rq import SimpleWorker
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import current_timestamp
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dgml import outbox
from dgml.db import make_engine, make_sessionmaker
from dgml.errors import DgmlError
from dgml.logs import configure_logging
from dgml.settings import Settings
from registry.blobs import BlobStore

log = logging.getLogger("dgml.worker")

# Queues in the order a worker serves them: slow checks and builds, and routing. ``dgml up``
# runs routing in workers of its own, so that a placement never waits behind a long check.
VALIDATION_QUEUES = ("validate", "build")
ROUTE_QUEUES = ("route",)
QUEUES = VALIDATION_QUEUES + ROUTE_QUEUES
ALIVE_PREFIX = "dgml:worker:alive:"
# The router's periodic work: (job id prefix, function, the setting that holds its period).
PERIODIC = (
    ("sweeps", "router.sweeps.run_sweeps", "sweeps_every_s"),
    ("reconcile", "router.reconcile.run_reconcile", "reconcile_every_s"),
)
# Sent outbox messages are deleted about once an hour, a week after they were sent.
PRUNE_EVERY_S = 3600.0


@dataclass
class WorkerContext:
    """What jobs reach: the settings, the database and the blob store."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore


_context: WorkerContext | None = None


def make_context(settings: Settings) -> WorkerContext:
    engine = make_engine(settings.resolved_database_url)
    return WorkerContext(
        settings, engine, make_sessionmaker(engine), BlobStore(settings.resolved_blob_dir)
    )


def set_context(context: WorkerContext | None) -> None:
    global _context
    _context = context


def context() -> WorkerContext:
    """The context of this worker process (made from the environment on first use)."""
    global _context
    if _context is None:
        _context = make_context(Settings())
    return _context


def mark_alive(redis: Redis, name: str, tick_s: float) -> None:
    """Say this worker is alive for three ticks: missing one tick is not death."""
    redis.set(ALIVE_PREFIX + name, "1", px=max(1000, int(tick_s * 3000)))


def worker_alive(redis: Redis, name: str | None) -> bool:
    return bool(name) and bool(redis.exists(ALIVE_PREFIX + str(name)))


def job_alive(job: Job) -> bool:
    """True while the job will still run or is running in a worker that is alive."""
    status = job.get_status(refresh=False)
    if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        return True
    if status == JobStatus.STARTED:
        return worker_alive(job.connection, job.worker_name)
    return False


def fetch_job(redis: Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


def enqueue_due(redis: Redis, queues: tuple[str, ...] = QUEUES) -> int:
    """Move scheduled jobs that are due onto their queues; how many this worker moved.

    Removing a job from the schedule is what entitles a worker to enqueue it, so two workers
    never enqueue the same one."""
    moved = 0
    for name in queues:
        queue = outbox.queue(redis, name)
        registry = ScheduledJobRegistry(queue=queue)
        for job_id in registry.get_jobs_to_schedule(current_timestamp()):
            if not redis.zrem(registry.key, job_id):
                continue
            job = fetch_job(redis, job_id)
            if job is not None:
                queue.enqueue_job(job)
                moved += 1
    return moved


def enqueue_periodic(redis: Redis, settings: Settings, now: float | None = None) -> list[str]:
    """Enqueue each periodic job of the current time slot, unless another worker did; the ids
    this call enqueued."""
    now = time.time() if now is None else now
    queue = outbox.queue(redis, ROUTE_QUEUES[0])
    enqueued = []
    for prefix, function, setting in PERIODIC:
        period = float(getattr(settings, setting))
        job_id = f"{prefix}-{int(now // period)}"
        keep = max(60, int(3 * period))
        with contextlib.suppress(DuplicateJobError):
            queue.enqueue_call(
                function,
                job_id=job_id,
                timeout=max(60, int(10 * period)),
                ttl=keep,  # a slot nobody ran in time is dropped, the next one does the work
                result_ttl=keep,
                failure_ttl=3600,
                unique=True,
            )
            enqueued.append(job_id)
    return enqueued


def tick(context: WorkerContext, redis: Redis, name: str, count: int) -> None:
    """One round of a worker's housekeeping (see the module notes)."""
    mark_alive(redis, name, context.settings.worker_tick_s)
    outbox.dispatch(
        context.sessions, redis, older_than=timedelta(seconds=context.settings.worker_tick_s)
    )
    enqueue_due(redis)
    enqueue_periodic(redis, context.settings)
    if count % max(1, int(PRUNE_EVERY_S / context.settings.worker_tick_s)) == 0:
        outbox.prune(context.sessions)


def sweep_forever(
    context: WorkerContext, redis: Redis, stop: threading.Event, name: str = ""
) -> None:
    count = 0
    while not stop.wait(context.settings.worker_tick_s):
        count += 1
        try:
            tick(context, redis, name, count)
        except Exception:  # a sweep must never end the worker; the next one tries again
            log.exception("worker housekeeping failed")


def run_worker(
    settings: Settings, queues: tuple[str, ...] = QUEUES, *, burst: bool = False
) -> None:
    from registry import builds, validation  # noqa: F401  (they register their outbox topics)
    from router import lifecycle  # noqa: F401  (the placement topic)

    if not settings.redis_url:
        raise DgmlError("a worker needs DGML_REDIS_URL (dgml up sets it for its own workers)")
    configure_logging(settings.log_format, settings.log_level)
    set_context(make_context(settings))
    redis = Redis.from_url(settings.redis_url)
    name = f"dgml-{uuid.uuid4().hex[:16]}"
    mark_alive(redis, name, settings.worker_tick_s)
    stop = threading.Event()
    sweeper = threading.Thread(
        target=sweep_forever, args=(context(), redis, stop, name), name="housekeeping", daemon=True
    )
    sweeper.start()
    try:
        worker = SimpleWorker(
            [outbox.queue(redis, q) for q in queues],
            connection=redis,
            serializer=JSONSerializer,
            name=name,
        )
        worker.work(burst=burst, logging_level=settings.log_level.upper())
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            redis.delete(ALIVE_PREFIX + name)
        redis.close()
        context().engine.dispose()


# --- housekeeping as processes of their own (compose's scheduler and reconciler) ---------------


def _until_stopped() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C): the loop's cue to end after its round."""
    stop = threading.Event()

    def handle(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _standalone(settings: Settings, what: str) -> Redis:
    from registry import builds, validation  # noqa: F401  (they register their outbox topics)
    from router import lifecycle  # noqa: F401  (the placement topic)

    if not settings.redis_url:
        raise DgmlError(f"the {what} needs DGML_REDIS_URL")
    configure_logging(settings.log_format, settings.log_level)
    set_context(make_context(settings))
    return Redis.from_url(settings.redis_url)


def run_scheduler(settings: Settings) -> None:
    """``dgml scheduler``: the housekeeping of a worker (outbox hand-over, due scheduled jobs,
    the periodic sweeps and reconciler enqueued once per time slot) without serving a queue, so
    that the periodic work is enqueued on time however busy the workers are."""
    redis = _standalone(settings, "scheduler")
    stop = _until_stopped()
    name = f"dgml-scheduler-{uuid.uuid4().hex[:12]}"
    log.info("scheduler started (every %g s)", settings.worker_tick_s)
    count = 0
    try:
        while True:
            count += 1
            try:
                tick(context(), redis, name, count)
            except Exception:  # Redis or the database away for a moment: the next round retries
                log.exception("scheduler round failed")
            if stop.wait(settings.worker_tick_s):
                break
    finally:
        with contextlib.suppress(Exception):
            redis.delete(ALIVE_PREFIX + name)
        redis.close()
        context().engine.dispose()
    log.info("scheduler stopped")


def run_reconciler(settings: Settings, every_s: float | None = None) -> None:
    """``dgml reconciler``: compare the database with Redis every ``every_s`` seconds (default
    ``Settings.reconcile_every_s``) and post again the placements a fault lost. Running it
    beside the workers' periodic reconcile jobs is harmless: posting a placement is idempotent."""
    from router.reconcile import reconcile

    redis = _standalone(settings, "reconciler")
    period = float(every_s if every_s is not None else settings.reconcile_every_s)
    stop = _until_stopped()
    log.info("reconciler started (every %g s)", period)
    try:
        while True:
            try:
                posted = reconcile(context().sessions, redis, settings)
                if posted:
                    log.info("reconciler posted %d lost placements again", len(posted))
            except Exception:
                log.exception("reconciler round failed")
            if stop.wait(period):
                break
    finally:
        redis.close()
        context().engine.dispose()
    log.info("reconciler stopped")
