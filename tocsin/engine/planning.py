"""Planning the delivery of a step activation: render its content, insert it once (SPEC 4.4, 3)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.definitions import Step
from tocsin.core.models import Delivery, Run
from tocsin.core.templates import RenderError, render_content
from tocsin.db import queries as q
from tocsin.db import store
from tocsin.engine.deliveries import SendResult, apply_result, move


async def plan_next_step_delivery(conn: AsyncConnection, run: Run, step: Step, *, now: datetime) -> Delivery:
    """The delivery of the run's current activation, planned at most once.

    INSERT ... ON CONFLICT (run_id, activation) DO NOTHING: the inserted row comes back (locked, as every
    row a transaction inserts); otherwise a retried or concurrent planner reads back, FOR UPDATE, the row
    the first one wrote, and never emits a second delivery.
    """
    render_error: str | None = None
    try:
        content = render_content(step.content, run.data)
    except RenderError as exc:
        content, render_error = {}, str(exc)
    inserted = await store.fetch_first(
        conn,
        Delivery,
        q.INSERT_DELIVERY,
        id=uuid.uuid4(),
        run_id=run.id,
        tenant_id=run.tenant_id,
        step_key=step.key,
        activation=run.step_activation,
        channel=step.channel,
        recipient=run.recipient,
        content=content,
        now=now,
    )
    if inserted is None:
        existing = await store.step_delivery(conn, run.id, run.step_activation, lock=True)
        if existing is None:  # the conflicting row is committed (ON CONFLICT waited for it): corrupt otherwise
            raise RuntimeError(f"run {run.id}: the delivery of activation {run.step_activation} conflicts but is gone")
        return existing
    if render_error is None:
        return inserted
    suppressed = await move(conn, inserted, "suppressed", now=now, suppression_reason="render_failed")
    # No send was made: the rejection belongs to no send number.
    return await apply_result(conn, suppressed, SendResult("rejected", error=render_error), now=now, send_number=None)
