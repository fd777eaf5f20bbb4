"""Whole journeys on a real time-skipping Temporal server and a real Postgres, through tocsin.testing's
`journeys` fixture (SPEC 13): recording channels stand in for the providers, scripted per test. The adapters
themselves are tested against real SMTP and HTTP peers in tests/channels.
"""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import recording
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from tocsin import Tocsin
from tocsin.core.contracts import CancelRequest, Round
from tocsin.core.models import Run, RunDetail
from tocsin.db import Database
from tocsin.examples import example
from tocsin.testing import Action, Journeys

MENTION = example("mention_escalation")

DUNNING: dict[str, Any] = {
    "key": "dunning",
    "version": 1,
    "steps": [
        {
            "key": "first_notice",
            "channel": "email",
            "content": {"subject": "Invoice {{ invoice }} is due", "body": "Please pay {{ amount }}."},
            "progress": [{"kind": "wait_until", "delay": "P3D", "to_step": "reminder", "cancel_signals": ["paid"]}],
        },
        {
            "key": "reminder",
            "channel": "email",
            "content": {"subject": "Reminder: invoice {{ invoice }}", "body": "Still due: {{ amount }}."},
            "progress": [{"kind": "wait_until", "delay": "P7D", "to_step": "final", "cancel_signals": ["paid"]}],
        },
        {"key": "final", "channel": "webhook", "content": {"event": "dunning.final", "invoice": "{{ invoice }}"}},
    ],
}

BOUNCE_TO_WEBHOOK: dict[str, Any] = {
    "key": "bounce_fallback",
    "version": 1,
    "steps": [
        {
            "key": "email",
            "channel": "email",
            "content": {"subject": "Hello", "body": "Hi {{ name }}"},
            "progress": [{"kind": "on_outcome", "outcome": "bounced", "to_step": "ops_webhook"}],
        },
        {"key": "ops_webhook", "channel": "webhook", "content": {"event": "email.bounced", "name": "{{ name }}"}},
    ],
}


def reasons(detail: RunDetail) -> list[str]:
    return [t.reason for t in detail.transitions]


def assert_one_delivery_per_activation(detail: RunDetail) -> None:
    activations = [d.activation for d in detail.deliveries]
    assert activations == list(range(1, len(activations) + 1))
    assert [t.seq for t in detail.transitions] == list(range(1, len(detail.transitions) + 1))


async def record_history(journeys: Journeys, run: Run, name: str) -> None:
    await recording.record_history(journeys.handle(run), name)


async def start(journeys: Journeys, definition: dict[str, Any], data: dict[str, Any], **script: list[Action]) -> Run:
    """Register `definition`, script its channels (channel name = actions), start one run of it."""
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


def waiting(detail: RunDetail) -> bool:
    return detail.run.state == "waiting"


async def test_mention_journey_waits_two_hours_then_emails(journeys: Journeys) -> None:
    run = await start(journeys, MENTION, {"actor": "Grace", "excerpt": "see PR 12"})

    detail = await journeys.run_to_end(run)

    assert detail.run.state == "completed"
    assert reasons(detail) == [
        "workflow_started",
        "step_activated",
        "waiting_for_step_progression",
        "reactivated_from_wait",
        "step_activated",
        "workflow_completed",
    ]
    in_app, email = detail.deliveries
    assert (in_app.channel, in_app.status, in_app.content["title"]) == ("in_app", "succeeded", "Grace mentioned you")
    assert email.status == "succeeded"
    assert in_app.terminal_at is not None and email.terminal_at is not None
    wait = detail.transitions[2].context
    assert wait["due_at"] == (in_app.terminal_at + timedelta(hours=2)).isoformat()
    # The email went out when the wait elapsed, by the server's (skipped) clock.
    assert (email.created_at - in_app.terminal_at).total_seconds() >= 7200
    [mail] = journeys.channels["email"].messages
    assert mail.content == {"subject": "You were mentioned", "body": "Grace wrote: see PR 12"}
    assert (mail.delivery_id, mail.idempotency_key, mail.recipient) == (
        email.id,
        str(email.id),
        "email:ada@example.com",
    )
    assert [m.delivery_id for m in journeys.channels["in_app"].messages] == [in_app.id]
    assert_one_delivery_per_activation(detail)
    await record_history(journeys, run, "mention_completed")


async def test_reading_the_notification_during_the_wait_stops_the_run_and_its_timer(journeys: Journeys) -> None:
    run = await start(journeys, MENTION, {"actor": "Grace", "excerpt": "see PR 12"})
    waited = await journeys.until(run, waiting, what="the run to wait")
    status = await journeys.handle(run).query("status", result_type=Round)
    assert (status.kind, status.run.state, status.run.due_at) == ("waiting", "waiting", waited.run.due_at)
    [item] = await journeys.tocsin.inbox(tenant_id="acme", recipient="email:ada@example.com")
    assert item.id == waited.deliveries[0].id

    await journeys.tocsin.mark_read(item.id, tenant_id="acme")
    detail = await journeys.run_to_end(run)

    assert detail.run.state == "stopped"
    assert detail.run.status_reason == "stopped_by_signal"
    assert detail.run.terminal_reason == "signal:notification.read"
    assert detail.run.due_at is None
    assert reasons(detail)[-1] == "signal_received"
    assert len(detail.deliveries) == 1 and journeys.channels["email"].messages == []
    history = await journeys.handle(run).fetch_history()
    event_types = [e.event_type for e in history.events]
    assert EventType.EVENT_TYPE_TIMER_CANCELED in event_types
    assert EventType.EVENT_TYPE_TIMER_FIRED not in event_types
    await record_history(journeys, run, "mention_read_during_wait")


async def test_dunning_journey_with_waits_of_days(journeys: Journeys) -> None:
    run = await start(journeys, DUNNING, {"invoice": "INV-7", "amount": "42 EUR"})
    began = time.monotonic()

    detail = await journeys.run_to_end(run)

    elapsed = time.monotonic() - began
    print(f"dunning journey: 10 days of waits took {elapsed:.2f}s of wall time")
    assert detail.run.state == "completed"
    assert [d.step_key for d in detail.deliveries] == ["first_notice", "reminder", "final"]
    assert all(d.status == "succeeded" for d in detail.deliveries)
    first, reminder, final = detail.deliveries
    assert first.terminal_at and reminder.terminal_at
    assert (reminder.created_at - first.terminal_at).days >= 3
    assert (final.created_at - reminder.terminal_at).days >= 7
    emails = journeys.channels["email"].messages
    assert [m.content["subject"] for m in emails] == ["Invoice INV-7 is due", "Reminder: invoice INV-7"]
    [hook] = journeys.channels["webhook"].messages
    assert hook.content == {"event": "dunning.final", "invoice": "INV-7"}
    assert hook.idempotency_key == str(final.id)
    assert_one_delivery_per_activation(detail)
    await record_history(journeys, run, "dunning_completed")


async def test_a_bounced_email_takes_the_bounced_branch(journeys: Journeys) -> None:
    run = await start(journeys, BOUNCE_TO_WEBHOOK, {"name": "Ada"}, email=["bounce"])

    detail = await journeys.run_to_end(run)

    email, hook_delivery = detail.deliveries
    assert (email.status, email.suppression_reason, email.attempt_count) == ("cancelled", "bounced", 1)
    progressed = next(t for t in detail.transitions if t.reason == "progressed_on_delivery_outcome")
    assert progressed.context["workflow_outcome"] == "bounced"
    assert progressed.context["attempt_error_class"] == "bounced"
    assert hook_delivery.status == "succeeded"
    [hook] = journeys.channels["webhook"].messages
    assert hook.content == {"event": "email.bounced", "name": "Ada"}
    assert detail.run.state == "completed"
    await record_history(journeys, run, "bounce_to_webhook")


async def test_bounce_reported_later_by_the_provider_takes_the_bounced_branch(journeys: Journeys) -> None:
    definition = BOUNCE_TO_WEBHOOK | {"key": "bounce_feedback"}
    run = await start(journeys, definition, {"name": "Ada"}, email=["awaiting_feedback"])
    accepted = await journeys.until(
        run, lambda d: len(d.attempts) == 1 and d.deliveries[0].status == "dispatched", what="the relay to accept"
    )
    assert len(journeys.channels["email"].messages) == 1

    await journeys.tocsin.record_delivery_outcome(
        accepted.deliveries[0].id, tenant_id="acme", outcome="bounced", error="5.1.1 mailbox unavailable"
    )
    detail = await journeys.run_to_end(run)

    email, hook_delivery = detail.deliveries
    assert (email.status, email.suppression_reason) == ("cancelled", "bounced")
    assert [a.outcome for a in detail.attempts if a.delivery_id == email.id] == ["succeeded", "bounced"]
    assert hook_delivery.status == "succeeded" and len(journeys.channels["webhook"].messages) == 1
    assert detail.run.state == "completed"

    # A second, late report on a terminal delivery is evidence only: an attempt row, a signal, no move.
    late = await journeys.tocsin.record_delivery_outcome(email.id, tenant_id="acme", outcome="delivered")
    assert (late.status, late.suppression_reason) == ("cancelled", "bounced")


RETRYING: dict[str, Any] = {
    "key": "webhook_with_fallback",
    "version": 1,
    "steps": [
        {
            "key": "hook",
            "channel": "webhook",
            "content": {"event": "alert"},
            "retry": {"max_attempts": 3, "initial_interval": "PT30S", "backoff_coefficient": 2},
            "progress": [
                {"kind": "on_outcome", "outcome": "retries_exhausted", "to_step": "email"},
                {"kind": "stop", "outcome": "permanent_failure"},
            ],
        },
        {"key": "email", "channel": "email", "content": {"subject": "Alert", "body": "webhook unreachable"}},
    ],
}


async def test_temporary_failures_are_retried_then_retries_exhausted_is_taken(journeys: Journeys) -> None:
    run = await start(journeys, RETRYING, {}, webhook=["temp"])

    detail = await journeys.run_to_end(run)

    hook, email = detail.deliveries
    assert (hook.status, hook.suppression_reason, hook.attempt_count) == ("cancelled", "retries_exhausted", 3)
    hook_attempts = [a for a in detail.attempts if a.delivery_id == hook.id]
    assert [(a.outcome, a.error_class, a.error) for a in hook_attempts] == [
        ("failed", "temporary", "scripted_temporary_failure")
    ] * 3
    # Backoff on durable timers: 30 s, then 60 s between the attempts.
    gaps = [(b.created_at - a.created_at).total_seconds() for a, b in itertools.pairwise(hook_attempts)]
    assert gaps[0] >= 30 and gaps[1] >= 60
    sent = journeys.channels["webhook"].messages
    assert len(sent) == 3 and {m.idempotency_key for m in sent} == {str(hook.id)}
    assert email.status == "succeeded" and len(journeys.channels["email"].messages) == 1
    progressed = next(t for t in detail.transitions if t.reason == "progressed_on_delivery_outcome")
    assert progressed.context["workflow_outcome"] == "retries_exhausted"
    await record_history(journeys, run, "retries_exhausted")


async def test_a_permanent_failure_is_not_retried(journeys: Journeys) -> None:
    run = await start(journeys, RETRYING, {}, webhook=["perm"])

    detail = await journeys.run_to_end(run)

    [hook] = detail.deliveries
    assert (hook.status, hook.suppression_reason, hook.attempt_count) == ("cancelled", "permanent_failure", 1)
    assert len(journeys.channels["webhook"].messages) == 1
    assert (detail.run.state, detail.run.terminal_reason) == ("stopped", "rule:permanent_failure")


async def test_cancel_through_the_update_stops_a_waiting_run(journeys: Journeys) -> None:
    run = await start(journeys, MENTION, {"actor": "Grace", "excerpt": "x"})
    await journeys.until(run, waiting, what="the run to wait")
    # The update's validator refuses a blank reason before anything runs.
    with pytest.raises(WorkflowUpdateFailedError):
        await journeys.handle(run).execute_update("cancel", CancelRequest(tenant_id="acme", reason="  "))
    assert (await journeys.tocsin.get_run(run.id, tenant_id="acme")).run.state == "waiting"

    cancelled = await journeys.tocsin.cancel_run(run.id, tenant_id="acme", reason="unsubscribed")
    detail = await journeys.run_to_end(run)

    assert (cancelled.state, cancelled.status_reason, cancelled.terminal_reason) == (
        "stopped",
        "stopped_by_request",
        "unsubscribed",
    )
    assert reasons(detail)[-1] == "workflow_cancelled"
    assert journeys.channels["email"].messages == []
    # The run has finished: another cancel returns it as it is.
    again = await journeys.tocsin.cancel_run(run.id, tenant_id="acme", reason="again")
    assert again.terminal_reason == "unsubscribed"
    await record_history(journeys, run, "cancelled_while_waiting")


async def test_duplicate_start_and_duplicate_wakes_never_duplicate_a_delivery(journeys: Journeys) -> None:
    await journeys.register(MENTION)
    kwargs: dict[str, Any] = {
        "workflow_key": "mention_escalation",
        "tenant_id": "acme",
        "recipient": "email:ada@example.com",
        "data": {"actor": "Grace", "excerpt": "x"},
        "idempotency_key": "mention-123",
    }
    first = await journeys.tocsin.start_run(**kwargs)
    second = await journeys.tocsin.start_run(**kwargs)
    assert first.id == second.id
    handle = journeys.handle(first)
    await journeys.until(first, waiting, what="the run to wait")
    for _ in range(5):
        await handle.signal("wake")

    detail = await journeys.run_to_end(first)
    for _ in range(3):  # out of order: after the run finished
        await journeys.tocsin.record_delivery_outcome(detail.deliveries[1].id, tenant_id="acme", outcome="delivered")

    detail = await journeys.tocsin.get_run(first.id, tenant_id="acme")
    assert detail.run.state == "completed"
    assert [d.step_key for d in detail.deliveries] == ["in_app", "email"]
    assert len(journeys.channels["email"].messages) == 1
    assert_one_delivery_per_activation(detail)
    assert [d.attempt_count for d in detail.deliveries] == [1, 1]
    history = await handle.fetch_history()
    started = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED]
    assert len(started) == 1
    await record_history(journeys, first, "duplicate_wakes")


async def test_cancel_without_a_worker_falls_back_to_postgres(
    tocsin_temporal: WorkflowEnvironment, tocsin_db: Database
) -> None:
    # No worker polls this task queue: the workflow never takes the update, so cancel must not hang.
    tocsin = Tocsin(tocsin_db, tocsin_temporal.client, task_queue=f"nobody-{uuid.uuid4()}")
    tocsin.update_timeout = timedelta(seconds=1)
    await tocsin.register_definition(MENTION)
    run = await tocsin.start_run(
        workflow_key="mention_escalation",
        tenant_id="acme",
        recipient="user:1",
        data={"actor": "A", "excerpt": "x"},
        idempotency_key="no-worker",
    )
    assert run.workflow_started

    cancelled = await tocsin.cancel_run(run.id, tenant_id="acme", reason="unsubscribed")

    assert (cancelled.state, cancelled.status_reason, cancelled.terminal_reason) == (
        "stopped",
        "stopped_by_request",
        "unsubscribed",
    )
    detail = await tocsin.get_run(run.id, tenant_id="acme")
    assert [d.status for d in detail.deliveries] == ["cancelled"]
    assert reasons(detail)[-1] == "workflow_cancelled"
