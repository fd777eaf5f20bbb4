"""Decisions as data: the rows a decision writes, decided from rows already read and locked (pure: no I/O; the
only clock is `now`).

A `Plan` says how the run row changes, which transitions follow (in order) and which delivery is planned. One
decision, one plan: `progress_run` writes its plan with the statements of a single decision
(`tocsin.engine.planning.write_plan`), the due sweep writes the plans of a whole batch of runs with a few set
statements (`tocsin.engine.sweep.write_plans`); both write the same rows because both write the same plans.
The timed advance, the outcome advance, the step limit and a batch's close are decided here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from tocsin.core.conditions import ConditionError, evaluate_condition
from tocsin.core.context import render_context
from tocsin.core.definitions import Step, WorkflowDefinition
from tocsin.core.models import Delivery, Progress, Run, RunItem
from tocsin.core.outcome import Branchable
from tocsin.core.templates import RenderError, render_content
from tocsin.core.vocabulary import ProgressKind
from tocsin.db.store import iso
from tocsin.engine.deliveries import EFFECTS
from tocsin.engine.schedule import fallback_zone, own_zone, window_opening


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


# --- the delivery of a step activation (SPEC 4.4, 3, 11.1, 11.3) ---------------------------------------------


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


def plan_delivery(
    run: Run, definition: WorkflowDefinition, step: Step, context: dict[str, Any], *, activation: int
) -> DeliveryPlan:
    """The delivery of the run's step activation `activation`, rendered against `context` (`run_context`). A
    false `when` plans it suppressed (`condition_not_met`); a condition or content that cannot be evaluated plans
    it suppressed (`render_failed`, the error in an attempt row). A window's zone is the step's own if known."""
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


# --- a decision on a run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransitionPlan:
    """One row of the run's audit trail; its `seq` and `created_at` (`now`) are the writer's."""

    reason: str
    from_state: str | None
    to_state: str
    context: dict[str, Any]
    step_key: str | None = None
    delivery_id: uuid.UUID | None = None
    # It concerns the delivery this plan plans, whose id is known once written (a planner that lost the race to
    # plan it reads back the winner's row).
    of_planned_delivery: bool = False


@dataclass(frozen=True)
class Activation:
    """q.ACTIVATE_STEP: the cursor moves to `current_step`, the next activation, activated now."""

    current_step: str
    status_context: dict[str, Any]


@dataclass(frozen=True)
class Finish:
    """q.FINISH_RUN: the run ends."""

    state: Literal["completed", "stopped"]
    status_reason: str
    status_context: dict[str, Any]
    terminal_reason: str | None


@dataclass(frozen=True)
class Close:
    """q.CLOSE_BATCH: a batch closes, its first step activated now (SPEC 11.5)."""

    status_context: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What one decision on the locked `run` writes; a noop (`reason`) writes nothing."""

    run: Run
    kind: ProgressKind
    update: Activation | Finish | Close | None = None
    transitions: tuple[TransitionPlan, ...] = ()
    delivery: DeliveryPlan | None = None
    reason: str | None = None

    def progress(self, written: Run | None, delivery: Delivery | None) -> Progress:
        """The decision's result, from the run row and the delivery its writer got back."""
        if written is None:
            return Progress(kind=self.kind, run=self.run, reason=self.reason)
        return Progress(kind=self.kind, run=written, deliveries=[delivery] if delivery is not None else [])


def noop(run: Run, reason: str) -> Plan:
    return Plan(run=run, kind="noop", reason=reason)


def plan_finish(
    run: Run,
    *,
    state: Literal["completed", "stopped"],
    status_reason: str,
    transition_reason: str,
    context: dict[str, Any],
    terminal_reason: str | None = None,
    delivery_id: uuid.UUID | None = None,
) -> Plan:
    """End the run and record why, in the run and in its audit trail alike."""
    transition = TransitionPlan(
        transition_reason, run.state, state, context, step_key=run.current_step, delivery_id=delivery_id
    )
    kind: ProgressKind = state
    return Plan(run, kind, Finish(state, status_reason, context, terminal_reason), (transition,))


def over_limit(run: Run, definition: WorkflowDefinition) -> bool:
    return run.step_activation + 1 > definition.max_step_activations


def plan_limit_stop(
    run: Run, definition: WorkflowDefinition, rule_kind: str, to_step: str, delivery_id: uuid.UUID | None
) -> Plan:
    """SPEC 4.2 step 6: an advance that would exceed `max_step_activations` stops the run instead."""
    context = {
        "rule_kind": rule_kind,
        "from_step": run.current_step,
        "to_step": to_step,
        "step_activation": run.step_activation,
        "max_step_activations": definition.max_step_activations,
    }
    return plan_finish(
        run,
        state="stopped",
        status_reason="step_limit_exceeded",
        transition_reason="step_limit_exceeded",
        context=context,
        terminal_reason="limit:max_step_activations",
        delivery_id=delivery_id,
    )


def plan_activation(
    run: Run,
    definition: WorkflowDefinition,
    context: dict[str, Any],
    *,
    rule_kind: str,
    workflow_outcome: str,
    anchor_delivery_id: str | None,
    to_step: str,
    when: str | None,
    before: tuple[TransitionPlan, ...],
) -> Plan:
    """Move the cursor to `to_step` and plan that activation's delivery, rendered against `context` (SPEC 4.4,
    both cases), after the transitions `before` (the one that says why)."""
    status_context = {
        "rule_kind": rule_kind,
        "workflow_outcome": workflow_outcome,
        "anchor_delivery_id": anchor_delivery_id,
        "from_step": run.current_step,
        "to_step": to_step,
    } | ({"when": when} if when is not None else {})
    activated = TransitionPlan(
        "step_activated",
        "active",
        "active",
        {"step_key": to_step, "source": "progression"},
        step_key=to_step,
        of_planned_delivery=True,
    )
    step = definition.step(to_step)
    delivery = plan_delivery(run, definition, step, context, activation=run.step_activation + 1)
    return Plan(run, "advanced", Activation(to_step, status_context), (*before, activated), delivery)


def plan_outcome_advance(
    run: Run,
    definition: WorkflowDefinition,
    context: dict[str, Any],
    delivery: Delivery,
    to_step: str,
    when: str | None,
    branch: Branchable,
) -> Plan:
    """An `on_outcome` rule fired on the step's delivery (SPEC 4.4); the caller retired a failed delivery."""
    if over_limit(run, definition):
        return plan_limit_stop(run, definition, "on_outcome", to_step, delivery.id)
    progressed_context = {
        "rule_kind": "on_outcome",
        "workflow_outcome": branch.outcome,
        "anchor_delivery_id": str(delivery.id),
        "from_step": run.current_step,
        "to_step": to_step,
        **branch.evidence,
    } | ({"when": when} if when is not None else {})
    progressed = TransitionPlan(
        "progressed_on_delivery_outcome",
        "active",
        "active",
        progressed_context,
        step_key=run.current_step,
        delivery_id=delivery.id,
    )
    return plan_activation(
        run,
        definition,
        context,
        rule_kind="on_outcome",
        workflow_outcome=branch.outcome,
        anchor_delivery_id=str(delivery.id),
        to_step=to_step,
        when=when,
        before=(progressed,),
    )


def plan_due(run: Run, definition: WorkflowDefinition, items: Sequence[RunItem] | None, *, now: datetime) -> Plan:
    """A run waiting for its due_at (`waiting` or `collecting`): what `progress_run` and the due sweep decide.
    `items`: a batched run's items (None for a run of an unbatched workflow)."""
    if run.state == "collecting":
        return plan_due_batch(run, definition, items or [], now=now)
    return plan_timed_advance(run, definition, items, now=now)


def plan_due_batch(run: Run, definition: WorkflowDefinition, items: Sequence[RunItem], *, now: datetime) -> Plan:
    """A collecting run (SPEC 11.5): noop before its window has passed, then it closes."""
    # A collecting run always has due_at (a CHECK constraint).
    if run.due_at is not None and now < run.due_at:
        return noop(run, "batch_not_due")
    return plan_batch_close(run, definition, items)


def plan_batch_close(run: Run, definition: WorkflowDefinition, items: Sequence[RunItem]) -> Plan:
    """Close the collecting run: it becomes active at its first step, whose delivery (activation 1: the step never
    ran) is planned with every item in the render context (SPEC 11.5, then as 4.0)."""
    first = definition.first_step
    closed = TransitionPlan("batch_closed", "collecting", "active", {"items": len(items)})
    activated = TransitionPlan(
        "step_activated",
        "active",
        "active",
        {"step_key": first.key, "source": "batch"},
        step_key=first.key,
        of_planned_delivery=True,
    )
    delivery = plan_delivery(run, definition, first, run_context(run, items), activation=run.step_activation)
    close = Close({"rule_kind": "batch", "items": len(items)})
    return Plan(run, "advanced", close, (closed, activated), delivery)


def plan_timed_advance(
    run: Run, definition: WorkflowDefinition, items: Sequence[RunItem] | None, *, now: datetime
) -> Plan:
    """A waiting run (SPEC 4.2 step 2): noop before its gate is due; then the timed advance (4.4), or the stop
    at the step limit. Rules are not evaluated again."""
    if run.due_at is None:
        return noop(run, "wait_missing_due_at")
    if now < run.due_at:
        return noop(run, "wait_not_due")
    wait = run.status_context
    to_step = str(wait["to_step"])
    anchor_delivery_id = wait.get("anchor_delivery_id")
    delivery_id = uuid.UUID(anchor_delivery_id) if anchor_delivery_id else None
    if over_limit(run, definition):
        return plan_limit_stop(run, definition, "wait_until", to_step, delivery_id)
    reactivated = TransitionPlan(
        "reactivated_from_wait",
        "waiting",
        "active",
        {**wait, "reactivated_at": iso(now)},
        step_key=run.current_step,
        delivery_id=delivery_id,
    )
    return plan_activation(
        run,
        definition,
        run_context(run, items),
        rule_kind="wait_until",
        workflow_outcome="wait_elapsed",
        anchor_delivery_id=anchor_delivery_id,
        to_step=to_step,
        when=wait.get("when"),
        before=(reactivated,),
    )
