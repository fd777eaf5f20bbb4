"""Keyset cursors: an opaque token for the position after one row in a newest-first (created_at, id) order.

One codec for every paged read (`list_runs`, the HTTP inbox). A cursor comes back from a caller, so decoding
trusts nothing: anything that is not a position this codec made is `InvalidRequest`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime

from tocsin.core.errors import InvalidRequest


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        moment, _, row_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None:
            raise ValueError("a cursor's moment has a time zone")
        # In UTC, as the database compares it: a moment at the edge of the calendar cannot be one.
        return created_at.astimezone(UTC), uuid.UUID(row_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise InvalidRequest(f"invalid cursor {cursor!r}: not a cursor this API returned") from exc


# Where a keyset-paged sweep starts: before every (moment, id).
BEFORE_ALL: tuple[datetime, uuid.UUID] = (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))
