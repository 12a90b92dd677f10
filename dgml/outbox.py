"""The outbox: work that must reach a queue, written in the same transaction as its cause.

A push that needs validation writes an outbox row beside the version; once the transaction has
committed, the row is handed to RQ and marked sent. If Redis is down at that moment, or the
process dies in between, the row stays unsent and the next sweep (every worker runs one) hands
it over. Handing a row over twice is harmless: each topic's job has a stable id and its work is
idempotent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer
from sqlalchemy import JSON, Integer, String, delete, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from dgml.db import WRITE, Base, UTCDateTime, utcnow

log = logging.getLogger("dgml.outbox")


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(40))
    # The RQ job id: the same work always has the same id.
    key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


@dataclass(frozen=True)
class Topic:
    """Where the messages of one topic go: an RQ queue and the dotted path of the job function,
    which is called with the payload as keyword arguments."""

    queue: str
    function: str
    timeout_s: int = 600


TOPICS: dict[str, Topic] = {}


def register(name: str, topic: Topic) -> None:
    TOPICS[name] = topic


def queue(redis: Redis, name: str) -> Queue:
    """An RQ queue that stores jobs as JSON, never pickle."""
    return Queue(name, connection=redis, serializer=JSONSerializer)


# Where a session keeps the messages posted in it (see :func:`posted`).
_POSTED = "dgml.outbox.posted"


def post(session: Session, topic: str, key: str, payload: dict[str, Any]) -> OutboxMessage:
    """Add a message to the session's transaction; it is sent once that commits."""
    if topic not in TOPICS:
        raise ValueError(f"unknown outbox topic {topic!r}")
    message = OutboxMessage(topic=topic, key=key, payload=payload)
    session.add(message)
    session.info.setdefault(_POSTED, []).append(message)
    return message


def posted(session: Session) -> list[OutboxMessage]:
    """The messages posted in this session so far: what its request hands over after commit."""
    return list(session.info.get(_POSTED, ()))


def _enqueue(redis: Redis, message: OutboxMessage) -> None:
    topic = TOPICS[message.topic]
    queue(redis, topic.queue).enqueue_call(
        topic.function,
        kwargs=message.payload,
        job_id=message.key,
        timeout=topic.timeout_s,
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
        unique=True,
    )


def dispatch(
    sessions: sessionmaker[Session],
    redis: Redis,
    *,
    older_than: timedelta = timedelta(0),
    limit: int = 500,
    now: Callable[[], datetime] = utcnow,
) -> int:
    """Hand unsent messages to their queues and mark them sent; the number handed over.

    Unsent messages younger than ``older_than`` are left alone, so a sweep does not race the
    request that wrote them (which sends its own right after commit, :func:`send`).
    """
    cutoff = now() - older_than
    with sessions() as session:
        pending = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.sent_at.is_(None), OutboxMessage.created_at <= cutoff)
            .order_by(OutboxMessage.id)
            .limit(limit)
        ).all()
    return send(sessions, redis, pending, now=now)


def send(
    sessions: sessionmaker[Session],
    redis: Redis,
    messages: list[OutboxMessage],
    *,
    now: Callable[[], datetime] = utcnow,
) -> int:
    """Hand these committed messages to their queues and mark them sent; how many went.

    A request sends just the messages it posted (:func:`posted`), so that concurrent requests
    do not each hand over everyone's; what Redis refuses stays for the next sweep."""
    sent: list[int] = []
    try:
        for message in messages:
            if message.topic not in TOPICS:
                log.error("outbox message %s has unknown topic %r", message.id, message.topic)
                continue
            # A duplicate is the same work, already queued or done: handed over all the same.
            with contextlib.suppress(DuplicateJobError):
                _enqueue(redis, message)
            sent.append(message.id)
    except RedisError as exc:
        log.warning("outbox: Redis refused a message (%s); the next sweep retries", exc)
    if sent:
        with sessions() as session:
            session.connection(execution_options=WRITE)
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(sent), OutboxMessage.sent_at.is_(None))
                .values(sent_at=now())
            )
            session.commit()
    return len(sent)


def prune(sessions: sessionmaker[Session], *, older_than: timedelta = timedelta(days=7)) -> int:
    """Delete messages sent more than ``older_than`` ago; how many went."""
    with sessions() as session:
        session.connection(execution_options=WRITE)
        gone = session.execute(
            delete(OutboxMessage).where(OutboxMessage.sent_at < utcnow() - older_than)
        ).rowcount
        session.commit()
    return gone
