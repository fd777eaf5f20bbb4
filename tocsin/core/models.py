"""Pydantic models of the canonical rows, as the API and the engine return them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from tocsin.core.vocabulary import DeliveryStatus, ProgressKind, RunState, is_finished


class Row(BaseModel):
    model_config = ConfigDict(frozen=True)

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> Self:
        return cls.model_validate(dict(row))


class DefinitionRecord(Row):
    id: uuid.UUID
    key: str
    version: int
    checksum: str
    spec: dict[str, Any]
    created_at: datetime


class Run(Row):
    id: uuid.UUID
    tenant_id: str
    definition_id: uuid.UUID
    workflow_key: str
    workflow_version: int
    recipient: str
    data: dict[str, Any]
    idempotency_key: str
    state: RunState
    current_step: str
    step_activation: int
    step_activated_at: datetime
    status_reason: str
    status_context: dict[str, Any]
    due_at: datetime | None
    pending_signals: list[str]
    terminal_reason: str | None
    workflow_started: bool
    started_at: datetime
    last_transition_at: datetime
    created_at: datetime
    updated_at: datetime
    throttle_key: str | None = None  # SPEC 11.4: the rendered throttle key
    batch_key: str | None = None  # SPEC 11.5: the rendered batch key

    @property
    def workflow_id(self) -> str:
        return workflow_id(self.id)

    @property
    def finished(self) -> bool:
        return is_finished(self.state)


class StartedRun(Run):
    """A run as `start_run` returns it. `joined`: this trigger joined a batch that an earlier trigger opened
    (SPEC 11.5); false for a run it started or a batch it opened. The same key again says the same."""

    joined: bool = False


class RunItem(Row):
    """One trigger of a batched run (SPEC 11.5), the first one included: its key, its data, its place."""

    id: uuid.UUID
    run_id: uuid.UUID
    tenant_id: str
    idempotency_key: str
    data: dict[str, Any]
    position: int
    created_at: datetime


class Transition(Row):
    id: int
    run_id: uuid.UUID
    seq: int
    step_key: str | None
    delivery_id: uuid.UUID | None
    from_state: str | None
    to_state: str
    reason: str
    context: dict[str, Any]
    created_at: datetime


class Delivery(Row):
    id: uuid.UUID
    run_id: uuid.UUID
    tenant_id: str
    step_key: str
    activation: int
    channel: str
    recipient: str
    status: DeliveryStatus
    suppression_reason: str | None
    content: dict[str, Any]
    attempt_count: int
    terminal_at: datetime | None
    provider_message_id: str | None
    read_at: datetime | None
    seen_at: datetime | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    # SPEC 11.3: the earliest moment the next send may go out, the send window's zone, the feedback deadline.
    scheduled_for: datetime | None = None
    send_timezone: str | None = None
    feedback_due_at: datetime | None = None


class Attempt(Row):
    id: int
    delivery_id: uuid.UUID
    attempt_number: int
    send_number: int | None  # the send this row is the result of; None: provider feedback, or no send made
    outcome: str
    error_class: str | None
    error: str | None
    provider_message_id: str | None
    provider_response: dict[str, Any]
    created_at: datetime


class Signal(Row):
    id: uuid.UUID
    tenant_id: str
    recipient: str
    run_id: uuid.UUID | None
    name: str
    data: dict[str, Any]
    created_at: datetime


class RunDetail(BaseModel):
    """A run with everything needed to explain it: its trail, its deliveries and their attempts, and for a
    batched run its items in position order."""

    run: Run
    transitions: list[Transition]
    deliveries: list[Delivery]
    attempts: list[Attempt]
    items: list[RunItem] = []


class Progress(BaseModel):
    """What one `progress_run` decided. `deliveries` holds the next-step deliveries an advance planned."""

    kind: ProgressKind
    run: Run
    deliveries: list[Delivery] = []
    reason: str | None = None


class RunPage(BaseModel):
    runs: list[Run]
    next_cursor: str | None


def workflow_id(run_id: uuid.UUID | str) -> str:
    """The Temporal workflow id of a run."""
    return f"tocsin-run-{run_id}"
