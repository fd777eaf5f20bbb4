"""progress_run (SPEC 4.2-4.6): every decision, with the exact rows it writes; noops write nothing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from journeys import (
    ESCALATION,
    assert_noop,
    assert_seq_contiguous,
    attempts,
    cancel_delivery,
    deliveries,
    delivery_at,
    drive,
    escalation_waiting,
    iso,
    journey,
    later,
    on,
    reasons,
    run_row,
    snapshot,
    start,
    step,
    stop,
    transitions,
    wait,
)
from sqlalchemy import update

from tocsin.core.errors import RunNotFound
from tocsin.core.models import Delivery
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine.deliveries import SendResult, exhaust_delivery, mark_dispatched, record_attempt
from tocsin.engine.runs import progress_run

EMAIL_RENDERED = {"subject": "You were mentioned", "body": "Ada wrote: see the draft"}


def evidence(status: str, reason: str | None, attempt_outcome: str | None, error_class: str | None) -> dict[str, Any]:
    return {
        "delivery_status": status,
        "suppression_reason": reason,
        "attempt_outcome": attempt_outcome,
        "attempt_error_class": error_class,
    }


def transition(
    run_id: uuid.UUID,
    seq: int,
    reason: str,
    from_state: str | None,
    to_state: str,
    context: dict[str, Any],
    *,
    at: datetime,
    step_key: str | None,
    delivery_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """One expected row of the audit trail."""
    return {
        "run_id": run_id,
        "seq": seq,
        "step_key": step_key,
        "delivery_id": delivery_id,
        "from_state": from_state,
        "to_state": to_state,
        "reason": reason,
        "context": context,
        "created_at": at,
    }


def activated(run_id: uuid.UUID, seq: int, step_key: str, *, at: datetime, delivery_id: uuid.UUID) -> dict[str, Any]:
    """A step_activated row: it names the delivery planned for that activation."""
    source = "start_run" if seq == 2 else "progression"
    context = {"step_key": step_key, "source": source}
    return transition(
        run_id, seq, "step_activated", "active", "active", context, at=at, step_key=step_key, delivery_id=delivery_id
    )


async def first_delivery(db: Database, run_id: uuid.UUID) -> uuid.UUID:
    return (await delivery_at(db, run_id, 1))["id"]


# --- waiting ---------------------------------------------------------------------------------------------


async def test_a_terminal_outcome_with_a_wait_rule_enters_the_wait(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    landed, checked = later(t0, minutes=5), later(t0, minutes=6)
    d1 = await drive(db, await first_delivery(db, run.id), "succeeded", now=landed)
    assert d1.terminal_at == landed

    progress = await progress_run(db, run.id, now=checked)

    due = landed + timedelta(seconds=7200)
    context = {
        "rule_kind": "wait_until",
        "anchor": "prior_delivery_terminal_at",
        "anchor_delivery_id": str(d1.id),
        "anchor_delivery_status": "succeeded",
        "anchor_timestamp": iso(landed),
        "due_at": iso(due),
        "to_step": "email",
    }
    assert progress.kind == "waiting"
    assert progress.deliveries == []
    row = await run_row(db, run.id)
    assert progress.run.model_dump() == row
    assert {k: row[k] for k in _MOVING} == {
        "state": "waiting",
        "current_step": "in_app",
        "step_activation": 1,
        "step_activated_at": t0,
        "status_reason": "waiting_for_step_progression",
        "status_context": context,
        "due_at": due,
        "pending_signals": ["notification.read"],
        "terminal_reason": None,
        "last_transition_at": checked,
        "updated_at": checked,
    }
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[2:] == [
        transition(
            run.id,
            3,
            "waiting_for_step_progression",
            "active",
            "waiting",
            context,
            at=checked,
            step_key="in_app",
            delivery_id=d1.id,
        )
    ]
    assert len(await deliveries(db, run.id)) == 1


_MOVING = (
    "state",
    "current_step",
    "step_activation",
    "step_activated_at",
    "status_reason",
    "status_context",
    "due_at",
    "pending_signals",
    "terminal_reason",
    "last_transition_at",
    "updated_at",
)


async def test_a_wait_that_is_not_due_is_a_noop(db: Database, t0: datetime) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    assert run.due_at is not None
    await assert_noop(db, run.id, now=t0, reason="wait_not_due")
    await assert_noop(db, run.id, now=run.due_at - timedelta(microseconds=1), reason="wait_not_due")


async def test_a_due_wait_advances_once_and_plans_exactly_one_next_delivery(db: Database, t0: datetime) -> None:
    run, d1 = await escalation_waiting(db, now=t0)
    wait_context = run.status_context
    woke = later(t0, hours=3)

    progress = await progress_run(db, run.id, now=woke)

    assert progress.kind == "advanced"
    d2 = await delivery_at(db, run.id, 2)
    assert [d.model_dump() for d in progress.deliveries] == [d2]
    assert d2 == {
        "id": d2["id"],
        "run_id": run.id,
        "tenant_id": "acme",
        "step_key": "email",
        "activation": 2,
        "channel": "email",
        "recipient": "user:42",
        "status": "pending",
        "suppression_reason": None,
        "content": EMAIL_RENDERED,
        "attempt_count": 0,
        "terminal_at": None,
        "provider_message_id": None,
        "read_at": None,
        "seen_at": None,
        "archived_at": None,
        "scheduled_for": None,
        "send_timezone": None,
        "feedback_due_at": None,
        "created_at": woke,
        "updated_at": woke,
    }
    row = await run_row(db, run.id)
    assert progress.run.model_dump() == row
    assert {k: row[k] for k in _MOVING} == {
        "state": "active",
        "current_step": "email",
        "step_activation": 2,
        "step_activated_at": woke,
        "status_reason": "progressed_on_delivery_outcome",
        "status_context": {
            "rule_kind": "wait_until",
            "workflow_outcome": "wait_elapsed",
            "anchor_delivery_id": str(d1.id),
            "from_step": "in_app",
            "to_step": "email",
        },
        "due_at": None,
        "pending_signals": [],
        "terminal_reason": None,
        "last_transition_at": woke,
        "updated_at": woke,
    }
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[3:] == [
        transition(
            run.id,
            4,
            "reactivated_from_wait",
            "waiting",
            "active",
            {**wait_context, "reactivated_at": iso(woke)},
            at=woke,
            step_key="in_app",
            delivery_id=d1.id,
        ),
        activated(run.id, 5, "email", at=woke, delivery_id=(await delivery_at(db, run.id, 2))["id"]),
    ]

    # Re-entry, at once or later: the email step has no rules and its delivery is pending; nothing happens.
    await assert_noop(db, run.id, now=woke, reason="no_progress_rules")
    await assert_noop(db, run.id, now=later(woke, days=2), reason="no_progress_rules")
    assert [d["activation"] for d in await deliveries(db, run.id)] == [1, 2]


async def test_a_wait_is_due_at_exactly_due_at(db: Database, t0: datetime) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    assert run.due_at is not None
    progress = await progress_run(db, run.id, now=run.due_at)
    assert progress.kind == "advanced"
    assert progress.run.step_activated_at == run.due_at


async def test_the_step_activated_at_anchor(db: Database, t0: datetime) -> None:
    spec = journey(
        "nudge",
        step("in_app", "in_app", wait("email", 600, anchor="step_activated_at")),
        step("email", "email", wait("in_app_again", 60, anchor="step_activated_at")),
        step("in_app_again", "in_app"),
    )
    run = await start(db, spec, now=t0)
    d1 = await drive(db, await first_delivery(db, run.id), "succeeded", now=later(t0, minutes=5))
    waiting = await progress_run(db, run.id, now=later(t0, minutes=6))
    assert waiting.run.due_at == later(t0, minutes=10)
    assert waiting.run.status_context == {
        "rule_kind": "wait_until",
        "anchor": "step_activated_at",
        "anchor_delivery_id": str(d1.id),
        "anchor_delivery_status": "succeeded",
        "anchor_timestamp": iso(t0),
        "due_at": iso(later(t0, minutes=10)),
        "to_step": "email",
    }
    await assert_noop(db, run.id, now=later(t0, minutes=9), reason="wait_not_due")

    # The second step's anchor is the moment it was activated, not the first step's.
    woke = later(t0, minutes=11)
    assert (await progress_run(db, run.id, now=woke)).kind == "advanced"
    d2 = await drive(db, (await delivery_at(db, run.id, 2))["id"], "succeeded", now=later(woke, minutes=30))
    again = await progress_run(db, run.id, now=later(woke, minutes=31))
    assert again.run.due_at == later(woke, minutes=1)
    assert again.run.status_context["anchor_timestamp"] == iso(woke)
    assert again.run.status_context["anchor_delivery_id"] == str(d2.id)
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert reasons(trail) == [
        "workflow_started",
        "step_activated",
        "waiting_for_step_progression",
        "reactivated_from_wait",
        "step_activated",
        "waiting_for_step_progression",
    ]


async def test_a_suppressed_delivery_enters_the_wait_too(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    d1 = await drive(db, await first_delivery(db, run.id), "suppressed", now=later(t0, seconds=1))
    progress = await progress_run(db, run.id, now=later(t0, seconds=2))
    assert progress.kind == "waiting"
    assert progress.run.status_context["anchor_delivery_status"] == "suppressed"
    assert progress.run.due_at == later(d1.terminal_at, hours=2)  # type: ignore[arg-type]


# --- outcome rules ---------------------------------------------------------------------------------------


async def test_a_bounce_advances_on_the_outcome_rule_with_its_evidence(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    bounced_at = later(t0, minutes=1)
    d1 = await drive(db, await first_delivery(db, run.id), "bounced", now=bounced_at)

    progress = await progress_run(db, run.id, now=bounced_at)

    assert progress.kind == "advanced"
    d2 = await delivery_at(db, run.id, 2)
    assert [d.model_dump() for d in progress.deliveries] == [d2]
    assert (d2["step_key"], d2["channel"], d2["status"], d2["content"]) == ("email", "email", "pending", EMAIL_RENDERED)
    row = await run_row(db, run.id)
    assert {k: row[k] for k in _MOVING} == {
        "state": "active",
        "current_step": "email",
        "step_activation": 2,
        "step_activated_at": bounced_at,
        "status_reason": "progressed_on_delivery_outcome",
        "status_context": {
            "rule_kind": "on_outcome",
            "workflow_outcome": "bounced",
            "anchor_delivery_id": str(d1.id),
            "from_step": "in_app",
            "to_step": "email",
        },
        "due_at": None,
        "pending_signals": [],
        "terminal_reason": None,
        "last_transition_at": bounced_at,
        "updated_at": bounced_at,
    }
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[2:] == [
        transition(
            run.id,
            3,
            "progressed_on_delivery_outcome",
            "active",
            "active",
            {
                "rule_kind": "on_outcome",
                "workflow_outcome": "bounced",
                "anchor_delivery_id": str(d1.id),
                "from_step": "in_app",
                "to_step": "email",
                **evidence("cancelled", "bounced", "bounced", "bounced"),
            },
            at=bounced_at,
            step_key="in_app",
            delivery_id=d1.id,
        ),
        activated(run.id, 4, "email", at=bounced_at, delivery_id=(await delivery_at(db, run.id, 2))["id"]),
    ]
    # The prior delivery is evidence, left as it was.
    assert (await delivery_at(db, run.id, 1))["status"] == "cancelled"
    await assert_noop(db, run.id, now=bounced_at, reason="no_progress_rules")


async def test_a_stop_rule_stops_the_run(db: Database, t0: datetime) -> None:
    spec = journey(
        "stoppable",
        step("email", "email", stop("permanent_failure"), wait("sms", 60)),
        step("sms", "sms"),
    )
    run = await start(db, spec, now=t0)
    failed_at = later(t0, minutes=1)
    d1 = await drive(db, await first_delivery(db, run.id), "permanent_failure", now=failed_at)

    progress = await progress_run(db, run.id, now=failed_at)

    context = {
        "rule_kind": "stop",
        "workflow_outcome": "permanent_failure",
        "anchor_delivery_id": str(d1.id),
        **evidence("cancelled", "permanent_failure", "failed", "permanent"),
    }
    assert (progress.kind, progress.deliveries) == ("stopped", [])
    row = await run_row(db, run.id)
    assert progress.run.model_dump() == row
    assert {k: row[k] for k in _MOVING} == {
        "state": "stopped",
        "current_step": "email",
        "step_activation": 1,
        "step_activated_at": t0,
        "status_reason": "workflow_stopped",
        "status_context": context,
        "due_at": None,
        "pending_signals": [],
        "terminal_reason": "rule:permanent_failure",
        "last_transition_at": failed_at,
        "updated_at": failed_at,
    }
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[2:] == [
        transition(
            run.id,
            3,
            "workflow_stopped",
            "active",
            "stopped",
            context,
            at=failed_at,
            step_key="email",
            delivery_id=d1.id,
        )
    ]
    assert len(await deliveries(db, run.id)) == 1
    await assert_noop(db, run.id, now=later(t0, days=1), reason="run_not_active")


async def test_implicit_completion(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    await drive(db, await first_delivery(db, run.id), "bounced", now=t0)
    await progress_run(db, run.id, now=t0)
    done_at = later(t0, minutes=3)
    d2 = await drive(db, (await delivery_at(db, run.id, 2))["id"], "succeeded", now=done_at)

    progress = await progress_run(db, run.id, now=done_at)

    context = {
        "rule_kind": "implicit_completion",
        "workflow_outcome": "delivered",
        "anchor_delivery_id": str(d2.id),
        **evidence("succeeded", None, "succeeded", None),
    }
    assert (progress.kind, progress.deliveries) == ("completed", [])
    row = await run_row(db, run.id)
    assert {k: row[k] for k in _MOVING} == {
        "state": "completed",
        "current_step": "email",
        "step_activation": 2,
        "step_activated_at": t0,
        "status_reason": "workflow_completed",
        "status_context": context,
        "due_at": None,
        "pending_signals": [],
        "terminal_reason": None,
        "last_transition_at": done_at,
        "updated_at": done_at,
    }
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[4:] == [
        transition(
            run.id,
            5,
            "workflow_completed",
            "active",
            "completed",
            context,
            at=done_at,
            step_key="email",
            delivery_id=d2.id,
        )
    ]
    await assert_noop(db, run.id, now=done_at, reason="run_not_active")


# --- deliveries that have not converged ------------------------------------------------------------------

ONLY_OUTCOME_RULES = journey(
    "outcome_rules_only",
    step("email", "email", on("bounced", "sms"), stop("permanent_failure")),
    step("sms", "sms"),
)
NO_RULES = journey("single", step("email", "email"))


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (ESCALATION, "prior_delivery_not_converged"),
        (ONLY_OUTCOME_RULES, "no_matching_progress_rule"),
        (NO_RULES, "no_progress_rules"),
    ],
)
@pytest.mark.parametrize("status", ["pending", "dispatched", "cancelled"])
async def test_an_unconverged_delivery_is_a_noop(
    db: Database, t0: datetime, spec: dict[str, Any], reason: str, status: str
) -> None:
    run = await start(db, spec, now=t0)
    delivery_id = await first_delivery(db, run.id)
    if status == "dispatched":
        await mark_dispatched(db, delivery_id, now=t0)
    elif status == "cancelled":
        await cancel_delivery(db, delivery_id, reason="operator_request", now=t0)
    for hours in (0, 1, 1000):
        await assert_noop(db, run.id, now=later(t0, hours=hours), reason=reason)
    assert len(await deliveries(db, run.id)) == 1
    assert len(await transitions(db, run.id)) == 2


async def test_a_run_whose_step_has_no_delivery_is_a_noop(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    # The audit trail references the planned delivery, so point the cursor past it instead of deleting it.
    async with db.transaction() as conn:
        await conn.execute(update(t.workflow_runs).where(t.workflow_runs.c.id == run.id).values(step_activation=2))
    await assert_noop(db, run.id, now=t0, reason="no_active_step_delivery")


async def test_progress_run_on_an_unknown_run_raises(db: Database, t0: datetime) -> None:
    await start(db, ESCALATION, now=t0)
    before = await snapshot(db)
    with pytest.raises(RunNotFound):
        await progress_run(db, uuid.uuid4(), now=t0)
    assert await snapshot(db) == before


# --- temporary failures and retries ----------------------------------------------------------------------

FALLBACK = journey(
    "fallback",
    step("email", "email", on("temporary_failure", "sms"), wait("sms", 3600)),
    step("sms", "sms", content={"text": "{{ actor }} needs you"}),
)


async def test_a_rule_naming_temporary_failure_supersedes_the_failed_delivery(db: Database, t0: datetime) -> None:
    run = await start(db, FALLBACK, now=t0)
    failed_at, moved_at = later(t0, seconds=10), later(t0, seconds=20)
    d1 = await drive(db, await first_delivery(db, run.id), "failed", now=failed_at)
    assert d1.terminal_at is None

    progress = await progress_run(db, run.id, now=moved_at)

    assert progress.kind == "advanced"
    prior = await delivery_at(db, run.id, 1)
    assert {k: prior[k] for k in ("status", "suppression_reason", "terminal_at", "attempt_count", "updated_at")} == {
        "status": "cancelled",
        "suppression_reason": "superseded",
        "terminal_at": moved_at,
        "attempt_count": 1,
        "updated_at": moved_at,
    }
    d2 = await delivery_at(db, run.id, 2)
    assert [d.model_dump() for d in progress.deliveries] == [d2]
    assert (d2["step_key"], d2["status"], d2["content"]) == ("sms", "pending", {"text": "Ada needs you"})
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[2:] == [
        transition(
            run.id,
            3,
            "progressed_on_delivery_outcome",
            "active",
            "active",
            {
                "rule_kind": "on_outcome",
                "workflow_outcome": "temporary_failure",
                "anchor_delivery_id": str(d1.id),
                "from_step": "email",
                "to_step": "sms",
                **evidence("failed", None, "failed", "temporary"),
            },
            at=moved_at,
            step_key="email",
            delivery_id=d1.id,
        ),
        activated(run.id, 4, "sms", at=moved_at, delivery_id=d2["id"]),
    ]
    # The superseded delivery can never be dispatched again.
    (attempt,) = await attempts(db, d1.id)
    assert (attempt["outcome"], attempt["error_class"], attempt["error"]) == ("failed", "temporary", "smtp 451")


@pytest.mark.parametrize("limit", [None, 1], ids=["stop_rule", "step_limit"])
async def test_a_run_that_stops_on_a_temporary_failure_cancels_the_failed_delivery(
    db: Database, t0: datetime, limit: int | None
) -> None:
    # A stop rule naming temporary_failure, or an advance refused by the step limit: either way the run
    # leaves the step, and its failed delivery must not stay retryable behind a stopped run.
    rules = [stop("temporary_failure")] if limit is None else [on("temporary_failure", "sms")]
    extra = {} if limit is None else {"max_step_activations": limit}
    spec = journey(f"stop_on_failure_{limit}", step("email", "email", *rules), step("sms", "sms"), **extra)
    run = await start(db, spec, now=t0)
    stopped_at = later(t0, seconds=20)
    await drive(db, await first_delivery(db, run.id), "failed", now=later(t0, seconds=10))

    progress = await progress_run(db, run.id, now=stopped_at)

    assert progress.kind == "stopped"
    prior = await delivery_at(db, run.id, 1)
    assert (prior["status"], prior["suppression_reason"], prior["terminal_at"]) == (
        "cancelled",
        "superseded",
        stopped_at,
    )
    assert len(await deliveries(db, run.id)) == 1


async def test_an_unnamed_temporary_failure_awaits_a_terminal_outcome(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    await drive(db, await first_delivery(db, run.id), "failed", now=t0)
    await assert_noop(db, run.id, now=later(t0, minutes=1), reason="awaiting_terminal_outcome")


async def retry_until_exhausted(db: Database, delivery_id: uuid.UUID, *, start_at: datetime, tries: int) -> Delivery:
    """`tries` dispatches, each failing temporarily, then exhaust_delivery: the workflow's retry loop."""
    moment = start_at
    for _ in range(tries):
        await mark_dispatched(db, delivery_id, now=moment)
        await record_attempt(db, delivery_id, SendResult("temporary", error="smtp 451"), now=moment)
        moment += timedelta(minutes=1)
    return await exhaust_delivery(db, delivery_id, now=moment)


async def test_retries_exhausted_is_reachable_and_branches(db: Database, t0: datetime) -> None:
    spec = journey(
        "exhaustible",
        step(
            "email",
            "email",
            on("retries_exhausted", "sms"),
            retry={"max_attempts": 3, "initial_interval": "PT1M"},
        ),
        step("sms", "sms"),
    )
    run = await start(db, spec, now=t0)
    delivery_id = await first_delivery(db, run.id)
    # Between attempts the failed delivery is only a temporary failure: the run waits for its retries.
    await mark_dispatched(db, delivery_id, now=t0)
    await record_attempt(db, delivery_id, SendResult("temporary", error="smtp 451"), now=t0)
    await assert_noop(db, run.id, now=t0, reason="awaiting_terminal_outcome")
    exhausted = await retry_until_exhausted(db, delivery_id, start_at=later(t0, minutes=1), tries=2)
    exhausted_at = later(t0, minutes=3)
    assert (exhausted.status, exhausted.suppression_reason, exhausted.terminal_at, exhausted.attempt_count) == (
        "cancelled",
        "retries_exhausted",
        exhausted_at,
        3,
    )
    assert [(a["attempt_number"], a["outcome"], a["error_class"]) for a in await attempts(db, delivery_id)] == [
        (1, "failed", "temporary"),
        (2, "failed", "temporary"),
        (3, "failed", "temporary"),
    ]

    progress = await progress_run(db, run.id, now=exhausted_at)

    assert progress.kind == "advanced"
    assert progress.run.status_context == {
        "rule_kind": "on_outcome",
        "workflow_outcome": "retries_exhausted",
        "anchor_delivery_id": str(delivery_id),
        "from_step": "email",
        "to_step": "sms",
    }
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[2]["context"] == {
        **progress.run.status_context,
        **evidence("cancelled", "retries_exhausted", "failed", "temporary"),
    }
    assert reasons(trail) == ["workflow_started", "step_activated", "progressed_on_delivery_outcome", "step_activated"]
    # Exhausting a terminal delivery again returns it as it is.
    assert await exhaust_delivery(db, delivery_id, now=later(t0, days=1)) == exhausted


async def test_retries_exhausted_without_a_rule_enters_the_wait_from_the_exhaustion(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    delivery_id = await first_delivery(db, run.id)
    exhausted = await retry_until_exhausted(db, delivery_id, start_at=t0, tries=2)
    progress = await progress_run(db, run.id, now=later(t0, hours=1))
    assert progress.kind == "waiting"
    assert exhausted.terminal_at == later(t0, minutes=2)
    assert progress.run.due_at == later(t0, hours=2, minutes=2)
    assert progress.run.status_context["anchor_delivery_status"] == "cancelled"


# --- journeys that revisit channels and steps ------------------------------------------------------------


async def test_the_same_channel_in_two_steps(db: Database, t0: datetime) -> None:
    spec = journey(
        "reminder",
        step("first", "email", wait("reminder", 86400), content={"subject": "Hello {{ actor }}"}),
        step("reminder", "email", content={"subject": "Reminder for {{ actor }}"}),
    )
    run = await start(db, spec, now=t0)
    await drive(db, await first_delivery(db, run.id), "succeeded", now=t0)
    await progress_run(db, run.id, now=t0)
    await progress_run(db, run.id, now=later(t0, days=1))
    found = await deliveries(db, run.id)
    assert [(d["activation"], d["step_key"], d["channel"], d["status"], d["content"]) for d in found] == [
        (1, "first", "email", "succeeded", {"subject": "Hello Ada"}),
        (2, "reminder", "email", "pending", {"subject": "Reminder for Ada"}),
    ]
    assert_seq_contiguous(await transitions(db, run.id))


async def test_a_cyclic_journey_stops_at_max_step_activations(db: Database, t0: datetime) -> None:
    spec = journey(
        "ping_pong",
        step("ping", "in_app", on("delivered", "pong")),
        step("pong", "in_app", on("delivered", "ping")),
        max_step_activations=3,
    )
    run = await start(db, spec, now=t0)
    for activation in (1, 2):
        moment = later(t0, minutes=activation)
        await drive(db, (await delivery_at(db, run.id, activation))["id"], "succeeded", now=moment)
        assert (await progress_run(db, run.id, now=moment)).kind == "advanced"
    last_at = later(t0, minutes=3)
    d3 = await drive(db, (await delivery_at(db, run.id, 3))["id"], "succeeded", now=last_at)

    progress = await progress_run(db, run.id, now=last_at)

    context = {
        "rule_kind": "on_outcome",
        "from_step": "ping",
        "to_step": "pong",
        "step_activation": 3,
        "max_step_activations": 3,
    }
    assert (progress.kind, progress.deliveries) == ("stopped", [])
    row = await run_row(db, run.id)
    assert {k: row[k] for k in ("state", "current_step", "step_activation", "status_reason", "status_context")} == {
        "state": "stopped",
        "current_step": "ping",
        "step_activation": 3,
        "status_reason": "step_limit_exceeded",
        "status_context": context,
    }
    assert row["terminal_reason"] == "limit:max_step_activations"
    assert [(d["activation"], d["step_key"]) for d in await deliveries(db, run.id)] == [
        (1, "ping"),
        (2, "pong"),
        (3, "ping"),
    ]
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert reasons(trail) == [
        "workflow_started",
        "step_activated",
        "progressed_on_delivery_outcome",
        "step_activated",
        "progressed_on_delivery_outcome",
        "step_activated",
        "step_limit_exceeded",
    ]
    assert trail[-1] == transition(
        run.id,
        7,
        "step_limit_exceeded",
        "active",
        "stopped",
        context,
        at=last_at,
        step_key="ping",
        delivery_id=d3.id,
    )
    await assert_noop(db, run.id, now=last_at, reason="run_not_active")


async def test_a_cycle_through_a_wait_stops_at_the_limit_from_waiting(db: Database, t0: datetime) -> None:
    spec = journey("daily", step("digest", "email", wait("digest", 86400)), max_step_activations=2)
    run = await start(db, spec, now=t0)
    d1 = await drive(db, await first_delivery(db, run.id), "succeeded", now=t0)
    await progress_run(db, run.id, now=t0)
    assert (await progress_run(db, run.id, now=later(t0, days=1))).kind == "advanced"
    await drive(db, (await delivery_at(db, run.id, 2))["id"], "succeeded", now=later(t0, days=1))
    waiting = await progress_run(db, run.id, now=later(t0, days=1))
    assert waiting.kind == "waiting"
    d2_id = uuid.UUID(waiting.run.status_context["anchor_delivery_id"])
    assert d2_id != d1.id

    progress = await progress_run(db, run.id, now=later(t0, days=2))

    context = {
        "rule_kind": "wait_until",
        "from_step": "digest",
        "to_step": "digest",
        "step_activation": 2,
        "max_step_activations": 2,
    }
    row = await run_row(db, run.id)
    assert (progress.kind, row["state"], row["status_reason"], row["due_at"], row["pending_signals"]) == (
        "stopped",
        "stopped",
        "step_limit_exceeded",
        None,
        [],
    )
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[-1] == transition(
        run.id,
        len(trail),
        "step_limit_exceeded",
        "waiting",
        "stopped",
        context,
        at=later(t0, days=2),
        step_key="digest",
        delivery_id=d2_id,
    )
    assert len(await deliveries(db, run.id)) == 2


# --- content that does not render ------------------------------------------------------------------------


async def test_a_render_failure_plans_a_suppressed_delivery_and_the_run_proceeds(db: Database, t0: datetime) -> None:
    spec = journey(
        "fragile",
        # `actor` is in the data (a missing top-level name is refused at start): its attribute is not.
        step("email", "email", on("suppressed", "sms"), content={"subject": "Hi", "body": "{{ actor.missing }}"}),
        step("sms", "sms", content={"text": "{{ actor }}"}),
    )
    run = await start(db, spec, now=t0)
    (d1,) = await deliveries(db, run.id)
    assert {k: d1[k] for k in ("status", "suppression_reason", "content", "attempt_count", "terminal_at")} == {
        "status": "suppressed",
        "suppression_reason": "render_failed",
        "content": {},
        "attempt_count": 0,
        "terminal_at": t0,
    }
    (attempt,) = await attempts(db, d1["id"])
    assert {k: v for k, v in attempt.items() if k != "id"} == {
        "delivery_id": d1["id"],
        "attempt_number": 1,
        "send_number": None,  # nothing was sent
        "outcome": "rejected",
        "error_class": "permanent",
        "error": "cannot render content.body: UndefinedError: 'str object' has no attribute 'missing'",
        "provider_message_id": None,
        "provider_response": {},
        "created_at": t0,
    }

    progress = await progress_run(db, run.id, now=later(t0, seconds=1))

    assert progress.kind == "advanced"
    assert [d.content for d in progress.deliveries] == [{"text": "Ada"}]
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[2]["context"] == {
        "rule_kind": "on_outcome",
        "workflow_outcome": "suppressed",
        "anchor_delivery_id": str(d1["id"]),
        "from_step": "email",
        "to_step": "sms",
        **evidence("suppressed", "render_failed", "rejected", "permanent"),
    }


async def test_a_render_failure_of_a_later_step_completes_on_suppressed(db: Database, t0: datetime) -> None:
    spec = journey(
        "fragile_later",
        step("in_app", "in_app", on("delivered", "email")),
        step("email", "email", content={"body": "{{ actor.missing }}"}),
    )
    run = await start(db, spec, now=t0)
    await drive(db, await first_delivery(db, run.id), "succeeded", now=t0)
    advanced = await progress_run(db, run.id, now=later(t0, seconds=1))
    (d2,) = advanced.deliveries
    assert (d2.status, d2.suppression_reason, d2.terminal_at) == ("suppressed", "render_failed", later(t0, seconds=1))
    (attempt,) = await attempts(db, d2.id)
    assert (attempt["outcome"], attempt["error_class"]) == ("rejected", "permanent")
    assert attempt["error"].startswith("cannot render content.body: UndefinedError:")
    completed = await progress_run(db, run.id, now=later(t0, seconds=2))
    assert completed.kind == "completed"
    assert completed.run.status_context == {
        "rule_kind": "implicit_completion",
        "workflow_outcome": "suppressed",
        "anchor_delivery_id": str(d2.id),
        **evidence("suppressed", "render_failed", "rejected", "permanent"),
    }
    assert_seq_contiguous(await transitions(db, run.id))


async def test_payload_data_is_never_copied_into_transitions(db: Database, t0: datetime) -> None:
    secret = "s3cr3t-payload"
    run = await start(db, ESCALATION, now=t0, data={"actor": secret, "excerpt": secret})
    await drive(db, await first_delivery(db, run.id), "bounced", now=t0)
    await progress_run(db, run.id, now=t0)
    await drive(db, (await delivery_at(db, run.id, 2))["id"], "succeeded", now=t0)
    await progress_run(db, run.id, now=t0)
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert reasons(trail)[-1] == "workflow_completed"
    assert secret not in repr([row["context"] for row in trail])
