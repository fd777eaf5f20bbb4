"""Provider feedback that arrives after the send: delivery reports, bounces, complaints (SPEC 2.4, 7)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.cursors import BEFORE_ALL
from tocsin.core.errors import InvalidRequest
from tocsin.core.models import Delivery
from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.engine.deliveries import SendKind, SendResult, apply_result, move
from tocsin.engine.schedule import schedule_retry
from tocsin.engine.signals import route_in

# The attempt row of a delivery settled by its feedback deadline (SPEC 11.3).
SETTLED_BY_DEADLINE = {"settled_by": "feedback_timeout"}
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
        if settled.status == "failed":  # a temporary failure reported late: it is retried like a send's
            step = (await db.definition(run.definition_id, conn)).step(settled.step_key)
            settled = await schedule_retry(conn, step, settled, now=now)
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


async def settle_feedback_deadline(db: Database, delivery_id: uuid.UUID, *, now: datetime) -> Delivery:
    """Settle one delivery whose provider never reported by its deadline (the workflow's own timer fired).

    A provider that accepted a message and reported no bounce delivered it: `succeeded`, with an attempt row
    saying so and `terminal_at` = the deadline. Feedback that arrived first won; then nothing is written.
    """
    async with db.transaction() as conn:
        delivery, _ = await store.lock_delivery_and_run(conn, delivery_id)
        return await _settle_locked(conn, delivery, now=now)


async def settle_feedback_deadlines(
    db: Database, *, now: datetime, limit: int = 1000, overdue_by: timedelta = timedelta(0)
) -> list[Delivery]:
    """Settle overdue feedback deadlines, oldest first, one transaction each (the reconcile sweep calls it).

    SKIP LOCKED on the run: a run another transaction holds (its workflow settling the same delivery) is left
    to it. `overdue_by` leaves alone the deadlines whose own workflow timer is about to fire.
    """
    settled: list[Delivery] = []
    after = BEFORE_ALL
    for _ in range(limit):
        async with db.transaction() as conn:
            params = {"due_by": now - overdue_by, "after_due_at": after[0], "after_id": after[1]}
            row = (await conn.execute(q.NEXT_OVERDUE_FEEDBACK, params)).first()
            if row is None:
                break
            after = (row.feedback_due_at, row.id)
            settled.append(await _settle_locked(conn, await store.lock_delivery(conn, row.id), now=now))
    return settled


async def _settle_locked(conn: AsyncConnection, delivery: Delivery, *, now: datetime) -> Delivery:
    deadline = delivery.feedback_due_at
    if delivery.status != "dispatched" or deadline is None or now < deadline:
        return delivery
    await store.insert_attempt(
        conn, delivery.id, now=now, send_number=None, outcome="succeeded", provider_response=SETTLED_BY_DEADLINE
    )
    return await move(conn, delivery, "succeeded", now=now, terminal_at=deadline)
