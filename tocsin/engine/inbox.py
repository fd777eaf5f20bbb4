"""The in-app inbox: the delivery rows of the `in_app` channel, with read and seen receipts (SPEC 5)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.models import Delivery
from tocsin.db import Database, store
from tocsin.db import tables as t
from tocsin.engine.signals import route_in

D = t.deliveries
IN_APP = "in_app"
RECEIPT_SIGNALS = {"read_at": "notification.read", "seen_at": "notification.seen"}


async def inbox(
    conn: AsyncConnection, *, tenant_id: str, recipient: str, unread_only: bool = False, limit: int = 50
) -> list[Delivery]:
    """The recipient's in-app notifications that were delivered, newest first."""
    query = (
        select(D)
        .where(D.c.tenant_id == tenant_id, D.c.recipient == recipient, D.c.channel == IN_APP, D.c.status == "succeeded")
        .order_by(D.c.created_at.desc(), D.c.id.desc())
        .limit(limit)
    )
    if unread_only:
        query = query.where(D.c.read_at.is_(None))
    return await store.fetch_all(conn, Delivery, query)


async def stamp_receipt(
    db: Database,
    delivery_id: uuid.UUID,
    *,
    tenant_id: str,
    receipt: Literal["read_at", "seen_at"],
    now: datetime,
) -> tuple[Delivery, list[uuid.UUID]]:
    """Stamp `read_at`/`seen_at` once and signal that delivery's run only (reading one notification never
    cancels another run). Returns the delivery and the runs the signal stopped; a repeat changes nothing."""
    async with db.transaction() as conn:
        delivery, _ = await store.lock_delivery_and_run(conn, delivery_id, tenant_id=tenant_id)
        if getattr(delivery, receipt) is not None:
            return delivery, []
        stamped = await store.update_delivery(conn, delivery.id, now=now, **{receipt: now})
        stopped = await route_in(
            conn,
            delivery.tenant_id,
            delivery.recipient,
            RECEIPT_SIGNALS[receipt],
            {"delivery_id": str(delivery.id)},
            now=now,
            run_id=delivery.run_id,
        )
        return stamped, stopped
