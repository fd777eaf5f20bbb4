"""Moving a delivery's status (the machine itself is in tocsin.core.vocabulary) and recording each send's result."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.errors import InvalidDeliveryTransition
from tocsin.core.models import Delivery
from tocsin.core.vocabulary import TERMINAL_DELIVERY_STATUSES, is_legal_move
from tocsin.db import Database, store
from tocsin.db import queries as q

SendKind = Literal["succeeded", "accepted", "temporary", "permanent", "bounced", "rejected", "suppressed", "unknown"]


@dataclass(frozen=True)
class SendResult:
    """What one send (or one piece of provider feedback) found out.

    `accepted`: the provider took the message but confirms delivery later (record_delivery_outcome), so the
    delivery stays `dispatched`. `rejected`: tocsin could not send it (render failure, no adapter).
    `suppressed`: the policy hook chose not to send; `error` is the suppression reason.
    `unknown`: the adapter failed in a way it did not classify; retried like a temporary failure.
    """

    kind: SendKind
    error: str | None = None
    provider_message_id: str | None = None
    provider_response: dict[str, Any] = field(default_factory=dict)


# kind -> (attempt outcome, attempt error_class, new status, suppression_reason)
EFFECTS: dict[SendKind, tuple[str, str | None, str | None, str | None]] = {
    "succeeded": ("succeeded", None, "succeeded", None),
    "accepted": ("succeeded", None, None, None),
    "temporary": ("failed", "temporary", "failed", None),
    "permanent": ("failed", "permanent", "cancelled", "permanent_failure"),
    "bounced": ("bounced", "bounced", "cancelled", "bounced"),
    "rejected": ("rejected", "permanent", "cancelled", "permanent_failure"),
    "suppressed": ("rejected", None, "suppressed", None),
    "unknown": ("failed", "unknown", "failed", None),
}


def check_move(delivery: Delivery, to: str) -> None:
    if not is_legal_move(delivery.status, to):
        raise InvalidDeliveryTransition(f"delivery {delivery.id} cannot move from {delivery.status!r} to {to!r}")


async def move(
    conn: AsyncConnection,
    delivery: Delivery,
    to: str,
    *,
    now: datetime,
    suppression_reason: str | None = None,
    provider_message_id: str | None = None,
    terminal_at: datetime | None = None,
) -> Delivery:
    """One legal status move; `terminal_at` (default `now`) is stamped the first time the status becomes terminal."""
    check_move(delivery, to)
    return await store.move_delivery(
        conn,
        delivery.id,
        status=to,
        now=now,
        terminal=to in TERMINAL_DELIVERY_STATUSES,
        suppression_reason=suppression_reason,
        provider_message_id=provider_message_id,
        terminal_at=terminal_at,
    )


async def begin_attempt(conn: AsyncConnection, delivery: Delivery, *, now: datetime) -> Delivery:
    """`pending` or `failed` -> `dispatched`: send number attempt_count + 1 begins."""
    check_move(delivery, "dispatched")
    return await store.fetch_one(conn, Delivery, q.BEGIN_SEND, delivery_id=delivery.id, now=now)


async def apply_result(
    conn: AsyncConnection,
    delivery: Delivery,
    result: SendResult,
    *,
    now: datetime,
    send_number: int | None,
    run_finished: bool = False,
) -> Delivery:
    """Record the attempt row and, if the delivery is in flight, move its status.

    `send_number` is the send this is the result of (None: provider feedback, or a rejection before any
    send); dispatch later asks whether the current send has its result by that number, never by a clock.
    A result that arrives when the delivery is no longer `dispatched` (a late bounce after success, a
    duplicate of an attempt already recorded) is kept as evidence only: it never moves the status.
    A temporary failure of a run that finished while the send was in flight (the caller holds the run's
    lock) is never retried: it ends `cancelled`/`run_cancelled` instead of `failed` for ever.
    """
    outcome, error_class, status, reason = EFFECTS[result.kind]
    if result.kind == "suppressed":
        reason = result.error
    await store.insert_attempt(
        conn,
        delivery.id,
        now=now,
        send_number=send_number,
        outcome=outcome,
        error_class=error_class,
        error=result.error,
        provider_message_id=result.provider_message_id,
        provider_response=result.provider_response,
    )
    fills_message_id = result.provider_message_id is not None and delivery.provider_message_id is None
    if delivery.status != "dispatched" or status is None:
        if not fills_message_id:
            return delivery
        return await store.fetch_one(
            conn,
            Delivery,
            q.FILL_PROVIDER_MESSAGE_ID,
            delivery_id=delivery.id,
            provider_message_id=result.provider_message_id,
            now=now,
        )
    moved = await move(
        conn, delivery, status, now=now, suppression_reason=reason, provider_message_id=result.provider_message_id
    )
    if moved.status == "failed" and run_finished:
        return await move(conn, moved, "cancelled", now=now, suppression_reason="run_cancelled")
    return moved


async def mark_dispatched(db: Database, delivery_id: uuid.UUID, *, now: datetime) -> Delivery:
    """Begin the next send of a delivery, as dispatch does (without sending anything)."""
    async with db.transaction() as conn:
        return await begin_attempt(conn, await store.lock_delivery(conn, delivery_id), now=now)


async def record_attempt(db: Database, delivery_id: uuid.UUID, result: SendResult, *, now: datetime) -> Delivery:
    """Record `result` as the result of the delivery's current send, as dispatch does (its run locked first)."""
    async with db.transaction() as conn:
        delivery, _ = await store.lock_delivery_and_run(conn, delivery_id)
        return await apply_result(conn, delivery, result, now=now, send_number=delivery.attempt_count or None)


async def suppress_delivery(db: Database, delivery_id: uuid.UUID, *, reason: str, now: datetime) -> Delivery:
    async with db.transaction() as conn:
        delivery = await store.lock_delivery(conn, delivery_id)
        return await move(conn, delivery, "suppressed", now=now, suppression_reason=reason)


async def exhaust_delivery(db: Database, delivery_id: uuid.UUID, *, now: datetime) -> Delivery:
    """`failed` -> `cancelled`/`retries_exhausted` once the step's attempts are spent; terminal: as it is."""
    async with db.transaction() as conn:
        delivery = await store.lock_delivery(conn, delivery_id)
        if delivery.status in TERMINAL_DELIVERY_STATUSES:
            return delivery
        if delivery.status != "failed":
            raise InvalidDeliveryTransition(
                f"delivery {delivery.id} is {delivery.status!r}: only a failed one can exhaust its retries"
            )
        return await move(conn, delivery, "cancelled", now=now, suppression_reason="retries_exhausted")
