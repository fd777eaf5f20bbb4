"""The in-app inbox: the delivery rows of the `in_app` channel, with read and seen receipts (SPEC 5)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from tocsin.core.models import Delivery
from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.engine.signals import route_in

RECEIPT_SIGNALS = {"read_at": "notification.read", "seen_at": "notification.seen"}


async def inbox(
    db: Database, *, tenant_id: str, recipient: str, unread_only: bool = False, limit: int = 50
) -> list[Delivery]:
    """The recipient's in-app notifications that were delivered, newest first."""
    async with db.transaction() as conn:
        return await store.fetch_all(
            conn,
            Delivery,
            q.INBOX_UNREAD if unread_only else q.INBOX,
            tenant_id=tenant_id,
            recipient=recipient,
            limit=limit,
        )


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
        stamped = await store.stamp_receipt(conn, delivery.id, receipt, now=now)
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
