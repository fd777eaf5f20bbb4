"""Decisions as data: the rows a decision writes, decided from rows already read and locked (pure: no I/O; the
only clock is `now`).

A `Plan` says how the run row changes, which transitions follow (in order) and which delivery is planned. One
decision, one plan: `progress_run` writes its plan with the statements of a single decision
(`tocsin.engine.runs`), the due sweep writes the plans of a whole batch of runs with a few set statements
(`tocsin.engine.sweep`); both write the same rows because both write the same plans.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tocsin.core.definitions import WorkflowDefinition
from tocsin.core.models import Delivery, Progress, Run
from tocsin.core.outcome import Branchable
from tocsin.core.vocabulary import ProgressKind
from tocsin.db.store import iso
from tocsin.engine.planning import DeliveryPlan, plan_delivery


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
class Plan:
    """What one decision on the locked `run` writes; a noop (`reason`) writes nothing."""

    run: Run
    kind: ProgressKind
    update: Activation | Finish | None = None
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
    """End the run and record why, in the run and in its audit trail alike (as `store.finish_run` writes it)."""
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
    *,
    rule_kind: str,
    workflow_outcome: str,
    anchor_delivery_id: str | None,
    to_step: str,
    when: str | None,
    before: tuple[TransitionPlan, ...],
) -> Plan:
    """Move the cursor to `to_step` and plan that activation's delivery (SPEC 4.4, both cases), after the
    transitions `before` (the one that says why)."""
    context = {
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
    delivery = plan_delivery(run, definition, definition.step(to_step), activation=run.step_activation + 1)
    return Plan(run, "advanced", Activation(to_step, context), (*before, activated), delivery)


def plan_outcome_advance(
    run: Run, definition: WorkflowDefinition, delivery: Delivery, to_step: str, when: str | None, branch: Branchable
) -> Plan:
    """An `on_outcome` rule fired on the step's delivery (SPEC 4.4); the caller retired a failed delivery."""
    if over_limit(run, definition):
        return plan_limit_stop(run, definition, "on_outcome", to_step, delivery.id)
    context = {
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
        context,
        step_key=run.current_step,
        delivery_id=delivery.id,
    )
    return plan_activation(
        run,
        definition,
        rule_kind="on_outcome",
        workflow_outcome=branch.outcome,
        anchor_delivery_id=str(delivery.id),
        to_step=to_step,
        when=when,
        before=(progressed,),
    )


def plan_timed_advance(run: Run, definition: WorkflowDefinition, *, now: datetime) -> Plan:
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
        rule_kind="wait_until",
        workflow_outcome="wait_elapsed",
        anchor_delivery_id=anchor_delivery_id,
        to_step=to_step,
        when=wait.get("when"),
        before=(reactivated,),
    )
