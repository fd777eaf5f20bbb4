"""The keyset cursor codec shared by `list_runs` and the HTTP inbox: opaque, and nothing else decodes."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tocsin.core.cursors import decode_cursor, encode_cursor
from tocsin.core.errors import InvalidRequest


def test_a_cursor_decodes_to_the_position_it_was_made_from() -> None:
    moment, row_id = datetime(2026, 12, 1, 8, 30, 0, 123456, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(moment, row_id)) == (moment, row_id)
    # Another offset is the same instant, compared in UTC.
    local = moment.astimezone(timezone(timedelta(hours=2)))
    assert decode_cursor(encode_cursor(local, row_id)) == (moment, row_id)


def raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 at all!",
        raw("2026-12-01T08:30:00|not-a-uuid"),
        raw(f"2026-12-01T08:30:00|{uuid.uuid4()}"),  # no time zone
        raw(f"yesterday|{uuid.uuid4()}"),
        # Valid ISO moments whose UTC instant is outside the calendar (asyncpg would overflow on them).
        raw(f"0001-01-01T00:00:00+14:00|{uuid.uuid4()}"),
        raw(f"9999-12-31T23:59:59-14:00|{uuid.uuid4()}"),
        base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
    ],
)
def test_anything_else_is_an_invalid_request(cursor: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid cursor"):
        decode_cursor(cursor)
