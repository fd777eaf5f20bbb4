"""SQLAlchemy Core tables of the `tocsin` schema (SPEC 2). The migrations create them; tests check both agree."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from tocsin.core.vocabulary import (
    ATTEMPT_OUTCOMES,
    DELIVERY_STATUSES,
    DUE_RUN_STATES,
    ERROR_CLASSES,
    RUN_STATES,
    STATUS_REASONS,
    TRANSITION_REASONS,
)

SCHEMA = "tocsin"

metadata = MetaData(schema=SCHEMA)


def one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    """A CHECK that keeps an enum-like text column inside its vocabulary."""
    return CheckConstraint(f"{column} IN ({_quoted(values)})", name=name)


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def tz(name: str, *, nullable: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


workflow_definitions = Table(
    "workflow_definitions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("key", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("spec", JSONB, nullable=False),
    Column("checksum", Text, nullable=False),
    tz("created_at"),
    UniqueConstraint("key", "version", name="workflow_definitions_key_version_key"),
    CheckConstraint("version > 0", name="workflow_definitions_version_positive"),
)

workflow_runs = Table(
    "workflow_runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("definition_id", UUID(as_uuid=True), ForeignKey("workflow_definitions.id"), nullable=False),
    Column("workflow_key", Text, nullable=False),
    Column("workflow_version", Integer, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("current_step", Text, nullable=False),
    Column("step_activation", Integer, nullable=False),
    tz("step_activated_at"),
    Column("status_reason", Text, nullable=False),
    Column("status_context", JSONB, nullable=False),
    tz("due_at", nullable=True),
    Column("pending_signals", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("terminal_reason", Text, nullable=True),
    # The rendered throttle key (SPEC 11.4); NULL for a definition whose throttle has no key, or no throttle.
    Column("throttle_key", Text, nullable=True),
    # The rendered batch key (SPEC 11.5); NULL for a batch without a key template, or no batching.
    Column("batch_key", Text, nullable=True),
    Column("workflow_started", Boolean, nullable=False, server_default=text("false")),
    tz("started_at"),
    tz("last_transition_at"),
    tz("created_at"),
    tz("updated_at"),
    UniqueConstraint("tenant_id", "idempotency_key", name="workflow_runs_tenant_idempotency_key"),
    one_of("state", RUN_STATES, "workflow_runs_state_check"),
    one_of("status_reason", STATUS_REASONS, "workflow_runs_status_reason_check"),
    CheckConstraint("step_activation > 0", name="workflow_runs_step_activation_positive"),
    CheckConstraint(
        f"(state IN ({_quoted(DUE_RUN_STATES)})) = (due_at IS NOT NULL)", name="workflow_runs_due_at_only_waiting"
    ),
    # The due sweep's keyset order, (due_at, id): runs sharing a due_at are paged through, not re-read (0006).
    Index("workflow_runs_waiting_due", "due_at", "id", postgresql_where=text("state = 'waiting'")),
    Index("workflow_runs_collecting_due", "due_at", "id", postgresql_where=text("state = 'collecting'")),
    # SPEC 11.5: at most one open batch per scope, a database fact (a NULL key is one scope of its own).
    Index(
        "workflow_runs_open_batch",
        "tenant_id",
        "workflow_key",
        "recipient",
        "batch_key",
        unique=True,
        postgresql_nulls_not_distinct=True,
        postgresql_where=text("state = 'collecting'"),
    ),
    Index("workflow_runs_tenant_recipient_state", "tenant_id", "recipient", "state"),
    Index("workflow_runs_throttle_scope", "tenant_id", "workflow_key", "recipient", "throttle_key", "created_at"),
    Index(
        "workflow_runs_unstarted",
        "created_at",
        postgresql_where=text("NOT workflow_started"),
    ),
)

# SPEC 11.5: every trigger of a batched run, the first one included.
run_items = Table(
    "run_items",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("run_id", UUID(as_uuid=True), ForeignKey("workflow_runs.id"), nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("position", Integer, nullable=False),
    tz("created_at"),
    UniqueConstraint("run_id", "position", name="run_items_run_position_key"),
    UniqueConstraint("tenant_id", "idempotency_key", name="run_items_tenant_idempotency_key"),
    CheckConstraint("position > 0", name="run_items_position_positive"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("run_id", UUID(as_uuid=True), ForeignKey("workflow_runs.id"), nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("step_key", Text, nullable=False),
    Column("activation", Integer, nullable=False),
    Column("channel", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("suppression_reason", Text, nullable=True),
    Column("content", JSONB, nullable=False),
    # Sends begun: +1 on every move to `dispatched`; provider feedback never changes it.
    Column("attempt_count", Integer, nullable=False, server_default=text("0")),
    tz("terminal_at", nullable=True),
    Column("provider_message_id", Text, nullable=True),
    tz("read_at", nullable=True),
    tz("seen_at", nullable=True),
    tz("created_at"),
    tz("updated_at"),
    tz("archived_at", nullable=True),
    # SPEC 11.3: the earliest moment the next send may go out (a send window, a retry's backoff) ...
    tz("scheduled_for", nullable=True),
    # ... the zone the step's send window was read in ...
    Column("send_timezone", Text, nullable=True),
    # ... and when a send the provider took, awaiting its report, settles as delivered.
    tz("feedback_due_at", nullable=True),
    UniqueConstraint("run_id", "activation", name="deliveries_run_activation_key"),
    one_of("status", DELIVERY_STATUSES, "deliveries_status_check"),
    Index("deliveries_inbox", "tenant_id", "recipient", "channel", "created_at"),
    Index(
        "deliveries_scheduled_for",
        "scheduled_for",
        postgresql_where=text("status IN ('pending', 'failed') AND scheduled_for IS NOT NULL"),
    ),
    Index(
        "deliveries_feedback_due",
        "feedback_due_at",
        postgresql_where=text("status = 'dispatched' AND feedback_due_at IS NOT NULL"),
    ),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("delivery_id", UUID(as_uuid=True), ForeignKey("deliveries.id"), nullable=False),
    # Every row of a delivery, numbered 1, 2, 3 ... in the order recorded (send results and feedback alike).
    Column("attempt_number", Integer, nullable=False),
    # The send (deliveries.attempt_count when it began) this row is the result of; NULL for provider feedback
    # and for a rejection recorded before any send (migration 0002).
    Column("send_number", Integer, nullable=True),
    Column("outcome", Text, nullable=False),
    Column("error_class", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("provider_message_id", Text, nullable=True),
    Column("provider_response", JSONB, nullable=False),
    tz("created_at"),
    UniqueConstraint("delivery_id", "attempt_number", name="delivery_attempts_delivery_number_key"),
    one_of("outcome", ATTEMPT_OUTCOMES, "delivery_attempts_outcome_check"),
    one_of("error_class", ERROR_CLASSES, "delivery_attempts_error_class_check"),
    CheckConstraint("send_number > 0", name="delivery_attempts_send_number_positive"),
)

signals = Table(
    "signals",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("run_id", UUID(as_uuid=True), ForeignKey("workflow_runs.id"), nullable=True),
    Column("name", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    tz("created_at"),
    Index("signals_tenant_recipient_created", "tenant_id", "recipient", "created_at"),
)

workflow_transitions = Table(
    "workflow_transitions",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("run_id", UUID(as_uuid=True), ForeignKey("workflow_runs.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("step_key", Text, nullable=True),
    Column("delivery_id", UUID(as_uuid=True), ForeignKey("deliveries.id"), nullable=True),
    Column("from_state", Text, nullable=True),
    Column("to_state", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("context", JSONB, nullable=False),
    tz("created_at"),
    UniqueConstraint("run_id", "seq", name="workflow_transitions_run_seq_key"),
    one_of("reason", TRANSITION_REASONS, "workflow_transitions_reason_check"),
    one_of("from_state", RUN_STATES, "workflow_transitions_from_state_check"),
    one_of("to_state", RUN_STATES, "workflow_transitions_to_state_check"),
)

# SPEC 12.1: a NULL workflow_key or channel means "any"; NULLS NOT DISTINCT keeps one row per scope.
preferences = Table(
    "preferences",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("workflow_key", Text, nullable=True),
    Column("channel", Text, nullable=True),
    Column("opted_in", Boolean, nullable=False),
    tz("updated_at"),
    Index(
        "preferences_scope_key",
        "tenant_id",
        "recipient",
        "workflow_key",
        "channel",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
)

recipients = Table(
    "recipients",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("recipient", Text, primary_key=True),
    Column("timezone", Text, nullable=True),
    tz("updated_at"),
)

__all__ = [
    "SCHEMA",
    "deliveries",
    "delivery_attempts",
    "metadata",
    "preferences",
    "recipients",
    "run_items",
    "signals",
    "workflow_definitions",
    "workflow_runs",
    "workflow_transitions",
]
