"""The delivery status machine (SPEC 2.4): legal moves only, terminal_at stamped once, late results as evidence."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from journeys import ESCALATION, attempts, delivery_at, drive, later, snapshot, start

from tocsin.core.errors import DeliveryNotFound, InvalidDeliveryTransition
from tocsin.core.models import Delivery
from tocsin.core.vocabulary import DELIVERY_MOVES, DELIVERY_STATUSES
from tocsin.db import Database
from tocsin.db.store import lock_delivery
from tocsin.engine.deliveries import (
    SendResult,
    check_move,
    exhaust_delivery,
    mark_dispatched,
    move,
    record_attempt,
    suppress_delivery,
)

STATUSES = DELIVERY_STATUSES
LEGAL = {
    ("pending", "dispatched"),
    ("pending", "suppressed"),
    ("pending", "cancelled"),
    ("dispatched", "succeeded"),
    ("dispatched", "failed"),
    ("dispatched", "suppressed"),
    ("dispatched", "cancelled"),
    ("failed", "dispatched"),
    ("failed", "cancelled"),
}


def fake(status: str) -> Delivery:
    moment = datetime(2026, 1, 1)
    return Delivery(
        id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        tenant_id="acme",
        step_key="s",
        activation=1,
        channel="email",
        recipient="r",
        status=status,  # type: ignore[arg-type]
        suppression_reason=None,
        content={},
        attempt_count=0,
        terminal_at=None,
        provider_message_id=None,
        read_at=None,
        seen_at=None,
        created_at=moment,
        updated_at=moment,
        archived_at=None,
    )


def test_the_legal_moves_are_exactly_the_specified_ones() -> None:
    assert {(a, b) for a, targets in DELIVERY_MOVES.items() for b in targets} == LEGAL


@pytest.mark.parametrize(("source", "target"), [(a, b) for a in STATUSES for b in STATUSES])
def test_check_move(source: str, target: str) -> None:
    if (source, target) in LEGAL:
        check_move(fake(source), target)
    else:
        with pytest.raises(InvalidDeliveryTransition):
            check_move(fake(source), target)


async def delivery_in(db: Database, t0: datetime, status: str) -> uuid.UUID:
    """The first delivery of a fresh run, driven to `status` (a key of journeys.DRIVEN, or pending)."""
    run = await start(db, ESCALATION, now=t0)
    delivery_id: uuid.UUID = (await delivery_at(db, run.id, 1))["id"]
    if status != "pending":
        await drive(db, delivery_id, status, now=t0)
    return delivery_id


async def forced_move(db: Database, delivery_id: uuid.UUID, to: str, now: datetime) -> None:
    async with db.transaction() as conn:
        await move(conn, await lock_delivery(conn, delivery_id), to, now=now)


@pytest.mark.parametrize(
    ("status", "to"),
    [
        ("succeeded", "failed"),
        ("succeeded", "dispatched"),
        ("succeeded", "cancelled"),
        ("pending", "succeeded"),
        ("pending", "failed"),
        ("failed", "succeeded"),
        ("failed", "suppressed"),
        ("bounced", "dispatched"),
        ("suppressed", "cancelled"),
        ("dispatched", "pending"),
    ],
)
async def test_an_illegal_move_raises_and_writes_nothing(db: Database, t0: datetime, status: str, to: str) -> None:
    delivery_id = await delivery_in(db, t0, status)
    before = await snapshot(db)
    with pytest.raises(InvalidDeliveryTransition):
        await forced_move(db, delivery_id, to, later(t0, minutes=1))
    assert await snapshot(db) == before


@pytest.mark.parametrize("status", ["succeeded", "suppressed", "bounced", "retries_exhausted"])
async def test_the_public_moves_refuse_a_terminal_delivery(db: Database, t0: datetime, status: str) -> None:
    delivery_id = await delivery_in(db, t0, status)
    before = await snapshot(db)
    with pytest.raises(InvalidDeliveryTransition):
        await mark_dispatched(db, delivery_id, now=later(t0, minutes=1))
    with pytest.raises(InvalidDeliveryTransition):
        await suppress_delivery(db, delivery_id, reason="recipient_opted_out", now=later(t0, minutes=1))
    assert await snapshot(db) == before


@pytest.mark.parametrize("status", ["pending", "dispatched"])
async def test_only_a_failed_delivery_can_exhaust_its_retries(db: Database, t0: datetime, status: str) -> None:
    delivery_id = await delivery_in(db, t0, status)
    before = await snapshot(db)
    with pytest.raises(InvalidDeliveryTransition):
        await exhaust_delivery(db, delivery_id, now=later(t0, minutes=1))
    assert await snapshot(db) == before


async def test_an_unknown_delivery_raises(db: Database, t0: datetime) -> None:
    await delivery_in(db, t0, "pending")
    before = await snapshot(db)
    with pytest.raises(DeliveryNotFound):
        await mark_dispatched(db, uuid.uuid4(), now=t0)
    with pytest.raises(DeliveryNotFound):
        await record_attempt(db, uuid.uuid4(), SendResult("succeeded"), now=t0)
    assert await snapshot(db) == before


async def test_a_send_cycle_writes_the_exact_rows(db: Database, t0: datetime) -> None:
    delivery_id = await delivery_in(db, t0, "pending")
    d = await mark_dispatched(db, delivery_id, now=later(t0, seconds=1))
    assert (d.status, d.attempt_count, d.terminal_at, d.updated_at) == ("dispatched", 1, None, later(t0, seconds=1))
    d = await record_attempt(db, delivery_id, SendResult("temporary", error="smtp 451"), now=later(t0, seconds=2))
    assert (d.status, d.attempt_count, d.terminal_at) == ("failed", 1, None)
    await mark_dispatched(db, delivery_id, now=later(t0, seconds=3))
    d = await record_attempt(
        db,
        delivery_id,
        SendResult("succeeded", provider_message_id="msg-1", provider_response={"id": "msg-1"}),
        now=later(t0, seconds=4),
    )
    assert (d.status, d.attempt_count, d.terminal_at, d.provider_message_id, d.suppression_reason) == (
        "succeeded",
        2,
        later(t0, seconds=4),
        "msg-1",
        None,
    )
    assert [{k: v for k, v in a.items() if k != "id"} for a in await attempts(db, delivery_id)] == [
        {
            "delivery_id": delivery_id,
            "attempt_number": 1,
            "send_number": 1,
            "outcome": "failed",
            "error_class": "temporary",
            "error": "smtp 451",
            "provider_message_id": None,
            "provider_response": {},
            "created_at": later(t0, seconds=2),
        },
        {
            "delivery_id": delivery_id,
            "attempt_number": 2,
            "send_number": 2,
            "outcome": "succeeded",
            "error_class": None,
            "error": None,
            "provider_message_id": "msg-1",
            "provider_response": {"id": "msg-1"},
            "created_at": later(t0, seconds=4),
        },
    ]


async def test_an_accepted_send_stays_dispatched_until_feedback_arrives(db: Database, t0: datetime) -> None:
    delivery_id = await delivery_in(db, t0, "dispatched")
    d = await record_attempt(db, delivery_id, SendResult("accepted", provider_message_id="m"), now=later(t0, seconds=1))
    assert (d.status, d.terminal_at, d.provider_message_id) == ("dispatched", None, "m")
    d = await record_attempt(db, delivery_id, SendResult("bounced", error="550"), now=later(t0, seconds=2))
    assert (d.status, d.suppression_reason, d.terminal_at) == ("cancelled", "bounced", later(t0, seconds=2))
    assert [(a["outcome"], a["error_class"]) for a in await attempts(db, delivery_id)] == [
        ("succeeded", None),
        ("bounced", "bounced"),
    ]


@pytest.mark.parametrize(
    ("status", "final"),
    [
        ("succeeded", ("succeeded", None)),
        ("suppressed", ("suppressed", "recipient_opted_out")),
        ("bounced", ("cancelled", "bounced")),
        ("retries_exhausted", ("cancelled", "retries_exhausted")),
    ],
)
async def test_terminal_at_is_stamped_once_and_a_late_result_only_adds_an_attempt(
    db: Database, t0: datetime, status: str, final: tuple[str, str | None]
) -> None:
    delivery_id = await delivery_in(db, t0, status)
    before: dict[str, Any] = await _delivery_row(db, delivery_id)
    assert (before["status"], before["suppression_reason"], before["terminal_at"]) == (*final, t0)
    earlier_attempts = await attempts(db, delivery_id)

    late_at = later(t0, hours=1)
    for kind in ("bounced", "permanent", "temporary", "succeeded"):
        returned = await record_attempt(db, delivery_id, SendResult(kind, error=f"late {kind}"), now=late_at)  # type: ignore[arg-type]
        assert returned.model_dump() == before

    assert await _delivery_row(db, delivery_id) == before
    late = (await attempts(db, delivery_id))[len(earlier_attempts) :]
    n = len(earlier_attempts)
    assert [(a["attempt_number"], a["outcome"], a["error_class"], a["error"], a["created_at"]) for a in late] == [
        (n + 1, "bounced", "bounced", "late bounced", late_at),
        (n + 2, "failed", "permanent", "late permanent", late_at),
        (n + 3, "failed", "temporary", "late temporary", late_at),
        (n + 4, "succeeded", None, "late succeeded", late_at),
    ]


async def test_a_late_result_fills_in_a_missing_provider_message_id_only(db: Database, t0: datetime) -> None:
    delivery_id = await delivery_in(db, t0, "succeeded")
    late_at = later(t0, hours=1)
    d = await record_attempt(db, delivery_id, SendResult("bounced", provider_message_id="p-1"), now=late_at)
    assert (d.status, d.terminal_at, d.provider_message_id, d.updated_at) == ("succeeded", t0, "p-1", late_at)
    d = await record_attempt(
        db, delivery_id, SendResult("bounced", provider_message_id="p-2"), now=later(late_at, hours=1)
    )
    assert (d.provider_message_id, d.updated_at) == ("p-1", late_at)


async def test_terminal_at_of_a_retried_delivery_is_the_moment_it_became_terminal(db: Database, t0: datetime) -> None:
    delivery_id = await delivery_in(db, t0, "failed")
    assert (await _delivery_row(db, delivery_id))["terminal_at"] is None
    await mark_dispatched(db, delivery_id, now=later(t0, minutes=1))
    await record_attempt(db, delivery_id, SendResult("succeeded"), now=later(t0, minutes=2))
    assert (await _delivery_row(db, delivery_id))["terminal_at"] == later(t0, minutes=2)
    # Exhausting a terminal delivery returns it as it is.
    d = await exhaust_delivery(db, delivery_id, now=later(t0, minutes=3))
    assert (d.status, d.terminal_at, d.updated_at) == ("succeeded", later(t0, minutes=2), later(t0, minutes=2))


async def _delivery_row(db: Database, delivery_id: uuid.UUID) -> dict[str, Any]:
    async with db.transaction() as conn:
        return (await lock_delivery(conn, delivery_id)).model_dump()


@pytest.mark.parametrize(
    ("result", "status", "suppression_reason", "attempt"),
    [
        (SendResult("succeeded"), "succeeded", None, ("succeeded", None)),
        (SendResult("accepted"), "dispatched", None, ("succeeded", None)),
        (SendResult("temporary", error="451"), "failed", None, ("failed", "temporary")),
        (SendResult("unknown", error="boom"), "failed", None, ("failed", "unknown")),
        (SendResult("permanent", error="550"), "cancelled", "permanent_failure", ("failed", "permanent")),
        (SendResult("bounced", error="550"), "cancelled", "bounced", ("bounced", "bounced")),
        (
            SendResult("rejected", error="no_channel_adapter"),
            "cancelled",
            "permanent_failure",
            ("rejected", "permanent"),
        ),
        (
            SendResult("suppressed", error="recipient_opted_out"),
            "suppressed",
            "recipient_opted_out",
            ("rejected", None),
        ),
    ],
)
async def test_each_send_result_moves_a_dispatched_delivery(
    db: Database,
    t0: datetime,
    result: SendResult,
    status: str,
    suppression_reason: str | None,
    attempt: tuple[str, str | None],
) -> None:
    delivery_id = await delivery_in(db, t0, "dispatched")
    at = later(t0, seconds=5)
    d = await record_attempt(db, delivery_id, result, now=at)
    terminal_at = at if status in ("succeeded", "suppressed", "cancelled") else None
    assert (d.status, d.suppression_reason, d.terminal_at, d.attempt_count) == (
        status,
        suppression_reason,
        terminal_at,
        1,
    )
    assert [
        (a["attempt_number"], a["outcome"], a["error_class"], a["error"]) for a in await attempts(db, delivery_id)
    ] == [(1, *attempt, result.error)]
