"""Journey features (SPEC 11.1-11.4, 11.7): send windows and retry times on deliveries, feedback deadlines,
throttle scopes on runs, and the status and transition reasons those features write.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

S = "tocsin"

# The vocabularies as this revision leaves them (a migration never reads the live vocabulary: it changes later).
STATUS_REASONS_BEFORE = [
    "workflow_started",
    "waiting_for_step_progression",
    "progressed_on_delivery_outcome",
    "workflow_completed",
    "workflow_stopped",
    "stopped_by_signal",
    "stopped_by_request",
    "step_limit_exceeded",
]
STATUS_REASONS = [*STATUS_REASONS_BEFORE, "throttled", "wait_failed", "rule_failed"]
TRANSITION_REASONS_BEFORE = [
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
]
TRANSITION_REASONS = [*TRANSITION_REASONS_BEFORE, "workflow_throttled", "wait_failed", "rule_failed"]


def ts(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def recheck(table: str, column: str, name: str, values: list[str]) -> None:
    op.drop_constraint(name, table, schema=S)
    op.create_check_constraint(name, table, f"{column} IN ({', '.join(repr(v) for v in values)})", schema=S)


def upgrade() -> None:
    # The earliest moment the next send may go out (a send window, a retry's backoff): a column, not a timer.
    op.add_column("deliveries", ts("scheduled_for"), schema=S)
    op.add_column("deliveries", sa.Column("send_timezone", sa.Text, nullable=True), schema=S)
    op.add_column("deliveries", ts("feedback_due_at"), schema=S)
    # What the reconcile sweep settles: sends the provider took whose report is overdue.
    op.create_index(
        "deliveries_feedback_due",
        "deliveries",
        ["feedback_due_at"],
        schema=S,
        postgresql_where=sa.text("status = 'dispatched' AND feedback_due_at IS NOT NULL"),
    )
    # What the reconcile sweep rescues: sends whose retry (or window) time passed with no workflow timer firing.
    op.create_index(
        "deliveries_scheduled_for",
        "deliveries",
        ["scheduled_for"],
        schema=S,
        postgresql_where=sa.text("status IN ('pending', 'failed') AND scheduled_for IS NOT NULL"),
    )
    op.add_column("workflow_runs", sa.Column("throttle_key", sa.Text, nullable=True), schema=S)
    op.create_index(
        "workflow_runs_throttle_scope",
        "workflow_runs",
        ["tenant_id", "workflow_key", "recipient", "throttle_key", "created_at"],
        schema=S,
    )
    recheck("workflow_runs", "status_reason", "workflow_runs_status_reason_check", STATUS_REASONS)
    recheck("workflow_transitions", "reason", "workflow_transitions_reason_check", TRANSITION_REASONS)


def downgrade() -> None:
    recheck("workflow_transitions", "reason", "workflow_transitions_reason_check", TRANSITION_REASONS_BEFORE)
    recheck("workflow_runs", "status_reason", "workflow_runs_status_reason_check", STATUS_REASONS_BEFORE)
    op.drop_index("workflow_runs_throttle_scope", "workflow_runs", schema=S)
    op.drop_column("workflow_runs", "throttle_key", schema=S)
    op.drop_index("deliveries_scheduled_for", "deliveries", schema=S)
    op.drop_index("deliveries_feedback_due", "deliveries", schema=S)
    op.drop_column("deliveries", "feedback_due_at", schema=S)
    op.drop_column("deliveries", "send_timezone", schema=S)
    op.drop_column("deliveries", "scheduled_for", schema=S)
