"""The recipient's feed behind the HTTP routes (SPEC 12.2): pages, counts, receipts, archive, read-all.

Read and seen go through the engine's `stamp_receipt`, and read-all through `route_in`, so the HTTP inbox
sends exactly the signals `Tocsin.mark_read` / `mark_seen` send.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.cursors import decode_cursor, encode_cursor
from tocsin.core.errors import InvalidRequest
from tocsin.db import Database
from tocsin.db import recipients as q
from tocsin.engine.inbox import RECEIPT_SIGNALS, stamp_receipt
from tocsin.engine.signals import route_in
from tocsin.http.tokens import Principal


class InboxItem(BaseModel):
    id: uuid.UUID
    run_id: uuid.UUID
    step_key: str
    workflow_key: str
    content: dict[str, Any]
    created_at: datetime
    seen_at: datetime | None
    read_at: datetime | None
    archived_at: datetime | None


class Counts(BaseModel):
    unread_count: int
    unseen_count: int


class InboxPage(Counts):
    items: list[InboxItem]
    next_cursor: str | None


class Stamped(BaseModel):
    stamped: int


class ItemNotFound(LookupError):
    """Not this recipient's item (or no such id): answered as 404, revealing nothing."""


class BadCursor(ValueError):
    """A `cursor` query parameter that is not one this API returned: a 422 naming the field."""


def _who(who: Principal) -> dict[str, str]:
    return {"b_tenant_id": who.tenant_id, "b_recipient": who.recipient}


async def counts(conn: AsyncConnection, who: Principal) -> Counts:
    row = (await conn.execute(q.COUNTS, _who(who))).mappings().one()
    return Counts.model_validate(dict(row))


async def page(
    db: Database, who: Principal, *, limit: int, cursor: str | None, unread: bool | None, archived: bool
) -> InboxPage:
    """Newest first, by (created_at, id): a page never repeats or skips an item, whatever arrives meanwhile."""
    params: dict[str, Any] = {**_who(who), "limit": limit + 1}
    if cursor is not None:
        try:
            params["after_created"], params["after_id"] = decode_cursor(cursor)
        except InvalidRequest as exc:
            raise BadCursor("not a cursor this API returned") from exc
    async with db.transaction() as conn:
        result = await conn.execute(q.INBOX_PAGES[(unread, archived, cursor is not None)], params)
        items = [InboxItem.model_validate(dict(row)) for row in result.mappings().all()]
        found = await counts(conn, who)
    more = len(items) > limit
    items = items[:limit]
    return InboxPage(
        items=items,
        next_cursor=encode_cursor(items[-1].created_at, items[-1].id) if more else None,
        **found.model_dump(),
    )


async def item(conn: AsyncConnection, who: Principal, item_id: uuid.UUID) -> InboxItem:
    row = (await conn.execute(q.ITEM, {**_who(who), "b_id": item_id})).mappings().first()
    if row is None:
        raise ItemNotFound(item_id)
    return InboxItem.model_validate(dict(row))


async def receipt(
    db: Database, who: Principal, item_id: uuid.UUID, kind: Literal["read_at", "seen_at"], *, now: datetime
) -> tuple[InboxItem, list[uuid.UUID]]:
    """Stamp read/seen once, with the signal to that item's run; returns the item and the runs it stopped."""
    async with db.transaction() as conn:
        await item(conn, who, item_id)  # another recipient's item is not found, before anything is written
    _, stopped = await stamp_receipt(db, item_id, tenant_id=who.tenant_id, receipt=kind, now=now)
    async with db.transaction() as conn:
        return await item(conn, who, item_id), stopped


async def archive(db: Database, who: Principal, item_id: uuid.UUID, *, now: datetime) -> InboxItem:
    """Stamp archived_at once; no signal (archiving is not reading)."""
    async with db.transaction() as conn:
        await item(conn, who, item_id)
        await conn.execute(q.ARCHIVE, {**_who(who), "b_id": item_id, "now": now})
        return await item(conn, who, item_id)


async def read_all(db: Database, who: Principal, *, now: datetime) -> tuple[int, list[uuid.UUID]]:
    """Read every unread, unarchived item, each with its `notification.read` signal; a repeat stamps nothing."""
    async with db.transaction() as conn:
        runs = [row.id for row in await conn.execute(q.LOCK_UNREAD_RUNS, _who(who))]
        stamped = (await conn.execute(q.STAMP_UNREAD, {**_who(who), "now": now, "b_run_ids": runs})).all()
        stopped: list[uuid.UUID] = []
        for delivery_id, run_id in sorted(stamped, key=lambda row: (row.run_id, row.id)):
            stopped += await route_in(
                conn,
                who.tenant_id,
                who.recipient,
                RECEIPT_SIGNALS["read_at"],
                {"delivery_id": str(delivery_id)},
                now=now,
                run_id=run_id,
            )
    return len(stamped), stopped
