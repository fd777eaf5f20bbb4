"""Provider feedback that arrives after the send: delivery reports, bounces, complaints (SPEC 2.4, 7)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from tocsin.core.errors import InvalidRequest
from tocsin.core.models import Delivery
from tocsin.db import Database, store
from tocsin.engine.deliveries import SendKind, SendResult, apply_result
from tocsin.engine.signals import route_in

FEEDBACK_KINDS: dict[str, SendKind] = {
    "delivered": "succeeded",
    "bounced": "bounced",
    "permanent_failure": "permanent",
    "temporary_failure": "temporary",
}


async def record_delivery_outcome(
    db: Database,
    delivery_id: uuid.UUID,
    *,
    tenant_id: str,
    outcome: str,
    now: datetime,
    error: str | None = None,
    provider_message_id: str | None = None,
    provider_response: dict[str, Any] | None = None,
) -> Delivery:
    """Record what the provider reported about a delivery.

    A delivery still `dispatched` (awaiting feedback) moves to the reported status, so the run branches on
    it. Otherwise (terminal, or `failed` and due for a retry, where the status machine allows no such move)
    the report is kept as an attempt row and a signal `delivery.<outcome>` for that run (a waiting run may
    listen for it), never as a status change.
    """
    kind = FEEDBACK_KINDS.get(outcome)
    if kind is None:
        raise InvalidRequest(f"unknown delivery outcome {outcome!r}; expected one of {', '.join(FEEDBACK_KINDS)}")
    result = SendResult(
        kind, error=error, provider_message_id=provider_message_id, provider_response=provider_response or {}
    )
    async with db.transaction() as conn:
        delivery, run = await store.lock_delivery_and_run(conn, delivery_id, tenant_id=tenant_id)
        # Feedback reports on the message, not on one send: it belongs to no send number (attempt_count stays).
        settled = await apply_result(conn, delivery, result, now=now, send_number=None, run_finished=run.finished)
        if delivery.status != "dispatched":
            await route_in(
                conn,
                delivery.tenant_id,
                delivery.recipient,
                f"delivery.{outcome}",
                {"delivery_id": str(delivery.id)},
                now=now,
                run_id=delivery.run_id,
            )
        return settled
