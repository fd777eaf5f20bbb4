"""What the Web UI shows of a run (SPEC 14 "A readable Web UI") and Temporal's own Cancel button.

On the time-skipping server, through tocsin.testing's `journeys`: summaries and details are read back from
the workflow's history, its description and its metadata query, as the Web UI reads them.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import recording
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from tocsin.channels import OutboundMessage, SendReceipt
from tocsin.core.models import Run, RunDetail
from tocsin.examples import example
from tocsin.testing import Journeys, RecordingChannel, eventually

MENTION = example("mention_escalation")
DATA = {"actor": "Ada Lovelace", "excerpt": "the secret plan"}
RECIPIENT = "user:ada@example.com"


async def start_mention(journeys: Journeys, key: str) -> Run:
    await journeys.register(MENTION)
    return await journeys.tocsin.start_run(
        workflow_key="mention_escalation", tenant_id="acme", recipient=RECIPIENT, data=DATA, idempotency_key=key
    )


async def summaries(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, str]]:
    """(kind, summary) of each activity and timer in the workflow's history, in order."""
    found = []
    async for event in handle.fetch_history_events():
        # A decision's local activity shows as its marker, with its summary, as an activity task does.
        if recording.activity_type(event) is not None:
            found.append(("activity", await summary_of(handle, event)))
        elif event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            found.append(("timer", await summary_of(handle, event)))
    return found


async def summary_of(handle: WorkflowHandle[Any, Any], event: HistoryEvent) -> str:
    if not event.user_metadata.HasField("summary"):
        return ""
    (text,) = await pydantic_data_converter.decode([event.user_metadata.summary])
    assert isinstance(text, str)
    return text


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def test_the_web_ui_names_the_journey_its_activities_and_timers_without_personal_data(
    journeys: Journeys,
) -> None:
    run = await start_mention(journeys, "ui-1")
    handle = journeys.handle(run)
    waiting = await journeys.until(run, lambda d: d.run.state == "waiting", what="the run to wait")
    assert waiting.run.due_at is not None
    due = waiting.run.due_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert await current_details(handle) == f"**waiting** at step `in_app` until {due} → `email`"

    detail = await journeys.run_to_end(run)

    assert detail.run.state == "completed"
    assert await summaries(handle) == [
        ("activity", "decide · start"),
        ("activity", "send in_app · step in_app · attempt 1"),
        ("activity", "decide · step in_app"),
        ("timer", "wait PT2H → email"),
        ("activity", "decide · step in_app"),
        ("activity", "send email · step email · attempt 1"),
        ("activity", "decide · step email"),
    ]
    assert await current_details(handle) == "**completed** at step `email`: workflow_completed"
    shown = " ".join(text for _, text in await summaries(handle))
    for personal in (RECIPIENT, "Ada", "secret"):
        assert personal not in shown


async def test_a_retry_timer_says_when_and_what(journeys: Journeys) -> None:
    await journeys.register(MENTION)
    journeys.channels["email"].script("temp", "ok")
    run = await journeys.tocsin.start_run(
        workflow_key="mention_escalation", tenant_id="acme", recipient=RECIPIENT, data=DATA, idempotency_key="ui-2"
    )
    detail = await journeys.run_to_end(run)

    email = detail.deliveries[1]
    assert (email.status, email.attempt_count) == ("succeeded", 2)
    first_failure = next(a.created_at for a in detail.attempts if a.delivery_id == email.id)
    timers = [text for kind, text in await summaries(journeys.handle(run)) if kind == "timer"]
    shown = re.fullmatch(r"retry at (\S+ \S+) UTC · email · step email", timers[-1])
    assert shown is not None, timers
    retry_at = datetime.strptime(shown[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    # The step's 30 s backoff after the failure (the workflow's clock, shown to the second).
    assert timedelta(seconds=25) < retry_at - first_failure < timedelta(seconds=35)
    assert ("activity", "send email · step email · attempt 2") in await summaries(journeys.handle(run))


def assert_stopped_by_temporal(detail: RunDetail) -> None:
    run = detail.run
    assert (run.state, run.status_reason, run.terminal_reason) == (
        "stopped",
        "stopped_by_request",
        "temporal_cancel_requested",
    )
    last = detail.transitions[-1]
    assert (last.reason, last.context) == ("workflow_cancelled", {"reason": "temporal_cancel_requested"})
    assert [t.seq for t in detail.transitions] == list(range(1, len(detail.transitions) + 1))


async def test_cancelling_the_workflow_through_temporal_stops_the_run(journeys: Journeys) -> None:
    run = await start_mention(journeys, "cancel-1")
    await journeys.until(run, lambda d: d.run.state == "waiting", what="the run to wait")
    handle = journeys.handle(run)

    await handle.cancel()  # what the Web UI's "Request Cancellation" does
    detail = await journeys.run_to_end(run)
    await journeys.skip(timedelta(hours=3))  # past the wait: nothing may be sent any more

    assert_stopped_by_temporal(detail)
    assert [d.step_key for d in (await journeys.tocsin.get_run(run.id, tenant_id="acme")).deliveries] == ["in_app"]
    assert journeys.channels["email"].messages == []
    assert await current_details(handle) == "**stopped**: cancellation requested through Temporal"
    await recording.record_history(handle, "cancelled_through_temporal")


class HeldChannel(RecordingChannel):
    """Holds each send until released: a cancellation can land while the send is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.entered.set()
        await self.release.wait()
        return await super().send(message)


async def test_a_send_in_flight_when_temporal_cancels_finishes_and_is_recorded(journeys: Journeys) -> None:
    await journeys.register(MENTION)
    held = journeys.channels["in_app"] = HeldChannel()
    run = await journeys.tocsin.start_run(
        workflow_key="mention_escalation", tenant_id="acme", recipient=RECIPIENT, data=DATA, idempotency_key="c-2"
    )
    await asyncio.wait_for(held.entered.wait(), 20)
    handle = journeys.handle(run)
    await handle.cancel()

    async def cancel_taken() -> bool:
        events = [e.event_type async for e in handle.fetch_history_events()]
        requested = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
        return requested in events and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in events[events.index(requested) :]

    await eventually(cancel_taken, what="the workflow to take the cancellation while the send is held")
    held.release.set()
    detail = await journeys.run_to_end(run)

    assert_stopped_by_temporal(detail)
    (in_app,) = detail.deliveries
    assert (in_app.status, in_app.attempt_count) == ("succeeded", 1)
    assert len(held.messages) == 1
    events = [e.event_type async for e in handle.fetch_history_events()]
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED not in events
