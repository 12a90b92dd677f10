"""Opaque cursors for keyset pagination: a listing ordered by id descending continues below
the last id it returned, so pages stay stable while new rows arrive."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from dgml.errors import Invalid


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind != "id":
            raise ValueError
        number = int(value)
        if not 0 <= number < 2**31:  # ids are 32-bit integers on every backend
            raise ValueError
        return number
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the cursor is not one this server gave out", field="cursor") from None


def keyset_page(
    session: Session,
    query: Select[Any],
    key: InstrumentedAttribute[int],
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[Any], str | None]:
    """One page of ``query`` ordered by ``key`` descending, starting below ``cursor``: the rows
    and the cursor of the next page (None on the last)."""
    if cursor:
        query = query.where(key < decode_cursor(cursor))
    rows = session.scalars(query.order_by(key.desc()).limit(limit + 1)).unique().all()
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor(getattr(rows[limit - 1], key.key))
