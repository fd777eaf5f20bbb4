"""The appointment reminder example (tocsin/examples/appointment_reminder.yaml) as whole journeys on the
time-skipping server: the booking confirmed in the app, the reminder a day before the appointment, by SMS
inside 09:00-20:00 in the data's zone when there is a phone number, else by email; a cancelled appointment
sends nothing more.

Moments are read from the rows, stamped by the workflow's (skipped) clock, which starts at the host's: the
appointment lies in 2027, months ahead.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from tocsin.core.models import Run, RunDetail
from tocsin.core.windows import known_zone
from tocsin.examples import example
from tocsin.testing import Journeys

APPOINTMENT_REMINDER = example("appointment_reminder")
RECIPIENT = "patient:42"
# Wednesday 10 March 2027, 08:00 in New York (EST, before the US change to summer time on the 14th), given in
# UTC: the window's zone comes from `timezone`, not from the timestamp's offset.
BOOKING: dict[str, Any] = {
    "clinic": "Northside Clinic",
    "appointment_at": "2027-03-10T13:00:00Z",
    "appointment_text": "Wednesday 10 March at 08:00",
    "timezone": "America/New_York",
    "email": "ada@example.com",
}
REMINDER_DUE = datetime.fromisoformat("2027-03-09T13:00:00+00:00")  # a day before: 08:00 in New York
WINDOW_OPENS = datetime.fromisoformat("2027-03-09T14:00:00+00:00")  # 09:00 in New York


async def book(journeys: Journeys, data: dict[str, Any]) -> Run:
    await journeys.register(APPOINTMENT_REMINDER)
    return await journeys.tocsin.start_run(
        workflow_key="appointment_reminder",
        tenant_id="acme",
        recipient=RECIPIENT,
        data=data,
        idempotency_key=str(uuid.uuid4()),
    )


def sends(detail: RunDetail, step_key: str) -> list[datetime]:
    """When each send of the step's delivery was recorded (its attempt rows)."""
    (delivery,) = [d for d in detail.deliveries if d.step_key == step_key]
    return [a.created_at for a in detail.attempts if a.delivery_id == delivery.id]


def just_after(moment: datetime, expected: datetime) -> bool:
    # A row is stamped when the activity that wrote it ran: just after the timer fired.
    return expected <= moment < expected + timedelta(seconds=2)


async def test_the_sms_reminder_goes_out_a_day_before_when_the_window_opens_in_the_clinics_zone(
    journeys: Journeys,
) -> None:
    run = await book(journeys, {**BOOKING, "phone": "+12125550123"})

    detail = await journeys.run_to_end(run)

    assert detail.run.state == "completed"
    assert [t.reason for t in detail.transitions] == [
        "workflow_started",
        "step_activated",
        "waiting_for_step_progression",
        "reactivated_from_wait",
        "step_activated",
        "workflow_completed",
    ]
    wait = detail.transitions[2].context
    assert (wait["anchor"], wait["until"], wait["offset_seconds"]) == ("until", "2027-03-10T13:00:00Z", -86400)
    assert wait["due_at"] == REMINDER_DUE.isoformat()
    confirmation, sms = detail.deliveries
    assert confirmation.content == {
        "title": "Booked at Northside Clinic",
        "body": "See you on Wednesday 10 March at 08:00.",
    }
    # The wait ended at 08:00 New York time, before the window: the send was held until it opened.
    assert (sms.status, sms.send_timezone, sms.scheduled_for) == ("succeeded", "America/New_York", WINDOW_OPENS)
    (sent,) = sends(detail, "sms")
    assert just_after(sent, WINDOW_OPENS)
    new_york = known_zone("America/New_York")
    assert new_york is not None
    local = sent.astimezone(new_york)
    assert (local.date().isoformat(), local.hour, local.minute) == ("2027-03-09", 9, 0)
    [text] = journeys.channels["sms"].messages
    assert text.content == {"to": "+12125550123", "body": "Reminder: Northside Clinic, Wednesday 10 March at 08:00."}
    assert journeys.channels["email"].messages == []


async def test_without_a_phone_number_the_sms_step_is_suppressed_and_the_email_goes_at_once(
    journeys: Journeys,
) -> None:
    run = await book(journeys, BOOKING)

    detail = await journeys.run_to_end(run)

    assert detail.run.state == "completed"
    _, sms, email = detail.deliveries
    assert (sms.status, sms.suppression_reason, email.status) == ("suppressed", "condition_not_met", "succeeded")
    assert sms.terminal_at is not None and just_after(sms.terminal_at, REMINDER_DUE)
    assert journeys.channels["sms"].messages == []
    # The email step has no window: it is sent when the wait ends, 08:00 in New York.
    (sent,) = sends(detail, "email")
    assert just_after(sent, REMINDER_DUE)
    [mail] = journeys.channels["email"].messages
    assert mail.content == {
        "to": "ada@example.com",
        "subject": "Reminder: your appointment at Northside Clinic",
        "body": "See you on Wednesday 10 March at 08:00.",
    }
    progressed = [t for t in detail.transitions if t.reason == "progressed_on_delivery_outcome"]
    assert [(t.step_key, t.context["workflow_outcome"], t.context["to_step"]) for t in progressed] == [
        ("sms", "suppressed", "email")
    ]


async def test_a_cancelled_appointment_stops_the_reminder(journeys: Journeys) -> None:
    run = await book(journeys, {**BOOKING, "phone": "+12125550123"})
    await journeys.until(run, lambda detail: detail.run.state == "waiting", what="the run to wait for the reminder")

    await journeys.tocsin.send_signal(tenant_id="acme", recipient=RECIPIENT, name="appointment.cancelled")
    detail = await journeys.run_to_end(run)

    assert (detail.run.state, detail.run.terminal_reason) == ("stopped", "signal:appointment.cancelled")
    assert [d.step_key for d in detail.deliveries] == ["confirmation"]
    assert journeys.channels["sms"].messages == journeys.channels["email"].messages == []
