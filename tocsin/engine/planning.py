"""Planning the delivery of a step activation: its condition, its content, its send window; inserted once
(SPEC 4.4, 3, 11.1, 11.3).

`plan_delivery` decides, from the run alone, what the row will be (pure: no I/O); `write_delivery` writes one
plan with the statements of a single decision, and the due sweep (`tocsin.engine.sweep`) writes many at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.conditions import ConditionError, evaluate_condition
from tocsin.core.context import render_context
from tocsin.core.definitions import Step, WorkflowDefinition
from tocsin.core.models import Delivery, Run
from tocsin.core.templates import RenderError, render_content
from tocsin.db import queries as q
from tocsin.db import store
from tocsin.engine.deliveries import EFFECTS, move
from tocsin.engine.preferences import recipient_timezone
from tocsin.engine.schedule import fallback_zone, own_zone, window_opening


def run_context(run: Run) -> dict[str, Any]:
    """What the run's templates and conditions see (SPEC 11.6)."""
    return render_context(run.data, recipient=run.recipient, tenant_id=run.tenant_id, workflow_key=run.workflow_key)


@dataclass(frozen=True)
class Rejection:
    """The attempt row of a delivery that could not be rendered: a rejection before any send (no send number)."""

    outcome: str
    error_class: str | None
    error: str

    @classmethod
    def of(cls, error: str) -> Rejection:
        outcome, error_class, _, _ = EFFECTS["rejected"]
        return cls(outcome, error_class, error)


@dataclass(frozen=True)
class DeliveryPlan:
    """The delivery of one step activation as the run's rows decide it: planned `pending`, or planned and at
    once suppressed (`condition_not_met`; `render_failed` with its rejection). Its send window's zone may need
    the recipient's stored zone (`needs_recipient_zone`), a read the writer makes: `values` then takes it."""

    id: uuid.UUID
    run_id: uuid.UUID
    tenant_id: str
    recipient: str
    step: Step
    activation: int
    content: dict[str, Any]
    suppression_reason: str | None
    rejection: Rejection | None
    zone: tuple[str, ZoneInfo] | None  # the zone the step's window names itself, if it is a known one
    default_timezone: str

    @property
    def needs_recipient_zone(self) -> bool:
        # Only a delivery that will be sent has a window to read, and only a step naming no known zone asks.
        return self.step.send_window is not None and self.suppression_reason is None and self.zone is None

    def values(self, recipient_zone: str | None, *, now: datetime) -> dict[str, Any]:
        """The INSERT's values (q.INSERT_DELIVERY's parameters), given the recipient's zone if it was needed."""
        zone = fallback_zone(recipient_zone, self.default_timezone) if self.needs_recipient_zone else self.zone
        return {
            "id": self.id,
            "run_id": self.run_id,
            "tenant_id": self.tenant_id,
            "step_key": self.step.key,
            "activation": self.activation,
            "channel": self.step.channel,
            "recipient": self.recipient,
            "content": self.content,
            "scheduled_for": window_opening(self.step, zone[1], now) if zone else None,
            "send_timezone": zone[0] if zone else None,
            "now": now,
        }


def plan_delivery(run: Run, definition: WorkflowDefinition, step: Step, *, activation: int) -> DeliveryPlan:
    """The delivery of the run's step activation `activation`. A false `when` plans it suppressed
    (`condition_not_met`); a condition or content that cannot be evaluated plans it suppressed (`render_failed`,
    the error in an attempt row)."""
    context = run_context(run)
    content: dict[str, Any] = {}
    suppression_reason: str | None = None
    rejection: Rejection | None = None
    try:
        if step.when is not None and not evaluate_condition(step.when, context):
            suppression_reason = "condition_not_met"
        else:
            content = render_content(step.content, context)
    except (ConditionError, RenderError) as exc:
        suppression_reason, rejection = "render_failed", Rejection.of(str(exc))
    return DeliveryPlan(
        id=uuid.uuid4(),
        run_id=run.id,
        tenant_id=run.tenant_id,
        recipient=run.recipient,
        step=step,
        activation=activation,
        content=content,
        suppression_reason=suppression_reason,
        rejection=rejection,
        zone=own_zone(step, context) if suppression_reason is None else None,
        default_timezone=definition.default_timezone,
    )


async def plan_next_step_delivery(
    conn: AsyncConnection, run: Run, definition: WorkflowDefinition, step: Step, *, now: datetime
) -> Delivery:
    """The delivery of the run's current activation, planned at most once (see `write_delivery`)."""
    return await write_delivery(conn, plan_delivery(run, definition, step, activation=run.step_activation), now=now)


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
