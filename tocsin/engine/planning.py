"""Planning the delivery of a step activation: render its content, insert it once (SPEC 4.4, 3)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.definitions import Step
from tocsin.core.models import Delivery, Run
from tocsin.core.templates import RenderError, render_content
from tocsin.db import store
from tocsin.db import tables as t
from tocsin.engine.deliveries import SendResult, apply_result, move

D = t.deliveries


async def plan_next_step_delivery(conn: AsyncConnection, run: Run, step: Step, *, now: datetime) -> Delivery:
    """The delivery of the run's current activation, planned at most once.

    INSERT ... ON CONFLICT (run_id, activation) DO NOTHING, then read back: a retried or concurrent
    planner finds the row the first one wrote and never emits a second delivery.
    """
    render_error: str | None = None
    try:
        content = render_content(step.content, run.data)
    except RenderError as exc:
        content, render_error = {}, str(exc)
    inserted = await conn.scalar(
        insert(D)
        .values(
            id=uuid.uuid4(),
            run_id=run.id,
            tenant_id=run.tenant_id,
            step_key=step.key,
            activation=run.step_activation,
            channel=step.channel,
            recipient=run.recipient,
            status="pending",
            content=content,
            attempt_count=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[D.c.run_id, D.c.activation])
        .returning(D.c.id)
    )
    delivery = await store.step_delivery(conn, run.id, run.step_activation, lock=True)
    assert delivery is not None  # inserted now, or by whoever won the conflict
    if inserted is not None and render_error is not None:
        delivery = await move(conn, delivery, "suppressed", now=now, suppression_reason="render_failed")
        await apply_result(conn, delivery, SendResult("rejected", error=render_error), now=now)
    return delivery
