"""The fablab directory as placement and the agent API read it: agent tokens, who is online,
and :class:`router.records.Fablab` records built from the database rows with their live queues.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dgml.db import WRITE, utcnow
from dgml.deps import ServicesDep, bearer_token
from dgml.errors import Unauthorized
from registry.accounts import hash_token
from router import records
from router.models import Fablab, Job, JobState, Offer, OfferState, Order, OrderLine

# Tokens say what they are for, so that one pasted in the wrong place is easy to tell.
ENROLMENT_PREFIX = "dgml_enrol_"
AGENT_PREFIX = "dgml_agent_"
# last_seen_at is written at most this often per fablab: a claim every second costs no write.
SEEN_RESOLUTION = timedelta(seconds=5)


def new_token(prefix: str) -> tuple[str, str]:
    """A random token and its sha256 (what is stored)."""
    token = prefix + secrets.token_urlsafe(32)
    return token, hash_token(token)


def is_online(last_seen_at: datetime | None, online_s: float, now: datetime | None = None) -> bool:
    if last_seen_at is None:
        return False
    return (now or utcnow()) - last_seen_at <= timedelta(seconds=online_s)


@dataclass(frozen=True, slots=True)
class Agent:
    """The caller of the agent API: the agent of one fablab."""

    fablab_id: str


def authenticate_agent(session: Session, token: str, *, now: datetime | None = None) -> Agent:
    """The fablab of an agent token; marks it seen (a call of the agent API counts as one)."""
    row = session.execute(
        select(Fablab.id, Fablab.last_seen_at).where(Fablab.agent_token_hash == hash_token(token))
    ).first()
    if row is None:
        raise Unauthorized("the agent token is not valid (unknown, or the fablab enrolled again)")
    now = now or utcnow()
    if row.last_seen_at is None or now - row.last_seen_at >= SEEN_RESOLUTION:
        session.connection(execution_options=WRITE)
        session.execute(update(Fablab).where(Fablab.id == row.id).values(last_seen_at=now))
        session.commit()
    return Agent(row.id)


def agent_caller(request: Request, services: ServicesDep) -> Agent:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("the agent API needs the agent token: 'Authorization: Bearer <token>'")
    with services.sessions() as session:
        return authenticate_agent(session, token)


AgentCaller = Annotated[Agent, Depends(agent_caller)]


def open_work(session: Session, fablab_ids: Iterable[str]) -> dict[tuple[str, str], int]:
    """Jobs running and offers open per (fablab, process): the queue placement scores."""
    ids = list(fablab_ids)
    if not ids:
        return {}
    counts: dict[tuple[str, str], int] = {}
    for model, state in ((Job, JobState.IN_PROGRESS), (Offer, OfferState.OPEN)):
        rows = session.execute(
            select(model.fablab_id, Order.process, func.count())
            .join(OrderLine, OrderLine.id == model.line_id)
            .join(Order, Order.id == OrderLine.order_id)
            .where(model.fablab_id.in_(ids), model.state == state)
            .group_by(model.fablab_id, Order.process)
        ).all()
        for fablab_id, process, count in rows:
            counts[fablab_id, process] = counts.get((fablab_id, process), 0) + count
    return counts


def as_record(
    row: Fablab, *, online: bool, queues: dict[tuple[str, str], int] | None = None
) -> records.Fablab:
    """The placement record of a directory row: ``queue`` of each machine is the fablab's open
    work for that process, shared over its machines of the process by placement itself."""
    queues = queues or {}
    machines: list[dict[str, Any]] = []
    for machine in row.machines:
        process = str(machine["process"]).casefold()
        kinds = sum(1 for m in row.machines if str(m["process"]).casefold() == process)
        # The queue is per process; split it over the entries of that process.
        queue = -(-queues.get((row.id, process), 0) // kinds)
        machines.append({**machine, "queue": queue})
    return records.Fablab.from_dict(
        {
            "id": row.id,
            "name": row.name,
            "lat": row.lat,
            "lon": row.lon,
            "legal_form": row.legal_form,
            "online": online,
            "machines": machines,
            "price": row.price,
        }
    )


def load_records(
    session: Session, ids: Iterable[str], *, online_s: float, now: datetime | None = None
) -> dict[str, records.Fablab]:
    """Placement records for these fablab ids (unknown ids are left out)."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return {}
    now = now or utcnow()
    rows = session.scalars(select(Fablab).where(Fablab.id.in_(ids))).all()
    queues = open_work(session, [row.id for row in rows])
    return {
        row.id: as_record(row, online=is_online(row.last_seen_at, online_s, now), queues=queues)
        for row in rows
    }
