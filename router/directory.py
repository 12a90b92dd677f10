"""The fablab directory as placement and the agent API read it: agent tokens, who is online,
and :class:`router.records.Fablab` records built from the database rows with their live queues;
and what the directory API needs besides: the geo index kept in step with the database, agent
enrolment, and the public board of work near a place.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from redis import Redis
from redis.exceptions import WatchError
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    String,
    any_,
    bindparam,
    func,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from dgml.db import WRITE, utcnow
from dgml.deps import ServicesDep, bearer_token
from dgml.errors import Unauthorized
from registry.accounts import hash_token
from registry.models import Design, User, Version
from router import geo, records
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
        # End the read transaction first: on SQLite a write must begin as one (BEGIN IMMEDIATE).
        session.rollback()
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


def one_of(session: Session, column: Any, ids: list[str]) -> ColumnElement[bool]:
    """``column IN ids``; on PostgreSQL as ``= ANY(array)``, one parameter whatever the
    number of ids, so the statement is prepared once instead of once per list length."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam("ids", ids, type_=ARRAY(String)))
    return column.in_(ids)


def open_work(session: Session, fablab_ids: Iterable[str]) -> dict[tuple[str, str], int]:
    """Jobs running and offers open per (fablab, process): the queue placement scores."""
    ids = list(fablab_ids)
    if not ids:
        return {}
    parts = [
        select(model.fablab_id.label("fablab_id"), Order.process.label("process"))
        .join(OrderLine, OrderLine.id == model.line_id)
        .join(Order, Order.id == OrderLine.order_id)
        .where(one_of(session, model.fablab_id, ids), model.state == state)
        for model, state in ((Job, JobState.IN_PROGRESS), (Offer, OfferState.OPEN))
    ]
    work = union_all(*parts).subquery()
    rows = session.execute(
        select(work.c.fablab_id, work.c.process, func.count()).group_by(
            work.c.fablab_id, work.c.process
        )
    ).all()
    return {(fablab_id, process): count for fablab_id, process, count in rows}


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
    rows = session.scalars(select(Fablab).where(one_of(session, Fablab.id, ids))).all()
    queues = open_work(session, [row.id for row in rows])
    return {
        row.id: as_record(row, online=is_online(row.last_seen_at, online_s, now), queues=queues)
        for row in rows
    }


# --- what the directory API adds: processes, the geo index in step, enrolment, the board ------

# The processes a fablab may declare in the directory; the API refuses any other.
PROCESSES: tuple[str, ...] = ("fdm", "sla", "sls", "cnc", "laser")
# A GEOADD that keeps losing its WATCH to other writers gives way to a full rebuild.
_INDEX_ATTEMPTS = 20


def _located(sessions: sessionmaker[Session]) -> list[Any]:
    """Every fablab's id and position (rows with ``id``, ``lat``, ``lon``): what the index holds."""
    with sessions() as session:
        return list(session.execute(select(Fablab.id, Fablab.lat, Fablab.lon)).all())


def sync_geo_index(redis: Redis, sessions: sessionmaker[Session], *, key: str = geo.KEY) -> int:
    """Rebuild the geo index from the database (at start, or to repair it); how many it holds."""
    return geo.rebuild(redis, _located(sessions), key=key)


def ensure_geo_index(redis: Redis, sessions: sessionmaker[Session], *, key: str = geo.KEY) -> bool:
    """Rebuild the geo index only when its key is missing (Redis was wiped); True if it did."""
    return geo.ensure(redis, lambda: _located(sessions), key=key)


def index_fablab(
    redis: Redis,
    sessions: sessionmaker[Session],
    fablab_id: str,
    lat: float,
    lon: float,
    *,
    key: str = geo.KEY,
) -> None:
    """Put one fablab, already committed, at its position in the index.

    A plain GEOADD on a wiped Redis would create an index holding this fablab alone, which
    :func:`ensure_geo_index` would then take for whole. So the fablab is added only while the
    key exists (WATCH, then MULTI/EXEC); when it is missing, the whole index is rebuilt from the
    database, which already holds this fablab.
    """
    with redis.pipeline() as pipe:
        for _ in range(_INDEX_ATTEMPTS):
            try:
                pipe.watch(key)
                if not pipe.exists(key):
                    break
                pipe.multi()
                geo.add(pipe, fablab_id, lat, lon, key=key)
                pipe.execute()
                return
            except WatchError:
                continue  # the index changed meanwhile (another add, a rebuild): again
            finally:
                pipe.reset()
    sync_geo_index(redis, sessions, key=key)


def enrol_agent(
    session: Session, enrolment_token: str, *, now: datetime | None = None
) -> tuple[str, str]:
    """Exchange a one-time enrolment token for a new agent token: ``(fablab_id, agent_token)``.

    The UPDATE is conditional on the token's hash still being stored, so the exchange happens
    once: of two calls with one token, the later finds the hash gone and is refused. The new
    agent token replaces the fablab's previous one, which stops working at once. Enrolling
    counts as the agent's first call. Needs a write session; commits.
    """
    digest = hash_token(enrolment_token)
    fablab_id = session.scalar(select(Fablab.id).where(Fablab.enrolment_token_hash == digest))
    if fablab_id is not None:
        token, token_hash = new_token(AGENT_PREFIX)
        now = now or utcnow()
        done = session.execute(
            update(Fablab)
            .where(Fablab.id == fablab_id, Fablab.enrolment_token_hash == digest)
            .values(
                enrolment_token_hash=None,
                agent_token_hash=token_hash,
                enrolled_at=now,
                last_seen_at=now,
            )
        )
        if done.rowcount == 1:
            session.commit()
            return fablab_id, token
    session.rollback()
    hint = ""
    if enrolment_token.startswith(AGENT_PREFIX):
        hint = "; this is an agent token, enrolment takes the enrolment token"
    raise Unauthorized(
        "the enrolment token is not valid: unknown, replaced by a newer one, or already used "
        f"(each works once; the fablab's operator can ask for a fresh one){hint}"
    )


def near_clause(
    lat_col: InstrumentedAttribute[float],
    lon_col: InstrumentedAttribute[float],
    lat: float,
    lon: float,
    radius_km: float,
) -> ColumnElement[bool]:
    """A box of latitudes and longitudes holding every point within ``radius_km`` of
    ``(lat, lon)``, as SQL: an indexable first cut, refined by exact distances afterwards.

    The cap's widest longitude is ``asin(sin(r) / cos(lat))`` away (r the angular radius); a
    cap that holds a pole holds every longitude, and one across the antimeridian wraps.
    """
    angle = radius_km / geo.EARTH_RADIUS_KM
    slack = 1e-6  # degrees, against rounding at the box's edges
    dlat = math.degrees(angle) + slack
    south, north = lat - dlat, lat + dlat
    lat_ok = lat_col.between(max(south, -90.0), min(north, 90.0))
    reach = math.sin(angle) / max(math.cos(math.radians(lat)), 1e-12)
    if south <= -90.0 or north >= 90.0 or angle >= math.pi / 2 or reach >= 1.0:
        return lat_ok
    dlon = math.degrees(math.asin(reach)) + slack
    west, east = lon - dlon, lon + dlon
    if west < -180.0:
        lon_ok = or_(lon_col >= west + 360.0, lon_col <= east)
    elif east > 180.0:
        lon_ok = or_(lon_col >= west, lon_col <= east - 360.0)
    else:
        lon_ok = lon_col.between(west, east)
    return lat_ok & lon_ok


@dataclass(frozen=True, slots=True)
class BoardEntry:
    """An open offer or a job in progress on the public board: no maker, no delivery."""

    kind: str  # "offer" or "job"
    id: int
    order_id: int
    line: int
    design_owner: str
    design_name: str
    version: int
    process: str
    material: str
    quantity: int
    state: str
    distance_km: float
    expires_at: datetime | None
    created_at: datetime
    fablab_id: str
    fablab_name: str


def _board_rows(session: Session, kind: str, box: ColumnElement[bool], now: datetime) -> list[Any]:
    model: type[Offer] | type[Job] = Offer if kind == "offer" else Job
    if kind == "offer":
        quantity, expires = Offer.quantity, Offer.expires_at
        live = (Offer.state == OfferState.OPEN) & (Offer.expires_at > now)
    else:
        # A job has no expiry of its own: its lease is renewed while it runs.
        quantity, expires = OrderLine.quantity, null()
        live = Job.state == JobState.IN_PROGRESS
    query = (
        select(
            model.id,
            model.state,
            model.created_at,
            model.fablab_id,
            expires.label("expires_at"),
            quantity.label("quantity"),
            OrderLine.number,
            Order.id.label("order_id"),
            Order.process,
            Order.material,
            Order.lat,
            Order.lon,
            Design.name.label("design_name"),
            User.name.label("design_owner"),
            Version.number.label("version"),
            Fablab.name.label("fablab_name"),
        )
        .join(OrderLine, OrderLine.id == model.line_id)
        .join(Order, Order.id == OrderLine.order_id)
        .join(Design, Design.id == Order.design_id)
        .join(User, User.id == Design.owner_id)
        .join(Version, Version.id == Order.version_id)
        .join(Fablab, Fablab.id == model.fablab_id)
        .where(live, box)
    )
    return list(session.execute(query).all())


def board(
    session: Session,
    lat: float,
    lon: float,
    radius_km: float,
    *,
    limit: int,
    now: datetime | None = None,
) -> list[BoardEntry]:
    """Open offers (not expired) and jobs in progress of orders routed from within
    ``radius_km`` of ``(lat, lon)``, newest first, at most ``limit``."""
    now = now or utcnow()
    box = near_clause(Order.lat, Order.lon, lat, lon, radius_km)
    entries = []
    for kind in ("offer", "job"):
        for row in _board_rows(session, kind, box, now):
            km = geo.distance_km(lat, lon, row.lat, row.lon)
            if km > radius_km:
                continue
            entries.append(
                BoardEntry(
                    kind=kind,
                    id=row.id,
                    order_id=row.order_id,
                    line=row.number,
                    design_owner=row.design_owner,
                    design_name=row.design_name,
                    version=row.version,
                    process=row.process,
                    material=row.material,
                    quantity=row.quantity,
                    state=row.state,
                    distance_km=round(km, 3),
                    expires_at=row.expires_at,
                    created_at=row.created_at,
                    fablab_id=row.fablab_id,
                    fablab_name=row.fablab_name,
                )
            )
    entries.sort(key=lambda e: (e.created_at, e.kind == "job", e.id), reverse=True)
    return entries[:limit]
