"""The moves every part of the router makes on orders: log an event, change a line's state,
derive the order's overall state, and ask for a (new) placement of a line.

All of them only add to the caller's session: the caller commits, so that a state change, its
event and the outbox row that carries the next step are one transaction (nothing lost).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dgml import outbox
from dgml.db import utcnow
from router.models import FINAL_STATES, Order, OrderEvent, OrderLine, OrderState

PLACE_TOPIC = "order.place"
outbox.register(
    PLACE_TOPIC, outbox.Topic(queue="route", function="router.routing.place_line", timeout_s=300)
)

# Which state an order shows while its lines differ: the first in this list that a line is in.
_ACTIVE_ORDER = (
    OrderState.DISCONNECTED,  # an operator must look at it
    OrderState.ACCEPTED,
    OrderState.ROUTING,
    OrderState.OFFERED,
    OrderState.IN_PROGRESS,
)
# When every line has ended: the worst outcome wins.
_FINAL_ORDER = (
    OrderState.FAILED,
    OrderState.UNPLACEABLE,
    OrderState.CANCELLED,
    OrderState.COMPLETED,
)


def add_event(
    session: Session,
    order_id: int,
    kind: str,
    *,
    line: OrderLine | None = None,
    fablab_id: str | None = None,
    alert: bool = False,
    **data: Any,
) -> OrderEvent:
    """Append to the order's public log. ``data`` must hold nothing private (no delivery)."""
    event = OrderEvent(
        order_id=order_id,
        line_number=line.number if line is not None else None,
        kind=kind,
        fablab_id=fablab_id,
        alert=alert,
        data=data,
        at=utcnow(),
    )
    session.add(event)
    return event


def overall_state(states: list[str]) -> OrderState:
    """The order's state from its lines' states."""
    present = {OrderState(s) for s in states}
    for state in _ACTIVE_ORDER:
        if state in present:
            return state
    for state in _FINAL_ORDER:
        if state in present:
            return state
    return OrderState.ACCEPTED


def refresh_order(session: Session, order: Order) -> OrderState:
    """Set the order's state from its lines (call after changing a line); the new state."""
    if order.lines:
        state = overall_state([line.state for line in order.lines])
        if state != order.state:
            order.state = state
        order.updated_at = utcnow()
    return OrderState(order.state)


def set_line_state(
    session: Session, line: OrderLine, state: OrderState, *, reason: str | None = None
) -> None:
    """Move a line to ``state`` (with the reason, when it ended badly) and refresh its order."""
    line.state = state
    if reason is not None:
        line.reason = reason
    line.updated_at = utcnow()
    refresh_order(session, line.order)


def request_placement(
    session: Session, line: OrderLine, *, reason: str, exclude: str | None = None
) -> None:
    """Put the line (back) to ``routing`` and post its next placement to the outbox.

    ``exclude`` names a fablab never to offer this line again (it declined, let the offer
    expire, or failed). Each placement attempt has its own job id, so a retried post of the
    same attempt is one job and a new attempt is a new one.
    """
    if OrderState(line.state) in FINAL_STATES:
        raise ValueError(f"line {line.id} has ended ({line.state}); it is not placed again")
    if exclude is not None and exclude not in line.excluded:
        line.excluded = [*line.excluded, exclude]
    line.attempt += 1
    line.fablab_id = None
    set_line_state(session, line, OrderState.ROUTING)
    add_event(session, line.order_id, "routing", line=line, attempt=line.attempt, reason=reason)
    session.flush()  # the line's id exists before it goes in the payload
    outbox.post(
        session,
        PLACE_TOPIC,
        key=f"place-{line.id}-{line.attempt}",
        payload={"line_id": line.id, "attempt": line.attempt},
    )


def lock_lines(session: Session, order_id: int) -> list[OrderLine]:
    """The order's lines, locked and read afresh, by number (lock the order first)."""
    return list(
        session.scalars(
            select(OrderLine)
            .where(OrderLine.order_id == order_id)
            .order_by(OrderLine.number)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()
    )
