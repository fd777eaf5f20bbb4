"""Registering definitions (SPEC 2.1) and creating runs (SPEC 4.0): exact rows, idempotency, nothing on error."""

from __future__ import annotations

from datetime import datetime

import pytest
from journeys import (
    DATA,
    ESCALATION,
    RECIPIENT,
    TENANT,
    assert_seq_contiguous,
    deliveries,
    journey,
    later,
    rows,
    run_row,
    snapshot,
    start,
    step,
    transitions,
    wait,
)

from tocsin.core.errors import DefinitionConflict, DefinitionError, DefinitionNotFound, InvalidRequest
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine.registry import register_definition
from tocsin.engine.runs import create_run


async def test_create_run_writes_the_run_its_first_transitions_and_its_first_delivery(
    db: Database, t0: datetime
) -> None:
    record = await register_definition(db, ESCALATION, now=t0)
    run, created = await create_run(
        db,
        tenant_id=TENANT,
        workflow_key="mention_escalation",
        recipient=RECIPIENT,
        idempotency_key="mention-123",
        data=DATA,
        now=t0,
    )
    assert created

    row = await run_row(db, run.id)
    assert row == {
        "id": run.id,
        "tenant_id": TENANT,
        "definition_id": record.id,
        "workflow_key": "mention_escalation",
        "workflow_version": 1,
        "recipient": RECIPIENT,
        "data": DATA,
        "idempotency_key": "mention-123",
        "state": "active",
        "current_step": "in_app",
        "step_activation": 1,
        "step_activated_at": t0,
        "status_reason": "workflow_started",
        "status_context": {"source": "start_run"},
        "due_at": None,
        "pending_signals": [],
        "terminal_reason": None,
        "workflow_started": False,
        "started_at": t0,
        "last_transition_at": t0,
        "created_at": t0,
        "updated_at": t0,
        "throttle_key": None,
        "batch_key": None,
    }
    assert run.model_dump() == row | {"joined": False}

    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail == [
        {
            "run_id": run.id,
            "seq": 1,
            "step_key": None,
            "delivery_id": None,
            "from_state": None,
            "to_state": "active",
            "reason": "workflow_started",
            "context": {"source": "start_run"},
            "created_at": t0,
        },
        {
            "run_id": run.id,
            "seq": 2,
            "step_key": "in_app",
            "delivery_id": (await deliveries(db, run.id))[0]["id"],
            "from_state": "active",
            "to_state": "active",
            "reason": "step_activated",
            "context": {"step_key": "in_app", "source": "start_run"},
            "created_at": t0,
        },
    ]

    (delivery,) = await deliveries(db, run.id)
    assert delivery == {
        "id": delivery["id"],
        "run_id": run.id,
        "tenant_id": TENANT,
        "step_key": "in_app",
        "activation": 1,
        "channel": "in_app",
        "recipient": RECIPIENT,
        "status": "pending",
        "suppression_reason": None,
        "content": {"title": "Ada mentioned you", "body": "see the draft"},
        "attempt_count": 0,
        "terminal_at": None,
        "provider_message_id": None,
        "read_at": None,
        "seen_at": None,
        "archived_at": None,
        "scheduled_for": None,
        "send_timezone": None,
        "feedback_due_at": None,
        "created_at": t0,
        "updated_at": t0,
    }
    assert await rows(db, t.delivery_attempts) == []
    assert await rows(db, t.signals) == []


async def test_the_same_idempotency_key_returns_the_same_run_and_writes_nothing(db: Database, t0: datetime) -> None:
    first = await start(db, ESCALATION, now=t0, idempotency_key="mention-123")
    before = await snapshot(db)
    again, created = await create_run(
        db,
        tenant_id=TENANT,
        workflow_key="mention_escalation",
        recipient="user:other",
        idempotency_key="mention-123",
        data={"actor": "Bob", "excerpt": "different"},
        now=later(t0, hours=1),
    )
    assert not created
    assert again == first
    assert await snapshot(db) == before


async def test_the_same_idempotency_key_in_another_tenant_is_another_run(db: Database, t0: datetime) -> None:
    first = await start(db, ESCALATION, now=t0, idempotency_key="mention-123")
    other = await start(db, ESCALATION, now=t0, idempotency_key="mention-123", tenant_id="globex")
    assert other.id != first.id
    assert [(r["tenant_id"], r["idempotency_key"]) for r in await rows(db, t.workflow_runs, order_by="tenant_id")] == [
        ("acme", "mention-123"),
        ("globex", "mention-123"),
    ]


@pytest.mark.parametrize(
    ("key", "version"), [("no_such_journey", None), ("no_such_journey", 1), ("mention_escalation", 2)]
)
async def test_unknown_definition_raises_and_writes_nothing(
    db: Database, t0: datetime, key: str, version: int | None
) -> None:
    await register_definition(db, ESCALATION, now=t0)
    before = await snapshot(db)
    with pytest.raises(DefinitionNotFound):
        await create_run(
            db,
            tenant_id=TENANT,
            workflow_key=key,
            version=version,
            recipient=RECIPIENT,
            idempotency_key="k",
            data=DATA,
            now=t0,
        )
    assert await snapshot(db) == before


@pytest.mark.parametrize("blank", ["tenant_id", "recipient", "idempotency_key"])
async def test_blank_identifiers_are_refused_and_write_nothing(db: Database, t0: datetime, blank: str) -> None:
    await register_definition(db, ESCALATION, now=t0)
    before = await snapshot(db)
    arguments = {"tenant_id": TENANT, "recipient": RECIPIENT, "idempotency_key": "k", blank: "  "}
    with pytest.raises(InvalidRequest):
        await create_run(db, workflow_key="mention_escalation", data=DATA, now=t0, **arguments)
    assert await snapshot(db) == before


async def test_version_none_starts_the_latest_version(db: Database, t0: datetime) -> None:
    await register_definition(db, ESCALATION, now=t0)
    v2 = await register_definition(db, {**ESCALATION, "version": 2}, now=later(t0, minutes=1))
    run, _ = await create_run(
        db,
        tenant_id=TENANT,
        workflow_key="mention_escalation",
        recipient=RECIPIENT,
        idempotency_key="k",
        now=t0,
        data=DATA,
    )
    assert (run.definition_id, run.workflow_version) == (v2.id, 2)


async def test_registration_is_idempotent_for_the_same_checksum(db: Database, t0: datetime) -> None:
    first = await register_definition(db, ESCALATION, now=t0)
    # The same journey written differently (an ISO duration instead of seconds) normalizes to the same spec.
    rewritten = journey(
        "mention_escalation",
        {
            **ESCALATION["steps"][0],
            "progress": [
                ESCALATION["steps"][0]["progress"][0],
                {"kind": "wait_until", "delay": "PT2H", "to_step": "email", "cancel_signals": [" notification.read "]},
            ],
        },
        ESCALATION["steps"][1],
    )
    again = await register_definition(db, rewritten, now=later(t0, hours=1))
    assert again == first
    assert first.created_at == t0
    (stored,) = await rows(db, t.workflow_definitions)
    assert stored == first.model_dump()
    assert stored["spec"]["steps"][0]["progress"][1] == {
        "kind": "wait_until",
        "anchor": "prior_delivery_terminal_at",
        "delay_seconds": 7200,
        "to_step": "email",
        "cancel_signals": ["notification.read"],
    }


async def test_registration_with_a_different_checksum_conflicts_and_writes_nothing(db: Database, t0: datetime) -> None:
    await register_definition(db, ESCALATION, now=t0)
    before = await snapshot(db)
    changed = journey(
        "mention_escalation",
        step("in_app", "in_app", wait("email", 60)),
        step("email", "email"),
    )
    with pytest.raises(DefinitionConflict):
        await register_definition(db, changed, now=t0)
    assert await snapshot(db) == before


async def test_an_invalid_definition_writes_nothing(db: Database, t0: datetime) -> None:
    before = await snapshot(db)
    with pytest.raises(DefinitionError) as caught:
        await register_definition(db, journey("broken", step("a", "email", wait("nowhere", 60))), now=t0)
    assert caught.value.codes == ["unknown_to_step"]
    assert await snapshot(db) == before
