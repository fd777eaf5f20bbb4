"""SPEC 11.1-11.4 and 11.7 on a real Postgres: conditions, `until` waits, send windows and retry times,
feedback deadlines, throttling and trigger data, each checked on the exact rows the engine writes."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from journeys import (
    RECIPIENT,
    TENANT,
    assert_seq_contiguous,
    attempts,
    counts,
    deliveries,
    delivery_at,
    drive,
    journey,
    later,
    lock_waiters,
    on,
    reasons,
    run_row,
    snapshot,
    start,
    step,
    transitions,
)
from sqlalchemy import text

from tocsin.channels import OutboundMessage, SendReceipt, TemporaryDeliveryError
from tocsin.core.errors import InvalidRequest
from tocsin.db import Database
from tocsin.db import queries as q
from tocsin.engine import cancel_run, create_run, progress_run
from tocsin.engine.dispatch import dispatch_delivery
from tocsin.engine.feedback import record_delivery_outcome, settle_feedback_deadline, settle_feedback_deadlines
from tocsin.engine.preferences import set_recipient
from tocsin.engine.reconcile import overdue_sends, settle_overdue_feedback, unfinished_runs
from tocsin.engine.registry import register_definition

# --- conditions (SPEC 11.1) -----------------------------------------------------------------------------------

CONDITIONAL = journey(
    "conditional",
    step(
        "note",
        "in_app",
        {"kind": "on_outcome", "outcome": "delivered", "to_step": "pro", "when": "account.plan == 'pro'"},
        on("delivered", "sms"),
        on("suppressed", "sms"),
    ),
    {**step("pro", "email", content={"body": "welcome, {{ recipient }}"}), "when": "account.seats > 10"},
    step("sms", "sms", content={"body": "hi"}),
)


async def noted(db: Database, now: datetime, data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    run = await start(db, CONDITIONAL, now=now, data={"actor": "Ada", "account": data})
    first = await delivery_at(db, run.id, 1)
    await drive(db, first["id"], "succeeded", now=now)
    return run, first


async def test_a_true_rule_condition_fires_and_is_recorded_on_its_transition_and_the_run(
    db: Database, t0: datetime
) -> None:
    run, _ = await noted(db, t0, {"plan": "pro", "seats": 20})
    progress = await progress_run(db, run.id, now=t0)
    assert progress.kind == "advanced"
    row = await run_row(db, run.id)
    assert (row["current_step"], row["status_context"]["when"]) == ("pro", "account.plan == 'pro'")
    moved = [tr for tr in await transitions(db, run.id) if tr["reason"] == "progressed_on_delivery_outcome"]
    assert moved[0]["context"]["when"] == "account.plan == 'pro'"
    planned = await delivery_at(db, run.id, 2)
    # The step's own condition held: planned to be sent, rendered against the context (recipient included).
    assert (planned["status"], planned["content"]) == ("pending", {"body": f"welcome, {RECIPIENT}"})


async def test_a_false_rule_condition_is_passed_over_for_the_next_rule(db: Database, t0: datetime) -> None:
    run, _ = await noted(db, t0, {"plan": "free", "seats": 1})
    await progress_run(db, run.id, now=t0)
    row = await run_row(db, run.id)
    assert row["current_step"] == "sms"
    assert "when" not in row["status_context"]  # the rule that fired has no condition


async def test_a_false_step_condition_plans_the_delivery_suppressed_and_the_run_acts_on_it(
    db: Database, t0: datetime
) -> None:
    run, _ = await noted(db, t0, {"plan": "pro", "seats": 2})
    at = later(t0, minutes=1)
    await progress_run(db, run.id, now=at)
    planned = await delivery_at(db, run.id, 2)
    assert (planned["status"], planned["suppression_reason"], planned["terminal_at"]) == (
        "suppressed",
        "condition_not_met",
        at,
    )
    assert planned["content"] == {}
    assert await attempts(db, planned["id"]) == []  # nothing was sent, nothing failed
    # The step's rules see `suppressed`: this step has none, so the run completes at once.
    assert (await progress_run(db, run.id, now=at)).kind == "completed"


async def test_a_step_condition_that_cannot_be_evaluated_is_a_render_failure(db: Database, t0: datetime) -> None:
    run, _ = await noted(db, t0, {"plan": "pro"})  # no `account.seats`: undefined under StrictUndefined
    await progress_run(db, run.id, now=t0)
    planned = await delivery_at(db, run.id, 2)
    assert (planned["status"], planned["suppression_reason"]) == ("suppressed", "render_failed")
    (rejected,) = await attempts(db, planned["id"])
    assert (rejected["outcome"], rejected["error_class"]) == ("rejected", "permanent")
    assert "seats" not in json.dumps(planned["content"])


async def test_a_rule_condition_that_fails_to_evaluate_stops_the_run(db: Database, t0: datetime) -> None:
    run, first = await noted(db, t0, {"seats": 20})  # no `account.plan`
    progress = await progress_run(db, run.id, now=t0)
    assert progress.kind == "stopped"
    row = await run_row(db, run.id)
    context = {"rule_kind": "on_outcome", "when": "account.plan == 'pro'", "error": "evaluation_failed"}
    assert (row["state"], row["status_reason"], row["terminal_reason"], row["status_context"]) == (
        "stopped",
        "rule_failed",
        "error:invalid_condition",
        context,
    )
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    last = trail[-1]
    assert (last["reason"], last["from_state"], last["to_state"], last["context"], last["delivery_id"]) == (
        "rule_failed",
        "active",
        "stopped",
        context,
        first["id"],
    )


# --- until waits (SPEC 11.2) ----------------------------------------------------------------------------------

REMINDER = journey(
    "reminder",
    step(
        "confirm",
        "in_app",
        {"kind": "wait_until", "until": "{{ appointment_at }}", "offset": "-P1D", "to_step": "remind"},
    ),
    step("remind", "sms", content={"body": "see you tomorrow"}),
)


async def confirmed(db: Database, now: datetime, appointment_at: object) -> Any:
    run = await start(db, REMINDER, now=now, data={"actor": "Ada", "appointment_at": appointment_at})
    await drive(db, (await delivery_at(db, run.id, 1))["id"], "succeeded", now=now)
    return run


async def test_an_until_wait_is_due_a_day_before_the_moment_in_the_data(db: Database, t0: datetime) -> None:
    run = await confirmed(db, t0, "2026-01-20T10:30:00+01:00")
    progress = await progress_run(db, run.id, now=t0)
    due = datetime.fromisoformat("2026-01-19T09:30:00+00:00")
    assert (progress.kind, progress.run.due_at) == ("waiting", due)
    first = await delivery_at(db, run.id, 1)
    assert progress.run.status_context == {
        "rule_kind": "wait_until",
        "anchor": "until",
        "anchor_delivery_id": str(first["id"]),
        "anchor_delivery_status": "succeeded",
        "anchor_timestamp": "2026-01-20T09:30:00+00:00",
        "until": "2026-01-20T10:30:00+01:00",
        "offset_seconds": -86400,
        "due_at": due.isoformat(),
        "to_step": "remind",
    }
    assert (await progress_run(db, run.id, now=due - timedelta(seconds=1))).reason == "wait_not_due"
    assert (await progress_run(db, run.id, now=due)).kind == "advanced"


async def test_an_until_in_the_past_enters_the_wait_and_advances_at_the_next_progress(
    db: Database, t0: datetime
) -> None:
    run = await confirmed(db, t0, "2025-12-01T08:00:00Z")
    assert (await progress_run(db, run.id, now=t0)).kind == "waiting"
    assert (await progress_run(db, run.id, now=t0)).kind == "advanced"
    assert reasons(await transitions(db, run.id))[-3:] == [
        "waiting_for_step_progression",
        "reactivated_from_wait",
        "step_activated",
    ]


@pytest.mark.parametrize(
    ("value", "error"),
    [("next tuesday", "not_a_timestamp"), ("2026-01-20T10:30:00", "no_offset"), ("2026-01-20", "no_offset")],
)
async def test_an_until_that_is_no_moment_with_an_offset_stops_the_run(
    db: Database, t0: datetime, value: str, error: str
) -> None:
    run = await confirmed(db, t0, value)
    progress = await progress_run(db, run.id, now=t0)
    assert progress.kind == "stopped"
    row = await run_row(db, run.id)
    assert (row["status_reason"], row["terminal_reason"]) == ("wait_failed", "error:invalid_until")
    last = (await transitions(db, run.id))[-1]
    context = {"rule_kind": "wait_until", "to_step": "remind", "error": error}
    assert (last["reason"], last["from_state"], last["to_state"], last["context"]) == (
        "wait_failed",
        "active",
        "stopped",
        context,
    )
    assert value not in json.dumps(row["status_context"])  # never the data


async def test_an_until_that_cannot_be_rendered_stops_the_run(db: Database, t0: datetime) -> None:
    spec = journey(
        "reminder_guarded",
        step(
            "confirm",
            "in_app",
            # Guarded, so the trigger may leave it out; then the wait cannot be computed.
            {"kind": "wait_until", "until": "{{ (appointment_at | default({})).moment }}", "to_step": "x"},
        ),
        step("x", "sms", content={"body": "hi"}),
    )
    run = await start(db, spec, now=t0, data={"actor": "Ada"})
    await drive(db, (await delivery_at(db, run.id, 1))["id"], "succeeded", now=t0)
    await progress_run(db, run.id, now=t0)
    last = (await transitions(db, run.id))[-1]
    assert (last["reason"], last["context"]) == (
        "wait_failed",
        {"rule_kind": "wait_until", "to_step": "x", "error": "render_failed"},
    )


# --- send windows and retry times (SPEC 11.3) -----------------------------------------------------------------

WINDOWED = journey(
    "windowed",
    {
        **step("sms", "sms", content={"body": "hi"}),
        "send_window": {"timezone": "{{ tz }}", "start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed"]},
        "retry": {"max_attempts": 3, "initial_interval": "PT2H", "backoff_coefficient": 2, "maximum_interval": "P1D"},
    },
    default_timezone="Europe/Berlin",
)


@pytest.mark.parametrize(
    ("tz", "zone", "scheduled"),
    [
        # Monday 2026-01-05 09:00 UTC is 10:00 in Berlin: inside, sent at once.
        ("Europe/Berlin", "Europe/Berlin", None),
        # ... and 04:00 in New York: the window opens at 09:00 there, 14:00 UTC.
        ("America/New_York", "America/New_York", datetime.fromisoformat("2026-01-05T14:00:00+00:00")),
        # An unknown rendered zone falls back to the definition's default.
        ("Mars/Olympus", "Europe/Berlin", None),
    ],
)
async def test_planning_schedules_a_delivery_for_its_window_in_the_rendered_zone(
    db: Database, t0: datetime, tz: str, zone: str, scheduled: datetime | None
) -> None:
    run = await start(db, WINDOWED, now=t0, data={"tz": tz, "actor": "Ada"})
    planned = await delivery_at(db, run.id, 1)
    assert (planned["status"], planned["send_timezone"], planned["scheduled_for"]) == ("pending", zone, scheduled)


async def test_the_recipients_zone_is_used_when_the_step_names_none(db: Database, t0: datetime) -> None:
    spec = journey(
        "windowed_by_recipient",
        {**step("sms", "sms", content={"body": "hi"}), "send_window": {"start": "09:00", "end": "17:00"}},
    )
    await set_recipient(db, tenant_id=TENANT, recipient=RECIPIENT, timezone="Asia/Tokyo", now=t0)
    run = await start(db, spec, now=t0, data={"actor": "Ada"})
    planned = await delivery_at(db, run.id, 1)
    # 09:00 UTC is 18:00 in Tokyo: closed until 09:00 there tomorrow, 00:00 UTC.
    assert (planned["send_timezone"], planned["scheduled_for"]) == (
        "Asia/Tokyo",
        datetime.fromisoformat("2026-01-06T00:00:00+00:00"),
    )


class Flaky:
    """An adapter that fails temporarily `failures` times, then takes the message."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.sent.append(message)
        if len(self.sent) <= self.failures:
            raise TemporaryDeliveryError("smtp 451")
        return SendReceipt(provider_message_id=f"msg-{len(self.sent)}")


async def test_dispatch_refuses_to_send_before_scheduled_for_and_writes_nothing(db: Database, t0: datetime) -> None:
    run = await start(db, WINDOWED, now=t0, data={"tz": "America/New_York", "actor": "Ada"})
    planned = await delivery_at(db, run.id, 1)
    adapter = Flaky(0)
    before = await snapshot(db)
    early = planned["scheduled_for"] - timedelta(seconds=1)
    delivery = await dispatch_delivery(db, planned["id"], channels={"sms": adapter}, now=early)
    assert (delivery.status, adapter.sent, await snapshot(db)) == ("pending", [], before)
    sent = await dispatch_delivery(db, planned["id"], channels={"sms": adapter}, now=planned["scheduled_for"])
    assert (sent.status, len(adapter.sent)) == ("succeeded", 1)


async def test_a_retry_whose_backoff_lands_in_quiet_hours_waits_for_the_window(db: Database, t0: datetime) -> None:
    # Tuesday 2026-01-06 15:30 Berlin (14:30 UTC): inside the window. The backoff of 2 h lands at 17:30, past its
    # end, so the retry waits for Wednesday 09:00 Berlin; the second backoff (4 h) from Wednesday 10:00 lands
    # at 14:00, inside.
    at = datetime.fromisoformat("2026-01-06T14:30:00+00:00")
    run = await start(db, WINDOWED, now=at, data={"tz": "Europe/Berlin", "actor": "Ada"})
    planned = await delivery_at(db, run.id, 1)
    assert planned["scheduled_for"] is None
    adapter = Flaky(2)
    failed = await dispatch_delivery(db, planned["id"], channels={"sms": adapter}, now=at)
    assert (failed.status, failed.scheduled_for) == ("failed", datetime.fromisoformat("2026-01-07T08:00:00+00:00"))
    assert (await dispatch_delivery(db, planned["id"], channels={"sms": adapter}, now=at)).attempt_count == 1
    wednesday = datetime.fromisoformat("2026-01-07T09:00:00+00:00")
    again = await dispatch_delivery(db, planned["id"], channels={"sms": adapter}, now=wednesday)
    assert (again.status, again.attempt_count, again.scheduled_for) == ("failed", 2, later(wednesday, hours=4))


async def test_a_temporary_failure_reported_later_schedules_the_retry(db: Database, t0: datetime) -> None:
    run = await start(db, WINDOWED, now=t0, data={"tz": "Europe/Berlin", "actor": "Ada"})
    planned = await delivery_at(db, run.id, 1)
    await drive(db, planned["id"], "dispatched", now=t0)
    reported = await record_delivery_outcome(
        db, planned["id"], tenant_id=TENANT, outcome="temporary_failure", now=later(t0, minutes=5)
    )
    assert (reported.status, reported.scheduled_for) == ("failed", later(t0, hours=2, minutes=5))


# --- feedback deadlines (SPEC 11.3) ---------------------------------------------------------------------------


class Accepting:
    """A provider that takes every message and reports on it later."""

    async def send(self, message: OutboundMessage) -> SendReceipt:
        return SendReceipt(provider_message_id="msg-1", awaiting_feedback=True)


AWAITING = journey(
    "awaiting", {**step("email", "email", on("delivered", "after")), "feedback_timeout": "PT6H"}, step("after", "sms")
)


async def accepted(db: Database, now: datetime) -> tuple[Any, Any]:
    run = await start(db, AWAITING, now=now)
    planned = await delivery_at(db, run.id, 1)
    delivery = await dispatch_delivery(db, planned["id"], channels={"email": Accepting()}, now=now)
    assert (delivery.status, delivery.feedback_due_at) == ("dispatched", later(now, hours=6))
    return run, delivery


async def test_a_delivery_that_never_hears_back_settles_as_delivered_at_its_deadline(
    db: Database, t0: datetime
) -> None:
    run, delivery = await accepted(db, t0)
    deadline = later(t0, hours=6)
    assert (await settle_feedback_deadline(db, delivery.id, now=deadline - timedelta(seconds=1))).status == "dispatched"
    woke = later(deadline, minutes=3)
    settled = await settle_feedback_deadline(db, delivery.id, now=woke)
    assert (settled.status, settled.terminal_at, settled.updated_at) == ("succeeded", deadline, woke)
    last = (await attempts(db, delivery.id))[-1]
    assert (last["outcome"], last["send_number"], last["provider_response"], last["created_at"]) == (
        "succeeded",
        None,
        {"settled_by": "feedback_timeout"},
        woke,
    )
    assert (await progress_run(db, run.id, now=woke)).kind == "advanced"
    # Settling again writes nothing.
    before = await counts(db)
    assert (await settle_feedback_deadline(db, delivery.id, now=woke)).status == "succeeded"
    assert await counts(db) == before


async def test_feedback_that_arrives_before_the_deadline_wins(db: Database, t0: datetime) -> None:
    _, delivery = await accepted(db, t0)
    await record_delivery_outcome(db, delivery.id, tenant_id=TENANT, outcome="bounced", now=later(t0, hours=1))
    assert await settle_feedback_deadlines(db, now=later(t0, days=1)) == []  # the bounce settled it
    assert (await delivery_at(db, delivery.run_id, 1))["suppression_reason"] == "bounced"


async def test_the_sweep_settles_overdue_deadlines_once_and_skips_runs_held_elsewhere(
    db: Database, t0: datetime
) -> None:
    (_, first), (held_run, held) = [await accepted(db, t0) for _ in range(2)]
    async with db.transaction() as holder:
        await holder.execute(text("SELECT 1 FROM tocsin.workflow_runs WHERE id = :id FOR UPDATE"), {"id": held_run.id})
        settled = await settle_feedback_deadlines(db, now=later(t0, hours=7))
    assert [d.id for d in settled] == [first.id]
    assert [d.id for d in await settle_feedback_deadlines(db, now=later(t0, hours=7))] == [held.id]
    assert await settle_feedback_deadlines(db, now=later(t0, hours=8)) == []


# --- throttling (SPEC 11.4) -----------------------------------------------------------------------------------

THROTTLED = journey("throttled", step("note", "in_app"), throttle={"limit": 3, "period": "PT1H", "key": "{{ topic }}"})


async def trigger(db: Database, now: datetime, key: str, topic: str = "billing") -> Any:
    run, _ = await create_run(
        db,
        tenant_id=TENANT,
        workflow_key="throttled",
        recipient=RECIPIENT,
        idempotency_key=key,
        data={"actor": "Ada", "topic": topic},
        now=now,
    )
    return run


async def test_a_throttled_run_is_recorded_stopped_with_no_delivery_and_no_workflow(db: Database, t0: datetime) -> None:
    await register_definition(db, THROTTLED, now=t0)
    for n in range(3):
        assert (await trigger(db, later(t0, minutes=n), f"k{n}")).state == "active"
    other_topic = await trigger(db, later(t0, minutes=4), "other", topic="security")
    assert (other_topic.state, other_topic.throttle_key) == ("active", "security")
    run = await trigger(db, later(t0, minutes=5), "k3")
    assert (run.state, run.status_reason, run.terminal_reason, run.workflow_started, run.throttle_key) == (
        "stopped",
        "throttled",
        "throttle:3/3600s",
        False,
        "billing",
    )
    assert await deliveries(db, run.id) == []
    trail = await transitions(db, run.id)
    assert [(tr["reason"], tr["from_state"], tr["to_state"]) for tr in trail] == [
        ("workflow_started", None, "active"),
        ("workflow_throttled", "active", "stopped"),
    ]
    assert trail[1]["context"] == {"limit": 3, "period_seconds": 3600, "count": 3}
    # The same key again: the same run, nothing written.
    before = await snapshot(db)
    assert (await trigger(db, later(t0, minutes=6), "k3")).id == run.id
    assert await snapshot(db) == before
    # An hour after the first run, one slot is free again: (now - period, now] no longer holds it.
    assert (await trigger(db, later(t0, hours=1), "k4")).state == "active"


async def test_concurrent_triggers_of_one_scope_never_let_more_than_the_limit_through(
    db: Database, t0: datetime
) -> None:
    await register_definition(db, THROTTLED, now=t0)
    scope = json.dumps([TENANT, "throttled", RECIPIENT, "billing"])
    async with db.transaction() as holder:
        # Hold the scope's lock until all 20 triggers queue behind it, so they truly overlap.
        await holder.execute(q.LOCK_THROTTLE_SCOPE, {"scope": scope})
        tasks = [asyncio.create_task(trigger(db, t0, f"c{n}")) for n in range(20)]
        await lock_waiters(db, 20)
        assert not any(task.done() for task in tasks)
    runs = await asyncio.gather(*tasks)
    assert sorted(r.state for r in runs) == ["active"] * 3 + ["stopped"] * 17
    for run in runs:
        assert_seq_contiguous(await transitions(db, run.id))


# --- trigger data (SPEC 11.7) ---------------------------------------------------------------------------------

SCHEMA = journey(
    "appointment",
    step("note", "in_app", content={"body": "{{ actor }} booked {{ appointment_at }}"}),
    step("sms", "sms", content={"body": "{{ carrier }}"}),
    data_schema={
        "type": "object",
        "properties": {"appointment_at": {"type": "string", "format": "date-time"}},
        "required": ["appointment_at"],
    },
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"actor": "Ada", "appointment_at": "soon", "carrier": "x"}, "data.appointment_at"),
        ({"actor": "Ada", "carrier": "x"}, "appointment_at"),
        (
            {"actor": "Ada", "appointment_at": "2026-02-01T10:00:00Z"},
            "data is missing 'carrier' (steps[1].content.body)",
        ),
    ],
)
async def test_bad_trigger_data_is_refused_naming_the_path_and_nothing_is_written(
    db: Database, t0: datetime, data: dict[str, Any], message: str
) -> None:
    await register_definition(db, SCHEMA, now=t0)
    before = await snapshot(db)
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        await create_run(
            db,
            tenant_id=TENANT,
            workflow_key="appointment",
            recipient=RECIPIENT,
            idempotency_key="a1",
            data=data,
            now=t0,
        )
    assert await snapshot(db) == before


# --- the reconcile sweep's share (SPEC 11.3) -------------------------------------------------------------------


async def test_the_sweep_finds_sends_whose_time_passed_and_feedback_overdue_past_the_grace(
    db: Database, t0: datetime
) -> None:
    grace = timedelta(minutes=2)
    run = await start(db, WINDOWED, now=t0, data={"tz": "America/New_York", "actor": "Ada"})
    opens = (await delivery_at(db, run.id, 1))["scheduled_for"]
    # Until the opening is overdue by the grace, the workflow's own timer is left to fire.
    assert await overdue_sends(db, now=opens + grace - timedelta(seconds=1), grace=grace) == []
    assert await overdue_sends(db, now=opens + grace, grace=grace) == [run.id]

    _, awaiting = await accepted(db, t0)
    deadline = later(t0, hours=6)
    assert await settle_overdue_feedback(db, now=deadline + grace - timedelta(seconds=1), grace=grace) == []
    (settled,) = await settle_overdue_feedback(db, now=deadline + grace, grace=grace)
    assert (settled.id, settled.status, settled.terminal_at) == (awaiting.id, "succeeded", deadline)


async def test_the_sweep_reads_which_runs_of_closed_workflows_are_unfinished_in_one_read(
    db: Database, t0: datetime
) -> None:
    open_run = await start(db, WINDOWED, now=t0, data={"tz": "America/New_York", "actor": "Ada"})
    done = await start(db, WINDOWED, now=t0, data={"tz": "America/New_York", "actor": "Ada"})
    await cancel_run(db, done.id, tenant_id=TENANT, reason="done", now=t0)
    gone = uuid.uuid4()  # a workflow whose run is not in this database

    found = await unfinished_runs(db, [open_run.id, done.id, gone])

    assert list(found) == [open_run.id]
    assert found[open_run.id].state == "active"
    assert await unfinished_runs(db, []) == {}
