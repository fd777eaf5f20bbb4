"""dispatch_delivery checks the recipient's preferences before every send (SPEC 12.1), after the policy hook.

The rows are compared whole where SPEC names them: the delivery's status and suppression reason, the attempt's
outcome and error, and what the channel adapter was (not) sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from journeys import ESCALATION, RECIPIENT, TENANT, attempts, delivery_at, journey, later, start, step

from tocsin.channels import OutboundMessage, SendReceipt, TemporaryDeliveryError
from tocsin.db import Database
from tocsin.engine.dispatch import dispatch_delivery
from tocsin.engine.preferences import set_preference

# The same two-step journey, the second one a receipt that must reach the recipient whatever they chose.
RECEIPT = journey("receipt", {**step("receipt", "in_app"), "required": True})


@dataclass
class Recorder:
    """A channel adapter that records what it was sent; it fails temporarily `failures` times first."""

    failures: int = 0
    sent: list[OutboundMessage] = field(default_factory=list)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.sent.append(message)
        if len(self.sent) <= self.failures:
            raise TemporaryDeliveryError("smtp 451")
        return SendReceipt(provider_message_id=f"msg-{len(self.sent)}")


async def first_delivery(db: Database, spec: dict[str, Any], t0: datetime) -> uuid.UUID:
    run = await start(db, spec, now=t0)
    delivery_id: uuid.UUID = (await delivery_at(db, run.id, 1))["id"]
    return delivery_id


async def prefer(db: Database, t0: datetime, *scopes: tuple[str | None, str | None, bool]) -> None:
    for workflow_key, channel, opted_in in scopes:
        await set_preference(
            db, tenant_id=TENANT, recipient=RECIPIENT, opted_in=opted_in, workflow_key=workflow_key, channel=channel,
            now=t0,
        )  # fmt: skip


def attempt_rows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(a["attempt_number"], a["send_number"], a["outcome"], a["error_class"], a["error"]) for a in rows]


async def test_an_opted_out_send_is_suppressed_with_a_rejected_attempt(db: Database, t0: datetime) -> None:
    await prefer(db, t0, (None, "in_app", False))
    delivery_id = await first_delivery(db, ESCALATION, t0)
    adapter = Recorder()

    delivery = await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=t0)

    assert adapter.sent == []
    row = await delivery_at(db, delivery.run_id, 1)
    assert (row["status"], row["suppression_reason"], row["terminal_at"], row["attempt_count"]) == (
        "suppressed",
        "recipient_opted_out",
        t0,
        1,
    )
    assert attempt_rows(await attempts(db, delivery_id)) == [(1, 1, "rejected", None, "recipient_opted_out")]


# (the recipient's rows as (workflow_key, channel, opted_in), whether the in_app step of mention_escalation is sent)
SCOPES = [
    pytest.param([], True, id="no rows: opted in by default"),
    pytest.param([(None, None, False)], False, id="out of everything"),
    pytest.param([(None, "email", False)], True, id="out of another channel"),
    pytest.param([("digest", None, False)], True, id="out of another workflow"),
    pytest.param([("mention_escalation", None, False)], False, id="out of this workflow"),
    pytest.param([(None, None, False), (None, "in_app", True)], True, id="channel beats any"),
    pytest.param([(None, "in_app", True), ("mention_escalation", None, False)], False, id="workflow beats channel"),
    pytest.param([(None, "in_app", False), ("mention_escalation", None, True)], True, id="workflow in beats channel"),
    pytest.param(
        [("mention_escalation", None, False), ("mention_escalation", "in_app", True)], True, id="both beat workflow"
    ),
    pytest.param([("mention_escalation", None, True), ("mention_escalation", "in_app", False)], False, id="both out"),
    pytest.param([(None, "in_app", False), (None, "in_app", True)], True, id="set again: the last choice"),
]


@pytest.mark.parametrize(("scopes", "sent"), SCOPES)
async def test_the_most_specific_row_decides_the_send(
    db: Database, t0: datetime, scopes: list[tuple[str | None, str | None, bool]], sent: bool
) -> None:
    await prefer(db, t0, *scopes)
    delivery_id = await first_delivery(db, ESCALATION, t0)
    adapter = Recorder()

    delivery = await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=t0)

    if sent:
        assert (delivery.status, delivery.suppression_reason, len(adapter.sent)) == ("succeeded", None, 1)
        assert attempt_rows(await attempts(db, delivery_id)) == [(1, 1, "succeeded", None, None)]
    else:
        assert (delivery.status, delivery.suppression_reason, adapter.sent) == ("suppressed", "recipient_opted_out", [])
        assert attempt_rows(await attempts(db, delivery_id)) == [(1, 1, "rejected", None, "recipient_opted_out")]


async def test_another_recipient_or_tenant_opting_out_changes_nothing(db: Database, t0: datetime) -> None:
    for tenant_id, recipient in ((TENANT, "user:7"), ("globex", RECIPIENT)):
        await set_preference(db, tenant_id=tenant_id, recipient=recipient, opted_in=False, now=t0)
    delivery_id = await first_delivery(db, ESCALATION, t0)

    delivery = await dispatch_delivery(db, delivery_id, channels={"in_app": Recorder()}, now=t0)

    assert delivery.status == "succeeded"


async def test_a_required_step_is_sent_to_a_recipient_who_opted_out(db: Database, t0: datetime) -> None:
    await prefer(db, t0, (None, None, False), ("receipt", "in_app", False))
    delivery_id = await first_delivery(db, RECEIPT, t0)
    adapter = Recorder()
    policy_saw: list[str] = []

    async def policy(message: OutboundMessage) -> str | None:
        policy_saw.append(message.step_key)
        return None

    delivery = await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=t0, policy=policy)

    assert (delivery.status, delivery.suppression_reason) == ("succeeded", None)
    assert [m.step_key for m in adapter.sent] == ["receipt"] and policy_saw == ["receipt"]
    assert attempt_rows(await attempts(db, delivery_id)) == [(1, 1, "succeeded", None, None)]


async def test_the_policy_hook_still_runs_for_a_required_step(db: Database, t0: datetime) -> None:
    delivery_id = await first_delivery(db, RECEIPT, t0)

    async def quiet_hours(message: OutboundMessage) -> str | None:
        return "quiet_hours"

    delivery = await dispatch_delivery(db, delivery_id, channels={"in_app": Recorder()}, now=t0, policy=quiet_hours)

    assert (delivery.status, delivery.suppression_reason) == ("suppressed", "quiet_hours")


async def test_the_policy_hook_decides_first(db: Database, t0: datetime) -> None:
    """Both would stop the send: the hook runs before the preferences are applied, so its reason is kept."""
    await prefer(db, t0, (None, None, False))
    delivery_id = await first_delivery(db, ESCALATION, t0)
    policy_saw: list[str] = []

    async def quiet_hours(message: OutboundMessage) -> str | None:
        policy_saw.append(message.recipient)
        return "quiet_hours"

    delivery = await dispatch_delivery(db, delivery_id, channels={"in_app": Recorder()}, now=t0, policy=quiet_hours)

    assert (delivery.status, delivery.suppression_reason, policy_saw) == ("suppressed", "quiet_hours", [RECIPIENT])
    assert attempt_rows(await attempts(db, delivery_id)) == [(1, 1, "rejected", None, "quiet_hours")]


async def test_preferences_are_checked_again_before_a_retry(db: Database, t0: datetime) -> None:
    """Before every send: an opt-out that lands between a temporary failure and its retry stops the retry."""
    delivery_id = await first_delivery(db, ESCALATION, t0)
    adapter = Recorder(failures=1)
    failed = await dispatch_delivery(db, delivery_id, channels={"in_app": adapter}, now=t0, attempt=1)
    assert failed.status == "failed"

    await prefer(db, later(t0, seconds=5), ("mention_escalation", "in_app", False))
    retried = await dispatch_delivery(
        db, delivery_id, channels={"in_app": adapter}, now=later(t0, seconds=30), attempt=2
    )

    assert (retried.status, retried.suppression_reason, retried.attempt_count) == (
        "suppressed",
        "recipient_opted_out",
        2,
    )
    assert len(adapter.sent) == 1
    assert attempt_rows(await attempts(db, delivery_id)) == [
        (1, 1, "failed", "temporary", "smtp 451"),
        (2, 2, "rejected", None, "recipient_opted_out"),
    ]
