"""What the workflows and activities hand each other, and the search attributes they set.

Pure data (pydantic, no I/O): workflow code imports this module, so it must stay deterministic and cheap.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict
from temporalio.common import SearchAttributeKey

from tocsin.core.definitions import RetryPolicy
from tocsin.core.vocabulary import is_finished

JOURNEY_WORKFLOW = "JourneyWorkflow"
RECONCILE_WORKFLOW = "ReconcileWorkflow"
RECONCILE_SCHEDULE_ID = "tocsin-reconcile"
DEFAULT_TASK_QUEUE = "tocsin"
WAKE_SIGNAL = "wake"
CANCEL_UPDATE = "cancel"
STATUS_QUERY = "status"

STATE = SearchAttributeKey.for_keyword("TocsinState")
STEP = SearchAttributeKey.for_keyword("TocsinStep")
WORKFLOW_KEY = SearchAttributeKey.for_keyword("TocsinWorkflowKey")
TENANT = SearchAttributeKey.for_keyword("TocsinTenant")
DUE_AT = SearchAttributeKey.for_datetime("TocsinDueAt")
SEARCH_ATTRIBUTES = (STATE, STEP, WORKFLOW_KEY, TENANT, DUE_AT)


class Filterable(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def current_step(self) -> str: ...
    @property
    def workflow_key(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def due_at(self) -> datetime | None: ...


def search_attribute_values(run: Filterable) -> list[tuple[SearchAttributeKey[Any], Any]]:
    """What a run shows in the Web UI's filters; a None value means "not set"."""
    return [
        (STATE, run.state),
        (STEP, run.current_step),
        (WORKFLOW_KEY, run.workflow_key),
        (TENANT, run.tenant_id),
        (DUE_AT, run.due_at),
    ]


def iso_duration(seconds: int) -> str:
    """`7200` -> `PT2H`, `93600` -> `P1DT2H`: a wait as a definition writes it."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    if not days and not time:
        return "PT0S"
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)


class RunView(Message):
    """The part of a run the workflow steers by. No personal data: no recipient, no payload."""

    id: uuid.UUID
    tenant_id: str
    workflow_key: str
    state: str
    current_step: str
    step_activation: int
    status_reason: str
    due_at: datetime | None
    terminal_reason: str | None

    @property
    def finished(self) -> bool:
        return is_finished(self.state)


class DeliveryView(Message):
    id: uuid.UUID
    status: str
    attempt_count: int
    channel: str
    # SPEC 11.3; absent from deliveries recorded before they existed (tests/histories): they still decode.
    scheduled_for: datetime | None = None
    feedback_due_at: datetime | None = None


class RoundRequest(Message):
    run_id: uuid.UUID
    now: datetime


class Wait(Message):
    """What a waiting run waits for: its step's wait rule. Only for the Web UI's timer names."""

    delay_seconds: int | None  # None: a wait until a moment from the data (SPEC 11.2)
    to_step: str


class Round(Message):
    """One `progress_run`: its decision, the run after it, the active step's delivery and retry policy."""

    kind: str
    reason: str | None
    run: RunView
    delivery: DeliveryView | None
    retry: RetryPolicy
    # Absent from rounds recorded before it existed (tests/histories): they still decode.
    wait: Wait | None = None
    # The delivery's channel calls no provider (`tocsin.channels.is_instant`): its send runs as a local activity.
    instant_send: bool = False


class DispatchRequest(Message):
    delivery_id: uuid.UUID
    attempt: int
    # workflow.now(), for a send run as a local activity: its times start from the workflow's clock, as the
    # decisions' do (an activity task's start from the server's, `activities.journey.server_clock`).
    now: datetime | None = None


class DeliveryRequest(Message):
    """A decision on one delivery at the workflow's `now`: exhausting its retries, settling its feedback deadline."""

    delivery_id: uuid.UUID
    now: datetime


class CancelRequest(Message):
    tenant_id: str
    reason: str


class CancelRunRequest(Message):
    run_id: uuid.UUID
    tenant_id: str
    reason: str
    now: datetime


class ReconcileRequest(Message):
    now: datetime
    grace_seconds: int = 120


class ReconcileReport(Message):
    started: list[uuid.UUID]
    progressed: list[uuid.UUID]
    # Runs whose workflow had closed without finishing them: terminated (stopped) or failed (restarted).
    stopped: list[uuid.UUID] = []
    restarted: list[uuid.UUID] = []
    # Deliveries settled by their overdue feedback deadline; runs woken for a send whose time had passed.
    settled: list[uuid.UUID] = []
    rescued: list[uuid.UUID] = []
