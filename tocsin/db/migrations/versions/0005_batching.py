"""Batching (SPEC 11.5): the run state `collecting` with its due time, `workflow_runs.batch_key` and the partial
unique index that keeps one open batch per scope, the `run_items` table, and the reasons batching writes.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

S = "tocsin"

# The vocabularies as this revision leaves them (a migration never reads the live vocabulary: it changes later).
RUN_STATES_BEFORE = ["active", "waiting", "completed", "stopped"]
RUN_STATES = [*RUN_STATES_BEFORE, "collecting"]
STATUS_REASONS_BEFORE = [
    "workflow_started",
    "waiting_for_step_progression",
    "progressed_on_delivery_outcome",
    "workflow_completed",
    "workflow_stopped",
    "stopped_by_signal",
    "stopped_by_request",
    "step_limit_exceeded",
    "throttled",
    "wait_failed",
    "rule_failed",
]
STATUS_REASONS = [*STATUS_REASONS_BEFORE, "collecting_batch", "batch_closed"]
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
    "workflow_throttled",
    "wait_failed",
    "rule_failed",
]
TRANSITION_REASONS = [*TRANSITION_REASONS_BEFORE, "batch_item_added", "batch_closed"]
DUE_AT = "workflow_runs_due_at_only_waiting"
DUE_AT_BEFORE = "(state = 'waiting') = (due_at IS NOT NULL)"
DUE_AT_NOW = "(state IN ('waiting', 'collecting')) = (due_at IS NOT NULL)"


def recheck(table: str, column: str, name: str, values: list[str]) -> None:
    op.drop_constraint(name, table, schema=S)
    op.create_check_constraint(name, table, f"{column} IN ({', '.join(repr(v) for v in values)})", schema=S)


def rechecks(states: list[str], status_reasons: list[str], transition_reasons: list[str], due_at: str) -> None:
    recheck("workflow_runs", "state", "workflow_runs_state_check", states)
    recheck("workflow_runs", "status_reason", "workflow_runs_status_reason_check", status_reasons)
    recheck("workflow_transitions", "from_state", "workflow_transitions_from_state_check", states)
    recheck("workflow_transitions", "to_state", "workflow_transitions_to_state_check", states)
    recheck("workflow_transitions", "reason", "workflow_transitions_reason_check", transition_reasons)
    op.drop_constraint(DUE_AT, "workflow_runs", schema=S)
    op.create_check_constraint(DUE_AT, "workflow_runs", due_at, schema=S)


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("batch_key", sa.Text, nullable=True), schema=S)
    rechecks(RUN_STATES, STATUS_REASONS, TRANSITION_REASONS, DUE_AT_NOW)
    # At most one open batch per scope: a trigger racing another inserts ON CONFLICT on this index.
    op.create_index(
        "workflow_runs_open_batch",
        "workflow_runs",
        ["tenant_id", "workflow_key", "recipient", "batch_key"],
        unique=True,
        schema=S,
        postgresql_nulls_not_distinct=True,
        postgresql_where=sa.text("state = 'collecting'"),
    )
    # What progress_due_runs sweeps besides due waits: batches whose window has passed.
    op.create_index(
        "workflow_runs_collecting_due",
        "workflow_runs",
        ["due_at", "id"],
        schema=S,
        postgresql_where=sa.text("state = 'collecting'"),
    )
    op.create_table(
        "run_items",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("run_id", UUID(as_uuid=True), sa.ForeignKey(f"{S}.workflow_runs.id"), nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "position", name="run_items_run_position_key"),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="run_items_tenant_idempotency_key"),
        sa.CheckConstraint("position > 0", name="run_items_position_positive"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("run_items", schema=S)
    op.drop_index("workflow_runs_collecting_due", "workflow_runs", schema=S)
    op.drop_index("workflow_runs_open_batch", "workflow_runs", schema=S)
    rechecks(RUN_STATES_BEFORE, STATUS_REASONS_BEFORE, TRANSITION_REASONS_BEFORE, DUE_AT_BEFORE)
    op.drop_column("workflow_runs", "batch_key", schema=S)
