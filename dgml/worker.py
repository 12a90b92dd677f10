"""RQ workers of the hub: ``dgml worker`` runs one, ``dgml up`` starts them as child processes.

Jobs run in the worker process itself (RQ's SimpleWorker): the heavy or untrusted part of each
job (checking a model file) already runs in a child process of its own with caps on time and
memory, so a second fork per job would only cost time. Each worker also sweeps the outbox every
few seconds, handing over messages whose request could not (Redis was down, the API process
died between commit and enqueue).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dgml import outbox
from dgml.db import make_engine, make_sessionmaker
from dgml.errors import DgmlError
from dgml.settings import Settings
from registry.blobs import BlobStore

log = logging.getLogger("dgml.worker")

# Queues in the order a worker serves them.
QUEUES = ("validate", "build")
SWEEP_SECONDS = 5.0
# Sent outbox messages are deleted about once an hour, a week after they were sent.
PRUNE_EVERY = 720


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


def sweep_forever(context: WorkerContext, redis: Redis, stop: threading.Event) -> None:
    sweeps = 0
    while not stop.wait(SWEEP_SECONDS):
        try:
            outbox.dispatch(context.sessions, redis, older_than=timedelta(seconds=SWEEP_SECONDS))
            sweeps += 1
            if sweeps % PRUNE_EVERY == 0:
                outbox.prune(context.sessions)
        except Exception:  # a sweep must never end the worker; the next one tries again
            log.exception("outbox sweep failed")


def run_worker(
    settings: Settings, queues: tuple[str, ...] = QUEUES, *, burst: bool = False
) -> None:
    from registry import builds, validation  # noqa: F401  (they register their outbox topics)

    if not settings.redis_url:
        raise DgmlError("a worker needs DGML_REDIS_URL (dgml up sets it for its own workers)")
    set_context(make_context(settings))
    redis = Redis.from_url(settings.redis_url)
    stop = threading.Event()
    sweeper = threading.Thread(
        target=sweep_forever, args=(context(), redis, stop), name="outbox-sweep", daemon=True
    )
    sweeper.start()
    try:
        worker = SimpleWorker(
            [outbox.queue(redis, q) for q in queues],
            connection=redis,
            serializer=JSONSerializer,
        )
        worker.work(burst=burst, logging_level="INFO")
    finally:
        stop.set()
        redis.close()
        context().engine.dispose()
