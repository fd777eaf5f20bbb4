"""SPEC 11.2-11.3 as whole journeys on the time-skipping server: send windows (across a DST change, overnight,
in the recipient's zone), retries that wait for the window, and a feedback deadline that settles a delivery.

Moments are read from the rows the engine stamped with the workflow's (skipped) clock: an `until` wait brings
each run to a chosen instant first, so the window is met at a known local time.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import recording
from temporalio.api.enums.v1 import EventType

from tocsin.core.models import Run, RunDetail
from tocsin.testing import Action, Journeys


def at_then(moment: str, window: dict[str, Any], **send: Any) -> dict[str, Any]:
    """A journey that waits until `moment`, then sends an sms inside `window`."""
    return {
        "key": f"windowed_{uuid.uuid4().hex[:8]}",
        "version": 1,
        "steps": [
            {
                "key": "note",
                "channel": "in_app",
                "content": {"title": "booked"},
                "progress": [{"kind": "wait_until", "until": moment, "to_step": "sms"}],
            },
            {"key": "sms", "channel": "sms", "content": {"body": "reminder"}, "send_window": window, **send},
        ],
    }


async def start(journeys: Journeys, definition: dict[str, Any], **script: list[Action]) -> Run:
    await journeys.register(definition)
    for channel, actions in script.items():
        journeys.channels[channel].script(*actions)
    return await journeys.tocsin.start_run(
        workflow_key=definition["key"],
        tenant_id="acme",
        recipient="user:ada",
        data={},
        idempotency_key=str(uuid.uuid4()),
    )


def sends(detail: RunDetail, step_key: str) -> list[datetime]:
    (delivery,) = [d for d in detail.deliveries if d.step_key == step_key]
    return [a.created_at for a in detail.attempts if a.delivery_id == delivery.id]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def timer_summaries(journeys: Journeys, run: Run) -> list[str]:
    history = await journeys.handle(run).fetch_history()
    return [
        json.loads(e.user_metadata.summary.data)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED and e.user_metadata.HasField("summary")
    ]


def within_a_second(moment: datetime, expected: datetime) -> bool:
    # The send is stamped when the provider answered: just after the timer fired at the opening.
    return expected <= moment < expected + timedelta(seconds=2)


async def test_a_window_that_opens_in_the_spring_forward_gap_sends_at_the_first_instant_after_it(
    journeys: Journeys,
) -> None:
    # Sunday 2027-03-28 in Berlin: 02:00-03:00 does not exist. Planned at 00:00 CET, the 02:30 opening is 03:00
    # CEST, 01:00 UTC.
    definition = at_then(
        "2027-03-28T00:00:00+01:00", {"timezone": "Europe/Berlin", "days": ["sun"], "start": "02:30", "end": "05:00"}
    )
    run = await start(journeys, definition)
    detail = await journeys.run_to_end(run)
    assert detail.run.state == "completed"
    sms = detail.deliveries[1]
    assert (sms.send_timezone, sms.scheduled_for) == ("Europe/Berlin", utc("2027-03-28T01:00:00+00:00"))
    (sent,) = sends(detail, "sms")
    assert within_a_second(sent, utc("2027-03-28T01:00:00+00:00"))
    assert any(s.startswith("send window opens 2027-03-28 01:00:00 UTC") for s in await timer_summaries(journeys, run))
    await recording.record_history(journeys.handle(run), "send_window_across_dst")


async def test_an_overnight_window_sends_when_it_opens_in_the_evening(journeys: Journeys) -> None:
    # Tuesday 2027-01-12 15:00 in Berlin (14:00 UTC): outside 22:00-06:00 until 22:00 CET, 21:00 UTC.
    definition = at_then("2027-01-12T15:00:00+01:00", {"timezone": "Europe/Berlin", "start": "22:00", "end": "06:00"})
    detail = await journeys.run_to_end(await start(journeys, definition))
    (sent,) = sends(detail, "sms")
    assert within_a_second(sent, utc("2027-01-12T21:00:00+00:00"))


async def test_a_retry_whose_backoff_lands_in_quiet_hours_waits_for_the_next_opening(journeys: Journeys) -> None:
    # Planned Monday 2027-01-11 16:30 Berlin (15:30 UTC), inside 09:00-17:00. The first send fails; its 2 h
    # backoff lands at 18:30, so the retry goes out at Tuesday's opening, 09:00 CET = 08:00 UTC.
    definition = at_then(
        "2027-01-11T16:30:00+01:00",
        {"timezone": "Europe/Berlin", "start": "09:00", "end": "17:00"},
        retry={"max_attempts": 3, "initial_interval": "PT2H", "maximum_interval": "P1D"},
    )
    run = await start(journeys, definition, sms=["temp", "ok"])
    detail = await journeys.run_to_end(run)
    first, second = sends(detail, "sms")
    assert within_a_second(first, utc("2027-01-11T15:30:00+00:00"))
    assert within_a_second(second, utc("2027-01-12T08:00:00+00:00"))
    assert detail.deliveries[1].status == "succeeded"
    assert any(s.startswith("retry at 2027-01-12 08:00:00 UTC") for s in await timer_summaries(journeys, run))
    await recording.record_history(journeys.handle(run), "retry_waits_for_window")


async def test_the_recipients_zone_from_set_recipient_places_the_window(journeys: Journeys) -> None:
    await journeys.tocsin.set_recipient(tenant_id="acme", recipient="user:ada", timezone="America/New_York")
    # 2027-01-11 12:00 UTC is 07:00 in New York: the 09:00 opening there is 14:00 UTC.
    definition = at_then("2027-01-11T12:00:00Z", {"start": "09:00", "end": "17:00"})
    detail = await journeys.run_to_end(await start(journeys, definition))
    assert detail.deliveries[1].send_timezone == "America/New_York"
    (sent,) = sends(detail, "sms")
    assert within_a_second(sent, utc("2027-01-11T14:00:00+00:00"))


AWAITING_FEEDBACK: dict[str, Any] = {
    "key": "awaiting_feedback",
    "version": 1,
    "steps": [
        {
            "key": "email",
            "channel": "email",
            "content": {"subject": "hello"},
            "feedback_timeout": "PT6H",
            "progress": [{"kind": "on_outcome", "outcome": "delivered", "to_step": "done"}],
        },
        {"key": "done", "channel": "in_app", "content": {"title": "sent"}},
    ],
}


async def test_a_delivery_that_never_hears_back_settles_at_its_deadline(journeys: Journeys) -> None:
    run = await start(journeys, AWAITING_FEEDBACK, email=["awaiting_feedback"])
    detail = await journeys.run_to_end(run)
    assert detail.run.state == "completed"
    email = detail.deliveries[0]
    assert email.feedback_due_at is not None
    assert (email.status, email.terminal_at) == ("succeeded", email.feedback_due_at)
    mine = [a for a in detail.attempts if a.delivery_id == email.id]
    assert [(a.outcome, a.provider_response.get("settled_by")) for a in mine] == [
        ("succeeded", None),
        ("succeeded", "feedback_timeout"),
    ]
    summaries = await timer_summaries(journeys, run)
    assert any(s.startswith("feedback deadline") for s in summaries)
    assert not any("re-check" in s for s in summaries)  # never the 6-hour safety re-check
    await recording.record_history(journeys.handle(run), "feedback_deadline")
