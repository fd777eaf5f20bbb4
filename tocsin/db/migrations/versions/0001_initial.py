"""The tocsin schema: definitions, runs, the transition audit trail, deliveries, attempts, signals.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "tocsin"
APPEND_ONLY = ("workflow_transitions", "delivery_attempts")
RUN_STATES = ["active", "waiting", "completed", "stopped"]


def uuid(name: str, **kw: object) -> sa.Column[object]:
    return sa.Column(name, pg.UUID(as_uuid=True), **kw)  # type: ignore[arg-type]


def ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def check_in(column: str, values: list[str], name: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=name)


def upgrade() -> None:
    op.create_table(
        "workflow_definitions",
        uuid("id", primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("spec", pg.JSONB, nullable=False),
        sa.Column("checksum", sa.Text, nullable=False),
        ts("created_at"),
        sa.UniqueConstraint("key", "version", name="workflow_definitions_key_version_key"),
        sa.CheckConstraint("version > 0", name="workflow_definitions_version_positive"),
        schema=S,
    )
    op.create_table(
        "workflow_runs",
        uuid("id", primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        uuid("definition_id", nullable=False),
        sa.Column("workflow_key", sa.Text, nullable=False),
        sa.Column("workflow_version", sa.Integer, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("data", pg.JSONB, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("current_step", sa.Text, nullable=False),
        sa.Column("step_activation", sa.Integer, nullable=False),
        ts("step_activated_at"),
        sa.Column("status_reason", sa.Text, nullable=False),
        sa.Column("status_context", pg.JSONB, nullable=False),
        ts("due_at", nullable=True),
        sa.Column("pending_signals", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")),
        sa.Column("terminal_reason", sa.Text, nullable=True),
        sa.Column("workflow_started", sa.Boolean, nullable=False, server_default=sa.text("false")),
        ts("started_at"),
        ts("last_transition_at"),
        ts("created_at"),
        ts("updated_at"),
        sa.ForeignKeyConstraint(["definition_id"], [f"{S}.workflow_definitions.id"]),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="workflow_runs_tenant_idempotency_key"),
        check_in("state", ["active", "waiting", "completed", "stopped"], "workflow_runs_state_check"),
        check_in(
            "status_reason",
            [
                "workflow_started",
                "waiting_for_step_progression",
                "progressed_on_delivery_outcome",
                "workflow_completed",
                "workflow_stopped",
                "stopped_by_signal",
                "stopped_by_request",
                "step_limit_exceeded",
            ],
            "workflow_runs_status_reason_check",
        ),
        sa.CheckConstraint("step_activation > 0", name="workflow_runs_step_activation_positive"),
        sa.CheckConstraint("(state = 'waiting') = (due_at IS NOT NULL)", name="workflow_runs_due_at_only_waiting"),
        schema=S,
    )
    op.create_index(
        "workflow_runs_waiting_due",
        "workflow_runs",
        ["state", "due_at"],
        schema=S,
        postgresql_where=sa.text("state = 'waiting'"),
    )
    op.create_index(
        "workflow_runs_tenant_recipient_state", "workflow_runs", ["tenant_id", "recipient", "state"], schema=S
    )
    op.create_index(
        "workflow_runs_unstarted",
        "workflow_runs",
        ["created_at"],
        schema=S,
        postgresql_where=sa.text("NOT workflow_started"),
    )
    op.create_table(
        "deliveries",
        uuid("id", primary_key=True),
        uuid("run_id", nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("step_key", sa.Text, nullable=False),
        sa.Column("activation", sa.Integer, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("suppression_reason", sa.Text, nullable=True),
        sa.Column("content", pg.JSONB, nullable=False),
        sa.Column("attempt_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        ts("terminal_at", nullable=True),
        sa.Column("provider_message_id", sa.Text, nullable=True),
        ts("read_at", nullable=True),
        ts("seen_at", nullable=True),
        ts("created_at"),
        ts("updated_at"),
        sa.ForeignKeyConstraint(["run_id"], [f"{S}.workflow_runs.id"]),
        sa.UniqueConstraint("run_id", "activation", name="deliveries_run_activation_key"),
        check_in(
            "status",
            ["pending", "dispatched", "succeeded", "failed", "suppressed", "cancelled"],
            "deliveries_status_check",
        ),
        schema=S,
    )
    op.create_index("deliveries_inbox", "deliveries", ["tenant_id", "recipient", "channel", "created_at"], schema=S)
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        uuid("delivery_id", nullable=False),
        sa.Column("attempt_number", sa.Integer, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error_class", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("provider_message_id", sa.Text, nullable=True),
        sa.Column("provider_response", pg.JSONB, nullable=False),
        ts("created_at"),
        sa.ForeignKeyConstraint(["delivery_id"], [f"{S}.deliveries.id"]),
        sa.UniqueConstraint("delivery_id", "attempt_number", name="delivery_attempts_delivery_number_key"),
        check_in("outcome", ["succeeded", "failed", "bounced", "rejected"], "delivery_attempts_outcome_check"),
        check_in(
            "error_class",
            ["temporary", "permanent", "bounced", "unknown"],
            "delivery_attempts_error_class_check",
        ),
        schema=S,
    )
    op.create_table(
        "signals",
        uuid("id", primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        uuid("run_id", nullable=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("data", pg.JSONB, nullable=False),
        ts("created_at"),
        sa.ForeignKeyConstraint(["run_id"], [f"{S}.workflow_runs.id"]),
        schema=S,
    )
    op.create_index("signals_tenant_recipient_created", "signals", ["tenant_id", "recipient", "created_at"], schema=S)
    op.create_table(
        "workflow_transitions",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        uuid("run_id", nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("step_key", sa.Text, nullable=True),
        uuid("delivery_id", nullable=True),
        sa.Column("from_state", sa.Text, nullable=True),
        sa.Column("to_state", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("context", pg.JSONB, nullable=False),
        ts("created_at"),
        sa.ForeignKeyConstraint(["run_id"], [f"{S}.workflow_runs.id"]),
        sa.ForeignKeyConstraint(["delivery_id"], [f"{S}.deliveries.id"]),
        sa.UniqueConstraint("run_id", "seq", name="workflow_transitions_run_seq_key"),
        check_in(
            "reason",
            [
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
            ],
            "workflow_transitions_reason_check",
        ),
        # NULL passes a CHECK: the first transition of a run has no from_state.
        check_in("from_state", RUN_STATES, "workflow_transitions_from_state_check"),
        check_in("to_state", RUN_STATES, "workflow_transitions_to_state_check"),
        schema=S,
    )
    # The audit trail and the attempt log are append-only: the database itself refuses edits, whoever asks.
    op.execute(
        f"""
        CREATE FUNCTION {S}.reject_append_only_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'tocsin.% is append-only (% rejected)', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END;
        $$
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {S}.{table} "
            f"FOR EACH ROW EXECUTE FUNCTION {S}.reject_append_only_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {S}.{table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {S}.reject_append_only_change()"
        )


def downgrade() -> None:
    op.drop_table("workflow_transitions", schema=S)
    op.drop_table("signals", schema=S)
    op.drop_table("delivery_attempts", schema=S)
    op.drop_table("deliveries", schema=S)
    op.drop_table("workflow_runs", schema=S)
    op.drop_table("workflow_definitions", schema=S)
    op.execute(f"DROP FUNCTION {S}.reject_append_only_change()")
