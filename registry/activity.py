"""The public activity log of each design: who did what, and when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import Design, DesignEvent, User
from registry.pagination import keyset_page
from registry.schemas import EventPublic, Page


def record(session: Session, design: Design, event: str, actor: User, **data: Any) -> None:
    session.add(DesignEvent(design_id=design.id, kind=event, actor_id=actor.id, data=data))


def list_events(
    session: Session, design: Design, cursor: str | None, limit: int
) -> Page[EventPublic]:
    query = select(DesignEvent).where(DesignEvent.design_id == design.id)
    rows, next_cursor = keyset_page(session, query, DesignEvent.id, cursor, limit)
    full_name = f"{design.owner.name}/{design.name}"
    items = [
        EventPublic(
            id=row.id,
            design=full_name,
            kind=row.kind,
            actor=row.actor.name,
            created_at=row.created_at,
            data=row.data,
        )
        for row in rows
    ]
    return Page(items=items, next_cursor=next_cursor)
