"""dispatch_delivery on a real Postgres: one attempt, its idempotency, the policy hook, adapter failures.

The adapters here are small channel adapters of the kind users register; they record what they were sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import pytest
from journeys import ESCALATION, attempts, delivery_at, later, start

from tocsin.channels import (
    DeliveryBounced,
    OutboundMessage,
    PermanentDeliveryError,
    SendReceipt,
    TemporaryDeliveryError,
)
from tocsin.db import Database
from tocsin.engine.deliveries import mark_dispatched
from tocsin.engine.dispatch import dispatch_delivery
from tocsin.engine.feedback import record_delivery_outcome
from tocsin.engine.runs import cancel_run


@dataclass
class Recorder:
    """An adapter that records each message and answers with `raises` (an exception) or a receipt."""

    raises: Exception | None = None
    awaiting_feedback: bool = False
    message_ids: bool = True  # whether the provider answers with a message id
    sent: list[OutboundMessage] = field(default_factory=list)
    lock_free: list[bool] = field(default_factory=list)
    db_url: str | None = None

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.sent.append(message)
        if self.db_url:  # prove no lock is held on the delivery row during the provider call
            conn = await asyncpg.connect(self.db_url)
            try:
                await conn.execute(
                    "SELECT 1 FROM tocsin.deliveries WHERE id = $1 FOR UPDATE NOWAIT", message.delivery_id
                )
                self.lock_free.append(True)
            finally:
                await conn.close()
        if self.raises is not None:
            raise self.raises
        return SendReceipt(
            provider_message_id=f"msg-{len(self.sent)}" if self.message_ids else None,
            provider_response={"ok": True},
            awaiting_feedback=self.awaiting_feedback,
        )


async def first(db: Database, t0: datetime) -> tuple[uuid.UUID, uuid.UUID]:
    run = await start(db, ESCALATION, now=t0)
    return run.id, (await delivery_at(db, run.id, 1))["id"]


async def test_a_send_is_recorded_with_the_moment_the_provider_answered(
    db: Database, t0: datetime, fresh_db_url: str
) -> None:
    run_id, delivery_id = await first(db, t0)
    adapter = Recorder(db_url=fresh_db_url)
    moments = iter([later(t0, seconds=1), later(t0, seconds=3)])

    delivery = await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=lambda: next(moments))

    assert (delivery.status, delivery.attempt_count, delivery.provider_message_id) == ("succeeded", 1, "msg-1")
    assert delivery.terminal_at == later(t0, seconds=3)  # when the provider answered, not when the call began
    [message] = adapter.sent
    assert message.idempotency_key == str(delivery_id)
    assert (message.run_id, message.tenant_id, message.step_key) == (run_id, "acme", "in_app")
    assert message.content == {"title": "Ada mentioned you", "body": "see the draft"}
    assert adapter.lock_free == [True]
    [attempt] = await attempts(db, delivery_id)
    assert (attempt["outcome"], attempt["provider_message_id"], attempt["provider_response"]) == (
        "succeeded",
        "msg-1",
        {"ok": True},
    )


async def test_dispatch_is_idempotent(db: Database, t0: datetime) -> None:
    _, delivery_id = await first(db, t0)
    adapter = Recorder()
    channels = {"in_app": adapter}
    await dispatch_delivery(db, delivery_id, channels=channels, now=t0, attempt=1)

    again = await dispatch_delivery(db, delivery_id, channels=channels, now=later(t0, seconds=5), attempt=1)
    later_attempt = await dispatch_delivery(db, delivery_id, channels=channels, now=later(t0, seconds=6))

    assert len(adapter.sent) == 1
    assert again.terminal_at == later_attempt.terminal_at == t0
    assert len(await attempts(db, delivery_id)) == 1


async def test_an_attempt_already_made_is_not_made_again(db: Database, t0: datetime) -> None:
    _, delivery_id = await first(db, t0)
    adapter = Recorder(raises=TemporaryDeliveryError("http_503"))
    channels = {"in_app": adapter}
    failed = await dispatch_delivery(db, delivery_id, channels=channels, now=t0, attempt=1)
    assert (failed.status, failed.attempt_count) == ("failed", 1)

    replayed = await dispatch_delivery(db, delivery_id, channels=channels, now=later(t0, seconds=1), attempt=1)
    assert (replayed.status, replayed.attempt_count, len(adapter.sent)) == ("failed", 1, 1)

    adapter.raises = None
    second = await dispatch_delivery(db, delivery_id, channels=channels, now=later(t0, seconds=30), attempt=2)
    assert (second.status, second.attempt_count, len(adapter.sent)) == ("succeeded", 2, 2)
    assert [a["outcome"] for a in await attempts(db, delivery_id)] == ["failed", "succeeded"]


async def test_an_attempt_left_in_flight_by_a_crashed_worker_is_sent_again_under_the_same_key(
    db: Database, t0: datetime
) -> None:
    _, delivery_id = await first(db, t0)
    await mark_dispatched(db, delivery_id, now=t0)  # the worker died after this commit, before recording
    adapter = Recorder()

    delivery = await dispatch_delivery(
        db, delivery_id, channels={"in_app": adapter}, now=later(t0, seconds=9), attempt=1
    )

    assert (delivery.status, delivery.attempt_count) == ("succeeded", 1)
    assert [m.idempotency_key for m in adapter.sent] == [str(delivery_id)]


@pytest.mark.parametrize(
    ("error", "status", "reason", "outcome", "error_class"),
    [
        (TemporaryDeliveryError("http_503"), "failed", None, "failed", "temporary"),
        (PermanentDeliveryError("http_400"), "cancelled", "permanent_failure", "failed", "permanent"),
        (DeliveryBounced("smtp_550"), "cancelled", "bounced", "bounced", "bounced"),
        (KeyError("adapter bug"), "failed", None, "failed", "unknown"),
    ],
)
async def test_adapter_failures_map_to_statuses(
    db: Database, t0: datetime, error: Exception, status: str, reason: str | None, outcome: str, error_class: str
) -> None:
    _, delivery_id = await first(db, t0)

    delivery = await dispatch_delivery(db, delivery_id, channels={"in_app": Recorder(raises=error)}, now=t0)

    assert (delivery.status, delivery.suppression_reason) == (status, reason)
    [attempt] = await attempts(db, delivery_id)
    assert (attempt["outcome"], attempt["error_class"]) == (outcome, error_class)
    assert attempt["error"]


async def test_a_channel_without_adapter_is_a_permanent_failure(db: Database, t0: datetime) -> None:
    _, delivery_id = await first(db, t0)

    delivery = await dispatch_delivery(db, delivery_id, channels={}, now=t0)

    assert (delivery.status, delivery.suppression_reason) == ("cancelled", "permanent_failure")
    [attempt] = await attempts(db, delivery_id)
    assert (attempt["outcome"], attempt["error"]) == ("rejected", "no_channel_adapter")


async def test_the_policy_hook_suppresses_before_the_send(db: Database, t0: datetime) -> None:
    _, delivery_id = await first(db, t0)
    adapter = Recorder()
    seen: list[str] = []

    async def opted_out(message: OutboundMessage) -> str | None:
        seen.append(message.recipient)
        return "recipient_opted_out"

    delivery = await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=t0, policy=opted_out)

    assert (delivery.status, delivery.suppression_reason, delivery.terminal_at) == (
        "suppressed",
        "recipient_opted_out",
        t0,
    )
    assert adapter.sent == [] and seen == ["user:42"]


async def test_a_send_left_in_flight_when_the_run_was_cancelled_is_not_resent(db: Database, t0: datetime) -> None:
    run_id, delivery_id = await first(db, t0)
    await mark_dispatched(db, delivery_id, now=t0)
    await cancel_run(db, run_id, tenant_id="acme", reason="unsubscribed", now=later(t0, seconds=1))
    adapter = Recorder()

    delivery = await dispatch_delivery(
        db, delivery_id, channels={"in_app": adapter}, now=later(t0, seconds=2), attempt=1
    )

    assert (delivery.status, delivery.suppression_reason) == ("suppressed", "run_stopped")
    assert adapter.sent == []


@dataclass
class CancelDuringSend:
    """An adapter whose provider call outlasts a cancel of the run, then fails temporarily."""

    db: Database
    run_id: uuid.UUID
    at: datetime

    async def send(self, message: OutboundMessage) -> SendReceipt:
        await cancel_run(self.db, self.run_id, tenant_id="acme", reason="unsubscribed", now=self.at)
        raise TemporaryDeliveryError("http_503")


async def test_a_temporary_failure_after_the_run_was_cancelled_mid_send_ends_the_delivery(
    db: Database, t0: datetime
) -> None:
    """cancel_run leaves a send in flight alone; its temporary failure would then never be retried, so the
    delivery ends cancelled/run_cancelled instead of staying `failed` for ever."""
    run_id, delivery_id = await first(db, t0)
    adapter = CancelDuringSend(db, run_id, later(t0, seconds=1))

    delivery = await dispatch_delivery(
        db, delivery_id, channels={"in_app": adapter}, now=later(t0, seconds=2), attempt=1
    )

    assert (delivery.status, delivery.suppression_reason) == ("cancelled", "run_cancelled")
    assert delivery.terminal_at == later(t0, seconds=2)
    assert [(a["outcome"], a["error_class"], a["send_number"]) for a in await attempts(db, delivery_id)] == [
        ("failed", "temporary", 1)
    ]


async def test_feedback_failing_a_send_of_a_cancelled_run_ends_the_delivery(db: Database, t0: datetime) -> None:
    run_id, delivery_id = await first(db, t0)
    await dispatch_delivery(db, delivery_id, channels={"in_app": Recorder(awaiting_feedback=True)}, now=t0, attempt=1)
    await cancel_run(db, run_id, tenant_id="acme", reason="unsubscribed", now=later(t0, seconds=1))

    reported = await record_delivery_outcome(
        db, delivery_id, tenant_id="acme", outcome="temporary_failure", now=later(t0, seconds=2)
    )

    assert (reported.status, reported.suppression_reason) == ("cancelled", "run_cancelled")


async def test_an_accepted_send_awaiting_feedback_is_never_sent_twice(db: Database, t0: datetime) -> None:
    _, delivery_id = await first(db, t0)
    adapter = Recorder(awaiting_feedback=True)
    channels = {"in_app": adapter}
    accepted = await dispatch_delivery(db, delivery_id, channels=channels, now=t0, attempt=1)
    assert (accepted.status, accepted.attempt_count, accepted.terminal_at) == ("dispatched", 1, None)

    # The activity is retried after its result was committed (worker lost, timeout): nothing is resent.
    retried = await dispatch_delivery(db, delivery_id, channels=channels, now=later(t0, minutes=6), attempt=1)

    assert (retried.status, len(adapter.sent)) == ("dispatched", 1)
    [attempt] = await attempts(db, delivery_id)
    assert (attempt["outcome"], attempt["provider_response"]) == ("succeeded", {"ok": True, "awaiting_feedback": True})


# --- which send a result belongs to: a number in the rows, never a comparison of clocks ----------------------
# Hosts' clocks disagree (a worker behind the server, a time skip): each case below stamps a result or a send
# with a clock earlier than the one before it, which a timestamp comparison reads the wrong way round.


async def test_an_accepted_send_recorded_by_a_clock_behind_is_not_sent_again(db: Database, t0: datetime) -> None:
    _, delivery_id = await first(db, t0)
    adapter = Recorder(awaiting_feedback=True, message_ids=False)
    # The send begins at t0 + 10 s; the provider's answer is stamped by a clock 10 s behind.
    moments = iter([later(t0, seconds=10), t0])
    accepted = await dispatch_delivery(
        db, delivery_id, channels={"in_app": adapter}, now=lambda: next(moments), attempt=1
    )
    assert (accepted.status, accepted.updated_at) == ("dispatched", later(t0, seconds=10))

    retried = await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=t0, attempt=1)

    assert (retried.status, len(adapter.sent)) == ("dispatched", 1)
    assert [(a["attempt_number"], a["send_number"], a["created_at"]) for a in await attempts(db, delivery_id)] == [
        (1, 1, t0)
    ]


async def test_a_send_begun_by_a_clock_behind_the_last_result_is_made_after_a_crash(db: Database, t0: datetime) -> None:
    _, delivery_id = await first(db, t0)
    adapter = Recorder(raises=TemporaryDeliveryError("http_503"))
    await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=later(t0, seconds=10), attempt=1)
    # Send 2 begins on a host 10 s behind, which dies before sending: the retried activity must send it.
    await mark_dispatched(db, delivery_id, now=t0)
    adapter.raises = None

    sent = await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=later(t0, seconds=1), attempt=2)

    assert (sent.status, sent.attempt_count, len(adapter.sent)) == ("succeeded", 2, 2)
    assert [(a["send_number"], a["outcome"]) for a in await attempts(db, delivery_id)] == [
        (1, "failed"),
        (2, "succeeded"),
    ]


async def test_feedback_on_a_failed_delivery_is_numbered_but_is_no_send(db: Database, t0: datetime) -> None:
    """attempt_number counts rows, attempt_count counts sends begun, send_number names a row's send."""
    _, delivery_id = await first(db, t0)
    adapter = Recorder(raises=TemporaryDeliveryError("http_503"))
    await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=t0, attempt=1)
    # The provider reports on the failed message, stamped by a clock an hour ahead.
    reported = await record_delivery_outcome(
        db, delivery_id, tenant_id="acme", outcome="bounced", error="550", now=later(t0, hours=1)
    )
    assert (reported.status, reported.attempt_count) == ("failed", 1)
    # Send 2 begins, and its worker dies before sending: the feedback row is not send 2's result.
    await mark_dispatched(db, delivery_id, now=later(t0, minutes=1))
    adapter.raises = None

    sent = await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=later(t0, minutes=2), attempt=2)

    assert (sent.status, sent.attempt_count, len(adapter.sent)) == ("succeeded", 2, 2)
    assert [(a["attempt_number"], a["send_number"], a["outcome"]) for a in await attempts(db, delivery_id)] == [
        (1, 1, "failed"),
        (2, None, "bounced"),
        (3, 2, "succeeded"),
    ]
