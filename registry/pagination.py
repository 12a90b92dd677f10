"""Opaque cursors for keyset pagination: a listing ordered by id descending continues below
the last id it returned, so pages stay stable while new rows arrive."""

from __future__ import annotations

import base64

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
