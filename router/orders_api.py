"""HTTP routes of orders: place one (or ask what would happen), follow it, list yours, cancel.

An order is public, like the designs it is made from: its state, lines, the placement decision
with its explanation and its event log are visible to all (holoptism). What is personal is not:
the delivery details are shown to the maker alone (and, through the agent API, to the fablab
that accepted the job), the maker's name is not shown to others, and the location is the
routing one, rounded to about 1 km.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request, Response
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dgml import outbox
from dgml.db import utcnow, write_session
from dgml.deps import Caller, Principal, ServicesDep, SessionDep, authenticated, bearer_token
from dgml.errors import Conflict, Forbidden, Invalid, NotFound
from registry.models import Design, User, Version
from registry.pagination import keyset_page
from registry.web import Cursor, RequestId, page_size
from router import facts, orders, routing
from router.lifecycle import add_event, lock_lines, refresh_order, set_line_state
from router.models import Fablab, Offer, OfferState, Order, OrderEvent, OrderState
from router.notify import notify_offer

router = APIRouter(prefix="/api/v1", tags=["orders"])


class LocationOut(BaseModel):
    lat: float
    lon: float


class FablabRef(BaseModel):
    id: str
    name: str | None = None


class LinePublic(BaseModel):
    number: int
    quantity: int
    state: str
    reason: str | None = None
    fablab: FablabRef | None = None
    attempt: int
    distance_km: float | None = None
    km_avoided: float | None = None
    offer_expires_at: datetime | None = None


class EventPublic(BaseModel):
    at: datetime
    kind: str
    line: int | None = None
    fablab_id: str | None = None
    data: dict[str, Any]
    alert: bool = False


class OrderSummary(BaseModel):
    id: int
    state: str
    design: str
    version: int
    process: str
    material: str
    quantity: int
    created_at: datetime
    updated_at: datetime


class OrderPublic(OrderSummary):
    reason: str | None = None
    files: list[str] | None = None
    params: dict[str, Any] | None = None
    location: LocationOut
    purpose: str
    lines: list[LinePublic]
    # The first placement's decision: candidates, why each refused one was refused, the winner's
    # distance and expected wait, km avoided against the central factory.
    decision: dict[str, Any] | None = None
    events: list[EventPublic]
    # Only in the maker's own view.
    mine: bool = False
    delivery: dict[str, Any] | None = None
    idempotency_key: str | None = None


class OrderPage(BaseModel):
    items: list[OrderSummary]
    next_cursor: str | None = None


class DryRun(BaseModel):
    """What placing this order would do now; nothing is stored."""

    dry_run: bool = True
    state: str
    reason: str | None = None
    decision: dict[str, Any] | None = None


def optional_caller(request: Request, services: ServicesDep) -> Principal | None:
    """The caller when a token is sent (a wrong token is still a 401), else None."""
    if bearer_token(request) is None:
        return None
    return authenticated(request, services)


MaybeCaller = Annotated[Principal | None, Depends(optional_caller)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="the same key again answers the same order"),
]


# --- views ---------------------------------------------------------------------------------------


def _labels(session: Session, items: list[Order]) -> dict[int, tuple[str, int]]:
    """Order id -> (owner/name, version number)."""
    version_ids = {o.version_id for o in items}
    rows = session.execute(
        select(Version.id, Version.number, User.name, Design.name)
        .join(Design, Design.id == Version.design_id)
        .join(User, User.id == Design.owner_id)
        .where(Version.id.in_(version_ids))
    ).all()
    by_version = {vid: (f"{owner}/{name}", number) for vid, number, owner, name in rows}
    return {o.id: by_version[o.version_id] for o in items}


def summary(order: Order, label: tuple[str, int]) -> OrderSummary:
    return OrderSummary(
        id=order.id,
        state=order.state,
        design=label[0],
        version=label[1],
        process=order.process,
        material=order.material,
        quantity=order.quantity,
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


def order_view(session: Session, order: Order, viewer: Principal | None) -> OrderPublic:
    mine = viewer is not None and viewer.id == order.owner_id
    lines = list(order.lines)
    at = {line.fablab_id for line in lines if line.fablab_id}
    names = (
        dict(session.execute(select(Fablab.id, Fablab.name).where(Fablab.id.in_(at))).all())
        if at
        else {}
    )
    offered = [line.id for line in lines if line.state == OrderState.OFFERED]
    offers = orders.open_offers(session, offered)
    events = session.scalars(
        select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id)
    ).all()
    reason = order.reason or next(
        (line.reason for line in lines if line.state == order.state and line.reason), None
    )
    version = facts.version(session, order.version_id)
    assert version is not None  # versions are never deleted
    base = summary(order, (version.label, version.number))
    return OrderPublic(
        **base.model_dump(),
        reason=reason,
        files=order.files,
        params=order.params,
        location=LocationOut(lat=order.lat, lon=order.lon),
        purpose=order.purpose,
        lines=[
            LinePublic(
                number=line.number,
                quantity=line.quantity,
                state=line.state,
                reason=line.reason,
                fablab=FablabRef(id=line.fablab_id, name=names.get(line.fablab_id))
                if line.fablab_id
                else None,
                attempt=line.attempt,
                distance_km=line.distance_km,
                km_avoided=line.km_avoided,
                offer_expires_at=offers[line.id].expires_at if line.id in offers else None,
            )
            for line in lines
        ],
        decision=order.decision,
        events=[
            EventPublic(
                at=e.at,
                kind=e.kind,
                line=e.line_number,
                fablab_id=e.fablab_id,
                data=e.data,
                alert=e.alert,
            )
            for e in events
        ],
        mine=mine,
        delivery=order.delivery if mine else None,
        idempotency_key=order.idempotency_key if mine else None,
    )


def _view(services, order_id: int, viewer: Principal | None) -> OrderPublic:
    with services.sessions() as session:
        return order_view(session, orders.get_order(session, order_id), viewer)


# --- cancelling --------------------------------------------------------------------------------

_CANCELLABLE = frozenset({OrderState.ACCEPTED, OrderState.ROUTING, OrderState.OFFERED})
_AT_FABLAB = frozenset({OrderState.IN_PROGRESS, OrderState.DISCONNECTED})


def cancel(session: Session, order_id: int, user_id: int) -> list[str]:
    """Cancel what has not started: withdraw open offers, cancel lines not yet at a fablab;
    lines in progress are left to their fablab (the log says so). The fablabs whose offers
    were withdrawn (to wake their agents once committed)."""
    order = session.get(Order, order_id, with_for_update=True, populate_existing=True)
    if order is None:
        raise NotFound(f"no order {order_id}")
    if order.owner_id != user_id:
        raise Forbidden("only the maker who placed an order may cancel it")
    lines = lock_lines(session, order.id)
    cancellable = [line for line in lines if OrderState(line.state) in _CANCELLABLE]
    at_fablab = [line for line in lines if OrderState(line.state) in _AT_FABLAB]
    if not cancellable:
        if order.state == OrderState.CANCELLED or at_fablab:
            return []
        raise Conflict(f"order {order.id} has already ended ({order.state})", state=order.state)
    offers = _lock_open_offers(session, [line.id for line in cancellable])
    withdrawn: list[str] = []
    now = utcnow()
    for line in cancellable:
        offer = offers.get(line.id)
        if offer is not None:
            offer.state, offer.decided_at = OfferState.WITHDRAWN, now
            offer.reason = "the maker cancelled the order"
            withdrawn.append(offer.fablab_id)
            add_event(session, order.id, "offer_withdrawn", line=line, fablab_id=offer.fablab_id)
        set_line_state(session, line, OrderState.CANCELLED, reason="cancelled by the maker")
        add_event(session, order.id, "cancelled", line=line)
    for line in at_fablab:
        add_event(
            session,
            order.id,
            "cancel_left_to_fablab",
            line=line,
            fablab_id=line.fablab_id,
            detail=f"line {line.number} is {line.state} at its fablab: it is left to finish",
        )
    refresh_order(session, order)
    return withdrawn


def _lock_open_offers(session: Session, line_ids: list[int]) -> dict[int, Offer]:
    rows = session.scalars(
        select(Offer)
        .where(Offer.line_id.in_(line_ids), Offer.state == OfferState.OPEN)
        .with_for_update(of=Offer)
        .execution_options(populate_existing=True)
    ).all()
    return {offer.line_id: offer for offer in rows}


# --- routes -------------------------------------------------------------------------------------


def dry_run(services, data: orders.OrderIn) -> DryRun:
    """The decision for this order as if it were placed now."""
    with services.sessions() as session:
        target, (lat, lon) = orders.check_request(session, services.settings, services.blobs, data)
        part = routing.dry_run_part(session, target)
        if isinstance(part, routing.Waiting):
            return DryRun(state=OrderState.ROUTING, reason=part.reason)
        if isinstance(part, routing.Broken):
            return DryRun(state=OrderState.FAILED, reason=part.reason)
        draft = Order(
            process=data.process,
            material=data.material,
            lat=lat,
            lon=lon,
            purpose=data.purpose,
            params=data.params,
        )
        request = routing.order_request(draft, target.version, part, data.quantity)
        try:
            decision = routing.decide(session, services.redis, request, services.settings)
        except RedisError:
            decision = routing.decide(session, None, request, services.settings)
    placed = decision.winner is not None and bool(decision.lines)
    return DryRun(
        state=OrderState.OFFERED if placed else OrderState.UNPLACEABLE,
        reason=None if placed else routing.why_nowhere(decision),
        decision=routing.stored(decision),
    )


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderPublic | DryRun,
    responses={200: {"description": "the order this Idempotency-Key made, or a dry run"}},
)
async def post_order(
    data: orders.OrderIn,
    caller: Caller,
    services: ServicesDep,
    response: Response,
    background: BackgroundTasks,
    idempotency_key: IdempotencyKey = None,
    dry_run_: Annotated[bool, Query(alias="dry_run", description="decide, store nothing")] = False,
) -> OrderPublic | DryRun:
    """Order parts made near you (201), or get back the order this Idempotency-Key already
    made (200). With ``dry_run=true``, answer the placement decision without storing anything."""
    if dry_run_:
        response.status_code = 200
        return await run_in_threadpool(dry_run, services, data)
    key = orders.check_key(idempotency_key)

    def create() -> OrderPublic:
        created = orders.create_order(
            services.sessions,
            services.settings,
            services.blobs,
            caller.id,
            key,
            data,
            view=lambda session, order: order_view(session, order, caller),
        )
        if created.outbox and services.redis is not None:
            background.add_task(outbox.send, services.sessions, services.redis, created.outbox)
        if not created.new:
            response.status_code = 200
        return created.view

    return await run_in_threadpool(create)


@router.get("/orders", response_model=OrderPage)
def list_orders(
    caller: Caller,
    services: ServicesDep,
    session: SessionDep,
    cursor: Cursor = None,
    limit: int | None = None,
    state: Annotated[str | None, Query(description="only the orders in this state")] = None,
) -> OrderPage:
    """Your own orders, newest first."""
    query = select(Order).where(Order.owner_id == caller.id)
    if state:
        try:
            query = query.where(Order.state == OrderState(state.strip().casefold()))
        except ValueError:
            known = ", ".join(s.value for s in OrderState)
            raise Invalid(f"unknown state {state!r}: use one of {known}", field="state") from None
    rows, next_cursor = keyset_page(session, query, Order.id, cursor, page_size(services, limit))
    labels = _labels(session, list(rows)) if rows else {}
    return OrderPage(items=[summary(o, labels[o.id]) for o in rows], next_cursor=next_cursor)


@router.get("/orders/{order_id}", response_model=OrderPublic)
def get_order(order_id: RequestId, viewer: MaybeCaller, services: ServicesDep) -> OrderPublic:
    """An order's state, lines, placement decision and event log: public, but for the delivery
    details, which only its maker sees."""
    return _view(services, order_id, viewer)


@router.post("/orders/{order_id}/cancel", response_model=OrderPublic)
def cancel_order(order_id: RequestId, caller: Caller, services: ServicesDep) -> OrderPublic:
    """Cancel what has not started: open offers are withdrawn and lines not yet at a fablab
    cancelled; lines in progress are left to their fablab, and the event log says so."""
    with write_session(services.sessions) as session:
        withdrawn = cancel(session, order_id, caller.id)
    for fablab_id in dict.fromkeys(withdrawn):
        notify_offer(services.redis, fablab_id)
    return _view(services, order_id, caller)
