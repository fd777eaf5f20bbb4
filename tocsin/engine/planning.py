"""Planning the delivery of a step activation: its condition, its content, its send window; inserted once
(SPEC 4.4, 3, 11.1, 11.3)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.conditions import ConditionError, evaluate_condition
from tocsin.core.context import render_context
from tocsin.core.definitions import Step, WorkflowDefinition
from tocsin.core.models import Delivery, Run, RunItem
from tocsin.core.templates import RenderError, render_content
from tocsin.db import queries as q
from tocsin.db import store
from tocsin.engine.deliveries import SendResult, apply_result, move
from tocsin.engine.schedule import send_zone, window_opening


def run_context(run: Run, items: Sequence[RunItem] | None = None) -> dict[str, Any]:
    """What the run's templates and conditions see (SPEC 11.6); a batched run's `items` (tocsin.engine.batches)
    add `items` and `items_count`."""
    return render_context(
        run.data,
        recipient=run.recipient,
        tenant_id=run.tenant_id,
        workflow_key=run.workflow_key,
        items=[item.data for item in items] if items is not None else None,
    )


async def plan_next_step_delivery(
    conn: AsyncConnection,
    run: Run,
    definition: WorkflowDefinition,
    step: Step,
    context: dict[str, Any],
    *,
    now: datetime,
) -> Delivery:
    """The delivery of the run's current activation, planned at most once.

    INSERT ... ON CONFLICT (run_id, activation) DO NOTHING: the inserted row comes back (locked, as every
    row a transaction inserts); otherwise a retried or concurrent planner reads back, FOR UPDATE, the row
    the first one wrote, and never emits a second delivery. A false `when` plans it suppressed
    (`condition_not_met`); a condition or content that cannot be evaluated plans it suppressed
    (`render_failed`, the error in an attempt row). A step with a send window is scheduled for its next opening.
    `context` is the run's render context (`run_context`), read once per decision.
    """
    content: dict[str, Any] = {}
    unmet = False
    render_error: str | None = None
    try:
        unmet = step.when is not None and not evaluate_condition(step.when, context)
        if not unmet:
            content = render_content(step.content, context)
    except (ConditionError, RenderError) as exc:
        render_error = str(exc)
    sendable = not unmet and render_error is None
    zone = await send_zone(conn, run, step, definition, context) if sendable else None
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
        scheduled_for=window_opening(step, zone[1], now) if zone else None,
        send_timezone=zone[0] if zone else None,
        now=now,
    )
    if inserted is None:
        existing = await store.step_delivery(conn, run.id, run.step_activation, lock=True)
        if existing is None:  # the conflicting row is committed (ON CONFLICT waited for it): corrupt otherwise
            raise RuntimeError(f"run {run.id}: the delivery of activation {run.step_activation} conflicts but is gone")
        return existing
    if unmet:
        return await move(conn, inserted, "suppressed", now=now, suppression_reason="condition_not_met")
    if render_error is None:
        return inserted
    suppressed = await move(conn, inserted, "suppressed", now=now, suppression_reason="render_failed")
    # No send was made: the rejection belongs to no send number.
    return await apply_result(conn, suppressed, SendResult("rejected", error=render_error), now=now, send_number=None)
