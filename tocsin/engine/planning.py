"""Writing one decision's plan (`tocsin.engine.plans`) with the statements of a single decision, inside the
caller's transaction: the run, the planned delivery of a step activation (inserted once, SPEC 4.4), then the
transitions. The due sweep (`tocsin.engine.sweep`) writes the plans of many runs with set statements instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.definitions import Step, WorkflowDefinition
from tocsin.core.models import Delivery, Progress, Run
from tocsin.db import queries as q
from tocsin.db import store
from tocsin.engine.deliveries import move
from tocsin.engine.plans import Activation, Close, DeliveryPlan, Finish, Plan, plan_delivery
from tocsin.engine.preferences import recipient_timezone


async def plan_next_step_delivery(
    conn: AsyncConnection,
    run: Run,
    definition: WorkflowDefinition,
    step: Step,
    context: dict[str, Any],
    *,
    now: datetime,
) -> Delivery:
    """The delivery of the run's current activation, rendered against `context` (`run_context`), planned at most
    once (see `write_delivery`)."""
    plan = plan_delivery(run, definition, step, context, activation=run.step_activation)
    return await write_delivery(conn, plan, now=now)


async def write_delivery(conn: AsyncConnection, plan: DeliveryPlan, *, now: datetime) -> Delivery:
    """Write one planned delivery: INSERT ... ON CONFLICT (run_id, activation) DO NOTHING. The inserted row comes
    back (locked, as every row a transaction inserts), then suppressed as planned; otherwise a retried or
    concurrent planner reads back, FOR UPDATE, the row the first one wrote, and never emits a second delivery."""
    stored_zone = None
    if plan.needs_recipient_zone:
        stored_zone = await recipient_timezone(conn, tenant_id=plan.tenant_id, recipient=plan.recipient)
    inserted = await store.fetch_first(conn, Delivery, q.INSERT_DELIVERY, **plan.values(stored_zone, now=now))
    if inserted is None:
        existing = await store.step_delivery(conn, plan.run_id, plan.activation, lock=True)
        if existing is None:  # the conflicting row is committed (ON CONFLICT waited for it): corrupt otherwise
            raise RuntimeError(f"run {plan.run_id}: the delivery of activation {plan.activation} conflicts but is gone")
        return existing
    if plan.suppression_reason is None:
        return inserted
    suppressed = await move(conn, inserted, "suppressed", now=now, suppression_reason=plan.suppression_reason)
    if plan.rejection is not None:
        # A suppressed delivery is not in flight: the rejection is evidence only, its status stays.
        await store.insert_attempt(
            conn,
            suppressed.id,
            now=now,
            send_number=None,
            outcome=plan.rejection.outcome,
            error_class=plan.rejection.error_class,
            error=plan.rejection.error,
        )
    return suppressed


async def write_plan(conn: AsyncConnection, plan: Plan, *, now: datetime) -> Progress:
    """Write one decision's plan on its locked run: the run, its delivery, then its transitions in order (a
    transition may name the delivery)."""
    run = plan.run
    match plan.update:
        case None:
            return plan.progress(None, None)
        case Activation(current_step, status_context):
            written = await store.fetch_one(
                conn,
                Run,
                q.ACTIVATE_STEP,
                run_id=run.id,
                now=now,
                current_step=current_step,
                status_context=status_context,
            )
        case Finish(state, status_reason, status_context, terminal_reason):
            written = await store.fetch_one(
                conn,
                Run,
                q.FINISH_RUN,
                run_id=run.id,
                now=now,
                state=state,
                status_reason=status_reason,
                status_context=status_context,
                terminal_reason=terminal_reason,
            )
        case Close(status_context):
            written = await store.fetch_one(
                conn, Run, q.CLOSE_BATCH, run_id=run.id, now=now, status_context=status_context
            )
    delivery = await write_delivery(conn, plan.delivery, now=now) if plan.delivery is not None else None
    for transition in plan.transitions:
        await store.append_transition(
            conn,
            run,
            now=now,
            reason=transition.reason,
            from_state=transition.from_state,
            to_state=transition.to_state,
            step_key=transition.step_key,
            delivery_id=delivery.id if transition.of_planned_delivery and delivery else transition.delivery_id,
            context=transition.context,
        )
    return plan.progress(written, delivery)
