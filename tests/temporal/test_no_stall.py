"""No stall (SPEC 14): after every decision the workflow acts at once on what it can act on.

Time skipping would hide a stall (a 6-hour safety re-check passes in no wall time), so these tests read
the workflow's own clock instead: the created_at of the run's transitions (stamped with workflow.now())
and the timers in the workflow history.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import recording
from sqlalchemy import update
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

from tocsin.core.models import Run, RunDetail, Transition
from tocsin.db import tables as t
from tocsin.testing import Action, Journeys, RecordingChannel, eventually

# Each workflow task has its own workflow.now(): "at once" is the real time between tasks, far below a minute.
AT_ONCE = timedelta(minutes=1)

# The second step reads an attribute the run's `plan` does not have (a missing top-level name would be refused
# at start, SPEC 11.7): its delivery is suppressed (render_failed) as soon as it is planned, and the suppressed
# branch leads on.
RENDER_FAILS: dict[str, Any] = {
    "key": "render_failure_fallback",
    "version": 1,
    "steps": [
        {
            "key": "welcome",
            "channel": "in_app",
            "content": {"title": "Welcome {{ name }}"},
            "progress": [{"kind": "on_outcome", "outcome": "delivered", "to_step": "plan"}],
        },
        {
            "key": "plan",
            "channel": "email",
            "content": {"subject": "Your plan", "body": "You are on {{ plan.tier }}."},
            "progress": [{"kind": "on_outcome", "outcome": "suppressed", "to_step": "fallback"}],
        },
        {"key": "fallback", "channel": "in_app", "content": {"title": "Pick a plan, {{ name }}"}},
    ],
}

# The worker has no adapter for "sms" (it is left out of the recording channels): the delivery becomes
# terminal (permanent_failure) at dispatch.
NO_ADAPTER: dict[str, Any] = {
    "key": "sms_then_in_app",
    "version": 1,
    "steps": [
        {
            "key": "sms",
            "channel": "sms",
            "content": {"body": "Code {{ code }}"},
            "progress": [{"kind": "on_outcome", "outcome": "permanent_failure", "to_step": "in_app"}],
        },
        {"key": "in_app", "channel": "in_app", "content": {"title": "Your code is {{ code }}"}},
    ],
}


async def start(journeys: Journeys, definition: dict[str, Any], data: dict[str, Any], **script: list[Action]) -> Run:
    """Register `definition` with recording channels, script them (channel name = actions), start a run."""
    await journeys.register(definition)
    for channel, actions in script.items():
        journeys.channels[channel].script(*actions)
    return await journeys.tocsin.start_run(
        workflow_key=definition["key"],
        tenant_id="acme",
        recipient="email:ada@example.com",
        data=data,
        idempotency_key=str(uuid.uuid4()),
    )


def activation_of(detail: RunDetail, step_key: str) -> Transition:
    [activated] = [tr for tr in detail.transitions if tr.reason == "step_activated" and tr.step_key == step_key]
    return activated


async def history_events(journeys: Journeys, run: Run) -> list[HistoryEvent]:
    return list((await journeys.handle(run).fetch_history()).events)


def of_type(events: list[HistoryEvent], kind: EventType.ValueType) -> list[HistoryEvent]:
    return [e for e in events if e.event_type == kind]


async def timers_started(journeys: Journeys, run: Run, count: int) -> list[HistoryEvent]:
    """The timers the workflow started, once there are `count` of them."""

    async def enough() -> list[HistoryEvent] | None:
        timers = of_type(await history_events(journeys, run), EventType.EVENT_TYPE_TIMER_STARTED)
        return timers if len(timers) >= count else None

    return await eventually(enough, what=f"{count} timer(s) in the history of run {run.id}")


def progress_rounds(events: list[HistoryEvent]) -> int:
    return sum(recording.activity_type(e) == "tocsin.progress_run" for e in events)


async def test_a_render_failure_is_progressed_at_once_not_after_a_safety_recheck(journeys: Journeys) -> None:
    run = await start(journeys, RENDER_FAILS, {"name": "Ada", "plan": "pro"})

    detail = await journeys.run_to_end(run)

    assert detail.run.state == "completed"
    welcome, plan, fallback = detail.deliveries
    assert (plan.status, plan.suppression_reason, plan.attempt_count) == ("suppressed", "render_failed", 0)
    assert welcome.status == fallback.status == "succeeded"
    assert fallback.content == {"title": "Pick a plan, Ada"}
    assert journeys.channels["email"].messages == []
    # The step after the render failure was activated at the workflow time the failed one was, not 6 h on.
    planned, next_step = activation_of(detail, "plan"), activation_of(detail, "fallback")
    assert next_step.created_at - planned.created_at < AT_ONCE, (planned.created_at, next_step.created_at)
    assert detail.transitions[-1].reason == "workflow_completed"
    assert detail.transitions[-1].created_at - detail.run.started_at < AT_ONCE
    events = await history_events(journeys, run)
    assert of_type(events, EventType.EVENT_TYPE_TIMER_STARTED) == []
    # The versioning marker of the new path is in the history (it replays under tests/temporal/test_replay.py).
    assert of_type(events, EventType.EVENT_TYPE_MARKER_RECORDED)
    await recording.record_history(journeys.handle(run), "render_failure_progressed_at_once")


async def test_a_delivery_terminal_at_dispatch_is_progressed_at_once(journeys: Journeys) -> None:
    # Registered through Tocsin itself, not journeys.register: "sms" gets no recording channel.
    journeys.channels["in_app"] = RecordingChannel()
    await journeys.tocsin.register_definition(NO_ADAPTER)
    run = await journeys.tocsin.start_run(
        workflow_key="sms_then_in_app", tenant_id="acme", recipient="user:42", data={"code": "1234"},
        idempotency_key=str(uuid.uuid4()),
    )  # fmt: skip

    detail = await journeys.run_to_end(run)

    assert detail.run.state == "completed"
    sms, in_app = detail.deliveries
    assert (sms.status, sms.suppression_reason) == ("cancelled", "permanent_failure")
    assert [(a.outcome, a.error) for a in detail.attempts if a.delivery_id == sms.id] == [
        ("rejected", "no_channel_adapter")
    ]
    assert in_app.status == "succeeded" and len(journeys.channels["in_app"].messages) == 1
    assert sms.terminal_at is not None
    assert activation_of(detail, "in_app").created_at - sms.terminal_at < AT_ONCE
    assert of_type(await history_events(journeys, run), EventType.EVENT_TYPE_TIMER_STARTED) == []


async def test_a_noop_on_a_terminal_delivery_waits_instead_of_spinning(journeys: Journeys) -> None:
    # The relay accepts the email and the provider's report is awaited: the run has nothing to do.
    definition = {
        "key": "awaiting_report",
        "version": 1,
        "steps": [
            {
                "key": "email",
                "channel": "email_relay",
                "content": {"subject": "Hello", "body": "Hi {{ name }}"},
                "progress": [{"kind": "on_outcome", "outcome": "bounced", "to_step": "hook"}],
            },
            {"key": "hook", "channel": "webhook", "content": {"event": "bounced"}},
        ],
    }
    run = await start(journeys, definition, {"name": "Ada"}, email_relay=["awaiting_feedback"])

    detail = await journeys.until(run, lambda d: d.deliveries[0].status == "dispatched", what="the relay to accept")
    [waiting] = await timers_started(journeys, run, 1)
    # The wait for the provider's report: until its feedback deadline (the default P3D after the send).
    waits = waiting.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
    assert timedelta(days=3) - AT_ONCE < waits <= timedelta(days=3)
    rounds = progress_rounds(await history_events(journeys, run))
    # The delivery is made terminal behind the engine's back in a way no rule branches on (corrupt data):
    # every round on it is a noop, and a noop must lead to a wait, not to another round at once.
    async with journeys.db.transaction() as conn:
        await conn.execute(
            update(t.deliveries)
            .where(t.deliveries.c.id == detail.deliveries[0].id)
            .values(status="cancelled", suppression_reason="superseded", terminal_at=t.deliveries.c.updated_at)
        )

    await journeys.handle(run).signal("wake")

    await timers_started(journeys, run, 2)
    events = await history_events(journeys, run)
    assert progress_rounds(events) == rounds + 1
    status = (await journeys.tocsin.get_run(run.id, tenant_id="acme")).run
    assert (status.state, status.current_step) == ("active", "email")
