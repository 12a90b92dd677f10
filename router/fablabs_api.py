"""HTTP routes of the fablab directory under ``/api/v1``: operators register and update their
fablabs, agents enrol, and anyone reads the directory and the board of work near a fablab.

Everything here is public but the token hashes and who operates a fablab beyond their user
name. The database is the truth; the Redis geo index follows each committed change (a change
that cannot reach Redis is not refused: the index is rebuilt from the database at start, and
whenever its key is missing).
"""

from __future__ import annotations

import base64
import logging
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import String, cast, or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dgml.db import WRITE, utcnow
from dgml.deps import Caller, Principal, Services, ServicesDep, SessionDep, WriteSessionDep
from dgml.errors import Conflict, Forbidden, Invalid, NotFound
from registry.models import User
from registry.schemas import Page
from registry.web import Cursor, page_size
from router import directory, geo
from router.directory import ENROLMENT_PREFIX, new_token
from router.fablabs_schemas import (
    Board,
    BoardItem,
    DesignAt,
    Enrolled,
    EnrolmentToken,
    EnrolRequest,
    FablabCreate,
    FablabCreated,
    FablabListed,
    FablabPublic,
    FablabUpdate,
    LocationOut,
    Process,
    fold,
)
from router.models import Fablab

log = logging.getLogger("dgml.router.fablabs")

# Room left in a 64-character id for a "-<n>" suffix on a name already taken.
SLUG_BASE_MAX = 56
MAX_RADIUS_KM = 2000.0
BOARD_RADIUS_KM = 50.0
# Rounds of a race between registrations of one name (each round settles one of them).
ID_ATTEMPTS = 32


@asynccontextmanager
async def _index_at_start(app: FastAPI) -> AsyncIterator[None]:
    """Rebuild the geo index from the database when the app starts: Redis may have been wiped
    or changes missed while it was away. A Redis that does not answer delays nothing."""
    services: Services | None = getattr(app.state, "services", None)
    if services is not None and services.redis is not None:
        try:
            count = await run_in_threadpool(
                directory.sync_geo_index, services.redis, services.sessions
            )
            log.info("geo index rebuilt with %d fablabs", count)
        except (RedisError, SQLAlchemyError) as exc:
            log.warning("geo index not rebuilt at start (%s); it will be when found missing", exc)
    yield


router = APIRouter(prefix="/api/v1", tags=["fablabs"], lifespan=_index_at_start)


# --- helpers ----------------------------------------------------------------------------------


def slugify(name: str) -> str:
    """A fablab id from its name: ASCII lower-case letters, digits and single dashes."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.casefold()).strip("-")
    return slug[:SLUG_BASE_MAX].rstrip("-") or "fablab"


def _free_id(session: Session, base: str) -> str:
    """``base``, or ``base-2``, ``base-3`` ... whichever is free first."""
    taken = set(
        session.scalars(
            select(Fablab.id).where(or_(Fablab.id == base, Fablab.id.like(base + "-%")))
        )
    )
    number = 2
    candidate = base
    while candidate in taken:
        candidate = f"{base}-{number}"
        number += 1
    return candidate


def _get(session: Session, fablab_id: str) -> Fablab:
    row = session.get(Fablab, fablab_id) if len(fablab_id) <= 64 else None
    if row is None:
        raise NotFound(f"no fablab {fablab_id!r}")
    return row


def _operators(session: Session, rows: Sequence[Fablab]) -> dict[int, str]:
    ids = {row.operator_id for row in rows if row.operator_id is not None}
    if not ids:
        return {}
    query = select(User.id, User.name).where(User.id.in_(ids))
    return {user_id: name for user_id, name in session.execute(query)}


def _public(row: Fablab, operators: dict[int, str], services: Services) -> dict[str, Any]:
    """The public fields of a fablab (for any of the response models)."""
    return {
        "id": row.id,
        "name": row.name,
        "location": LocationOut(lat=row.lat, lon=row.lon),
        "legal_form": row.legal_form,
        "machines": row.machines,
        "contact": row.contact or {},
        "price": row.price,
        "opening_hours": row.opening_hours,
        "operator": operators.get(row.operator_id) if row.operator_id is not None else None,
        "online": directory.is_online(row.last_seen_at, services.settings.agent_online_s),
        "last_seen_at": row.last_seen_at,
        "enrolled_at": row.enrolled_at,
        "created_at": row.created_at,
    }


def _index(services: Services, row: Fablab) -> None:
    """Follow a committed change in the geo index; Redis away is logged, not an error."""
    if services.redis is None:
        return
    try:
        directory.index_fablab(services.redis, services.sessions, row.id, row.lat, row.lon)
    except RedisError as exc:
        log.warning("fablab %s not indexed now (%s); the index is rebuilt later", row.id, exc)


def _dump(value: BaseModel | None) -> dict[str, Any] | None:
    return None if value is None else value.model_dump(mode="json", exclude_none=True)


# --- registration and changes -----------------------------------------------------------------


@router.post("/fablabs", response_model=FablabCreated, status_code=201)
def register_fablab(
    data: FablabCreate, caller: Caller, session: WriteSessionDep, services: ServicesDep
) -> FablabCreated:
    """Register a fablab operated by the caller; the answer holds its agent's enrolment token,
    shown this once."""
    # Registrations of one name at once each take the next free id: every round of a race
    # settles one of them, so the attempts bound how many may race.
    for _ in range(ID_ATTEMPTS):
        if data.id is not None and session.get(Fablab, data.id) is not None:
            raise Conflict(f"the fablab id {data.id!r} is taken", field="id")
        token, digest = new_token(ENROLMENT_PREFIX)
        row = Fablab(
            id=data.id or _free_id(session, slugify(data.name)),
            name=data.name,
            lat=data.location.lat,
            lon=data.location.lon,
            legal_form=data.legal_form.value,
            machines=[_dump(m) for m in data.machines],
            contact=_dump(data.contact) or {},
            price=_dump(data.price),
            opening_hours=data.opening_hours,
            operator_id=caller.id,
            enrolment_token_hash=digest,
            created_at=utcnow(),
        )
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            # Another registration took the same id between our look and our insert.
            session.rollback()
            session.connection(execution_options=WRITE)
            continue
        _index(services, row)
        public = _public(row, {caller.id: caller.name}, services)
        return FablabCreated(**public, enrolment_token=token)
    raise Conflict("no free id was found for this name; try again or give an id", field="id")


def _may_change(caller: Principal, row: Fablab) -> None:
    if row.operator_id != caller.id and not caller.is_admin:
        raise Forbidden(f"only the operator of {row.id!r} (or an admin) may change it")


@router.patch("/fablabs/{fablab_id}", response_model=FablabPublic)
def update_fablab(
    fablab_id: str,
    data: FablabUpdate,
    caller: Caller,
    session: WriteSessionDep,
    services: ServicesDep,
) -> FablabPublic:
    """Change a fablab's description; by its operator or an admin."""
    row = _get(session, fablab_id)
    _may_change(caller, row)
    given = data.model_fields_set
    for field in ("name", "location", "legal_form", "machines"):
        if field in given and getattr(data, field) is None:
            raise Invalid(f"{field}: may be changed but not removed", field=field)
    if data.name is not None:
        row.name = data.name
    if data.location is not None:
        row.lat, row.lon = data.location.lat, data.location.lon
    if data.legal_form is not None:
        row.legal_form = data.legal_form.value
    if data.machines is not None:
        row.machines = [_dump(m) for m in data.machines]
    if "contact" in given:
        row.contact = _dump(data.contact) or {}
    if "price" in given:
        row.price = _dump(data.price)
    if "opening_hours" in given:
        row.opening_hours = data.opening_hours
    session.commit()
    if data.location is not None:
        _index(services, row)
    return FablabPublic(**_public(row, _operators(session, [row]), services))


@router.post("/fablabs/{fablab_id}/enrolment-token", response_model=EnrolmentToken, status_code=201)
def new_enrolment_token(fablab_id: str, caller: Caller, session: WriteSessionDep) -> EnrolmentToken:
    """A fresh enrolment token for the fablab's agent, replacing any unused one. The agent
    token in use stays valid until an agent enrols with the new token."""
    row = _get(session, fablab_id)
    if row.operator_id != caller.id:
        raise Forbidden(f"only the operator of {row.id!r} may enrol its agent")
    token, row.enrolment_token_hash = new_token(ENROLMENT_PREFIX)
    session.commit()
    return EnrolmentToken(fablab_id=row.id, enrolment_token=token)


@router.post("/agent/enroll", response_model=Enrolled, tags=["agent"])
def enroll(data: EnrolRequest, session: WriteSessionDep) -> Enrolled:
    """Exchange the one-time enrolment token for the agent token (shown once)."""
    fablab_id, token = directory.enrol_agent(session, data.enrolment_token)
    return Enrolled(agent_token=token, fablab_id=fablab_id)


# --- reading ----------------------------------------------------------------------------------


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str, kind: str) -> str:
    """The position a cursor of ``kind`` holds, or 422."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    found, _, value = text.partition(":")
    if found != kind or not value:
        raise Invalid("the cursor is not one this listing gave out", field="cursor")
    return value


def _like(value: str) -> str | None:
    """A LIKE pattern for ``"value"`` in the machines' JSON text, when the value is written
    there verbatim (no escapes, no wildcards); a first cut that never drops a match."""
    return f'%"{value}"%' if re.fullmatch(r"[a-z0-9][a-z0-9 .+/-]*", value) else None


def _matcher(process: str | None, material: str | None) -> Callable[[list[dict]], bool]:
    def match(machines: list[dict[str, Any]]) -> bool:
        return any(
            (process is None or m.get("process") == process)
            and (material is None or material in m.get("materials", ()))
            for m in machines
        )

    return match


def _by_id(session: Session, terms: list[str], match, after: str | None, limit: int):
    """A page in id order of the fablabs whose machines match: ``(rows, more)``."""
    base = select(Fablab).order_by(Fablab.id)
    for term in terms:
        if (pattern := _like(term)) is not None:
            base = base.where(cast(Fablab.machines, String).like(pattern))
    batch, rows = max(4 * limit, 100), []
    while True:
        query = base if after is None else base.where(Fablab.id > after)
        got = session.scalars(query.limit(batch)).all()
        rows += [row for row in got if match(row.machines)]
        if len(rows) > limit or len(got) < batch:
            return rows[:limit], len(rows) > limit
        after = got[-1].id


def _by_distance(session, lat, lon, radius_km, match, after, limit):
    """A page, nearest first, of the matching fablabs within ``radius_km``:
    ``([(row, km)], more)``."""
    box = directory.near_clause(Fablab.lat, Fablab.lon, lat, lon, radius_km)
    near = []
    for fablab_id, flat, flon, machines in session.execute(
        select(Fablab.id, Fablab.lat, Fablab.lon, Fablab.machines).where(box)
    ):
        km = round(geo.distance_km(lat, lon, flat, flon), 6)
        if km <= radius_km and match(machines) and (after is None or (km, fablab_id) > after):
            near.append((km, fablab_id))
    near.sort()
    page = near[:limit]
    rows = {
        r.id: r for r in session.scalars(select(Fablab).where(Fablab.id.in_(i for _, i in page)))
    }
    return [(rows[i], km) for km, i in page if i in rows], len(near) > limit


def _parse_near(near: str) -> tuple[float, float]:
    lat, sep, lon = near.partition(",")
    if not sep:
        raise Invalid("near: give a place as 'lat,lon', e.g. near=48.11,-1.68", field="near")
    try:
        return geo.check_location(float(lat), float(lon), field="near")
    except ValueError:
        raise Invalid(f"near: {near!r} is not 'lat,lon' in degrees", field="near") from None


@router.get("/fablabs", response_model=Page[FablabListed])
def list_fablabs(
    services: ServicesDep,
    session: SessionDep,
    process: Process | None = None,
    material: Annotated[str | None, Query(max_length=64)] = None,
    near: Annotated[str | None, Query(max_length=100, description="lat,lon")] = None,
    radius_km: Annotated[float | None, Query(gt=0, le=MAX_RADIUS_KM, allow_inf_nan=False)] = None,
    cursor: Cursor = None,
    limit: int | None = None,
) -> Page[FablabListed]:
    """The directory a page at a time: in id order, or nearest first with ``near``."""
    size = page_size(services, limit)
    material = fold(material) or None
    match = _matcher(process, material)
    if near is None:
        if radius_km is not None:
            raise Invalid("radius_km: give the centre too, as near=lat,lon", field="radius_km")
        after = _decode(cursor, "id") if cursor else None
        terms = [t for t in (process, material) if t]
        rows, more = _by_id(session, terms, match, after, size)
        listed = [(row, None) for row in rows]
        next_cursor = _encode("id:" + rows[-1].id) if more else None
    else:
        lat, lon = _parse_near(near)
        radius = radius_km or BOARD_RADIUS_KM
        after_km = None
        if cursor:
            km, _, last = _decode(cursor, "near").partition(" ")
            try:
                after_km = (float(km), last)
            except ValueError:
                raise Invalid(
                    "the cursor is not one this listing gave out", field="cursor"
                ) from None
        listed, more = _by_distance(session, lat, lon, radius, match, after_km, size)
        last_row, last_km = listed[-1] if listed else (None, 0.0)
        next_cursor = _encode(f"near:{last_km!r} {last_row.id}") if more and last_row else None
    operators = _operators(session, [row for row, _ in listed])
    items = [
        FablabListed(**_public(row, operators, services), distance_km=km) for row, km in listed
    ]
    return Page[FablabListed](items=items, next_cursor=next_cursor)


@router.get("/fablabs/{fablab_id}", response_model=FablabPublic)
def get_fablab(fablab_id: str, session: SessionDep, services: ServicesDep) -> FablabPublic:
    """A fablab's public description, and whether its agent is online."""
    row = _get(session, fablab_id)
    return FablabPublic(**_public(row, _operators(session, [row]), services))


@router.get("/fablabs/{fablab_id}/board", response_model=Board)
def fablab_board(
    fablab_id: str,
    session: SessionDep,
    services: ServicesDep,
    radius_km: Annotated[float, Query(gt=0, le=MAX_RADIUS_KM, allow_inf_nan=False)] = (
        BOARD_RADIUS_KM
    ),
    limit: int | None = None,
) -> Board:
    """Open offers and jobs in progress near this fablab, newest first: what needs making
    around it, whoever holds it. Never who ordered or where it goes."""
    row = _get(session, fablab_id)
    entries = directory.board(
        session, row.lat, row.lon, radius_km, limit=page_size(services, limit)
    )
    return Board(
        fablab_id=row.id,
        radius_km=radius_km,
        items=[
            BoardItem(
                kind=e.kind,
                id=e.id,
                order_id=e.order_id,
                line=e.line,
                design=DesignAt(owner=e.design_owner, name=e.design_name, version=e.version),
                process=e.process,
                material=e.material,
                quantity=e.quantity,
                state=e.state,
                distance_km=e.distance_km,
                expires_at=e.expires_at,
                created_at=e.created_at,
                fablab={"id": e.fablab_id, "name": e.fablab_name},
            )
            for e in entries
        ],
    )
