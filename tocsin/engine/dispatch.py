"""Sending one delivery attempt through its channel (SPEC 5), unless the recipient opted out of it (SPEC 12.1).
No lock is ever held during a provider call."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.channels import Channel, DeliveryError, OutboundMessage
from tocsin.core.models import Delivery
from tocsin.core.vocabulary import TERMINAL_DELIVERY_STATUSES
from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.engine.deliveries import SendKind, SendResult, apply_result, begin_attempt
from tocsin.engine.preferences import opted_out
from tocsin.engine.schedule import schedule_retry

log = logging.getLogger("tocsin.dispatch")

Clock = Callable[[], datetime]
# A policy returns a suppression reason (e.g. "recipient_opted_out") to stop the send, or None to allow it.
Policy = Callable[[OutboundMessage], Awaitable[str | None]]

ERROR_KINDS: dict[str, SendKind] = {"temporary": "temporary", "permanent": "permanent", "bounced": "bounced"}


async def dispatch_delivery(
    db: Database,
    delivery_id: uuid.UUID,
    *,
    channels: Mapping[str, Channel],
    now: datetime | Clock,
    attempt: int | None = None,
    policy: Policy | None = None,
) -> Delivery:
    """Send attempt number `attempt` (default: the next one) of a delivery and record what happened.

    Idempotent: a terminal delivery, or an attempt that was already made, is returned as it is; so is one
    the provider accepted and will report on later. An attempt left `dispatched` with no result by a
    crashed worker is sent again under the same idempotency key (the delivery id), so the provider can
    drop the duplicate.
    `now` may be a clock: the outcome is stamped when the provider answered, not when the call began.
    """
    clock: Clock = now if callable(now) else (lambda: now)
    async with db.transaction() as conn:
        delivery = await store.lock_delivery(conn, delivery_id)
        if delivery.status in TERMINAL_DELIVERY_STATUSES:
            return delivery
        if delivery.status != "dispatched" and delivery.scheduled_for is not None and clock() < delivery.scheduled_for:
            return delivery  # SPEC 11.3: not before its window opens or its backoff ends; nothing is written
        resend = delivery.status == "dispatched" and attempt in (None, delivery.attempt_count)
        if resend and await result_recorded(conn, delivery):
            return delivery  # accepted, awaiting the provider's report: sending it again would duplicate it
        if not resend:
            if attempt is not None and delivery.attempt_count >= attempt:
                return delivery
            delivery = await begin_attempt(conn, delivery, now=clock())
        run = await store.get_run(conn, delivery.run_id)
        # SPEC 12.1: read here, while the delivery is locked anyway (one indexed read, no lock held longer);
        # it decides after the policy hook, in _send. A required step ignores preferences.
        step = (await db.definition(run.definition_id, conn)).step(delivery.step_key)
        refused = not step.required and await opted_out(
            conn,
            tenant_id=delivery.tenant_id,
            recipient=delivery.recipient,
            workflow_key=run.workflow_key,
            channel=delivery.channel,
        )
    send_number = delivery.attempt_count

    message = OutboundMessage(
        delivery_id=delivery.id,
        idempotency_key=str(delivery.id),
        run_id=delivery.run_id,
        tenant_id=delivery.tenant_id,
        recipient=delivery.recipient,
        channel=delivery.channel,
        step_key=delivery.step_key,
        content=delivery.content,
    )
    result = await _send(message, channels.get(delivery.channel), policy, stopped=run.finished, refused=refused)

    async with db.transaction() as conn:
        # The run first, as every decision locks: a cancel either committed before (and the result sees the
        # run finished) or waits and then finds the delivery's new status.
        run = await store.lock_run(conn, delivery.run_id)
        delivery = await store.lock_delivery(conn, delivery_id)
        stamp = clock()
        delivery = await apply_result(
            conn, delivery, result, now=stamp, send_number=send_number, run_finished=run.finished
        )
        if delivery.status == "failed":
            delivery = await schedule_retry(conn, step, delivery, now=stamp)
        elif result.kind == "accepted" and delivery.status == "dispatched" and delivery.feedback_due_at is None:
            deadline = stamp + timedelta(seconds=step.feedback_timeout_seconds)
            delivery = await store.fetch_one(
                conn, Delivery, q.SET_FEEDBACK_DEADLINE, delivery_id=delivery.id, feedback_due_at=deadline, now=stamp
            )
    log_attempt(delivery, result)
    return delivery


def log_attempt(delivery: Delivery, result: SendResult) -> None:
    """One line per attempt outcome. Never the recipient or the content."""
    log.log(
        logging.WARNING if result.kind in ("temporary", "unknown", "rejected") else logging.INFO,
        "dispatch attempt %d via %s: %s",
        delivery.attempt_count,
        delivery.channel,
        result.kind,
        extra={
            "run_id": str(delivery.run_id),
            "delivery_id": str(delivery.id),
            "channel": delivery.channel,
            "attempt": delivery.attempt_count,
            "result": result.kind,
            "error": result.error,
            "status": delivery.status,
        },
    )


async def result_recorded(conn: AsyncConnection, delivery: Delivery) -> bool:
    """Whether the send that made this delivery `dispatched` (send number `attempt_count`) has its result row.

    A fact in the rows, not a comparison of timestamps that different hosts' clocks wrote.
    """
    found: bool = await store.scalar(
        conn, q.SEND_RESULT_RECORDED, delivery_id=delivery.id, send_number=delivery.attempt_count
    )
    return found


async def _send(
    message: OutboundMessage, channel: Channel | None, policy: Policy | None, *, stopped: bool, refused: bool
) -> SendResult:
    if stopped:
        # The run was stopped while this delivery was queued: sending now would be the surprise.
        return SendResult("suppressed", error="run_stopped")
    if channel is None:
        return SendResult("rejected", error="no_channel_adapter")
    if policy is not None and (reason := await policy(message)) is not None:
        return SendResult("suppressed", error=reason)
    if refused:
        return SendResult("suppressed", error="recipient_opted_out")
    try:
        receipt = await channel.send(message)
    except DeliveryError as exc:
        kind = ERROR_KINDS.get(exc.error_class, "temporary")
        return SendResult(kind, error=exc.error, provider_response=exc.provider_response)
    except Exception as exc:  # an adapter bug must not wedge the run: retried, bounded by max_attempts
        return SendResult("unknown", error=f"{type(exc).__name__}: {exc}")
    if receipt.awaiting_feedback:
        # Recorded as a succeeded attempt (the provider took it) that is marked as not yet delivered.
        response = {**receipt.provider_response, "awaiting_feedback": True}
        return SendResult("accepted", provider_message_id=receipt.provider_message_id, provider_response=response)
    return SendResult(
        "succeeded", provider_message_id=receipt.provider_message_id, provider_response=receipt.provider_response
    )
