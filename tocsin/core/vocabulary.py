"""Every state, status, outcome and reason tocsin writes, and the delivery status machine (SPEC 2.4, 2.6, 15).

One home for the vocabulary: the tables' CHECK constraints, the engine, the models and the workflows all read
it from here. Pure: no I/O, safe inside the workflow sandbox.
"""

from __future__ import annotations

from typing import Literal, get_args

# `collecting` (SPEC 11.5): a batch open to more triggers, before its first step.
RunState = Literal["active", "waiting", "collecting", "completed", "stopped"]
RUN_STATES: tuple[RunState, ...] = get_args(RunState)
# A run in one of these states may still change; the others are final.
UNFINISHED_RUN_STATES: tuple[RunState, ...] = ("active", "waiting", "collecting")
# A run in one of these states has a due_at (a CHECK constraint): the moment its timer fires.
DUE_RUN_STATES: tuple[RunState, ...] = ("waiting", "collecting")
FINISHED_RUN_STATES: tuple[RunState, ...] = ("completed", "stopped")

DeliveryStatus = Literal["pending", "dispatched", "succeeded", "failed", "suppressed", "cancelled"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)
TERMINAL_DELIVERY_STATUSES: frozenset[DeliveryStatus] = frozenset({"succeeded", "suppressed", "cancelled"})
# The only legal status moves (SPEC 2.4); terminal statuses move nowhere.
DELIVERY_MOVES: dict[str, frozenset[str]] = {
    "pending": frozenset({"dispatched", "suppressed", "cancelled"}),
    "dispatched": frozenset({"succeeded", "failed", "suppressed", "cancelled"}),
    "failed": frozenset({"dispatched", "cancelled"}),
}

AttemptOutcome = Literal["succeeded", "failed", "bounced", "rejected"]
ATTEMPT_OUTCOMES: tuple[AttemptOutcome, ...] = get_args(AttemptOutcome)
ErrorClass = Literal["temporary", "permanent", "bounced", "unknown"]
ERROR_CLASSES: tuple[ErrorClass, ...] = get_args(ErrorClass)

Outcome = Literal["delivered", "suppressed", "temporary_failure", "retries_exhausted", "permanent_failure", "bounced"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

ProgressKind = Literal["advanced", "waiting", "completed", "stopped", "noop"]

TransitionReason = Literal[
    "workflow_started",
    "step_activated",
    "waiting_for_step_progression",
    "progressed_on_delivery_outcome",
    "reactivated_from_wait",
    "workflow_completed",
    "workflow_stopped",
    "signal_received",
    "workflow_cancelled",
    "step_limit_exceeded",
    # Part II (SPEC 15)
    "workflow_throttled",
    "wait_failed",
    "rule_failed",
    "batch_item_added",
    "batch_closed",
]
TRANSITION_REASONS: tuple[TransitionReason, ...] = get_args(TransitionReason)

StatusReason = Literal[
    "workflow_started",
    "waiting_for_step_progression",
    "progressed_on_delivery_outcome",
    "workflow_completed",
    "workflow_stopped",
    "stopped_by_signal",
    "stopped_by_request",
    "step_limit_exceeded",
    # Part II (SPEC 15)
    "throttled",
    "wait_failed",
    "rule_failed",
    "collecting_batch",
    "batch_closed",
]
STATUS_REASONS: tuple[StatusReason, ...] = get_args(StatusReason)


def is_finished(state: str) -> bool:
    return state in FINISHED_RUN_STATES


def is_legal_move(status: str, to: str) -> bool:
    """Whether SPEC 2.4 allows a delivery to move from `status` to `to`."""
    return to in DELIVERY_MOVES.get(status, frozenset())
