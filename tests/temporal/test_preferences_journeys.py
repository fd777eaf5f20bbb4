"""Preferences in whole journeys (SPEC 12.1, 14 "no stall"): an opted-out send is suppressed at dispatch and the
run acts on it at once; a required step is sent anyway. Set through the Tocsin API, run on the time-skipping
server with tocsin.testing's `journeys`."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tocsin.core.models import RunDetail
from tocsin.examples import example
from tocsin.testing import Journeys

MENTION = example("mention_escalation")  # in_app, then email two hours later unless read
ADA = "user:ada"


async def run_to_end(journeys: Journeys, definition: dict[str, Any]) -> RunDetail:
    await journeys.register(definition)
    run = await journeys.tocsin.start_run(
        workflow_key=definition["key"], tenant_id="acme", recipient=ADA,
        data={"actor": "Grace", "excerpt": "see PR 12"}, idempotency_key=str(uuid.uuid4()),
    )  # fmt: skip
    return await journeys.run_to_end(run)


def attempts_of(detail: RunDetail, delivery_id: uuid.UUID) -> list[tuple[str, str | None]]:
    return [(a.outcome, a.error) for a in detail.attempts if a.delivery_id == delivery_id]


async def test_an_opted_out_email_is_suppressed_and_the_run_ends_without_sending_it(journeys: Journeys) -> None:
    await journeys.tocsin.set_preference(tenant_id="acme", recipient=ADA, opted_in=False, channel="email")

    detail = await run_to_end(journeys, MENTION)

    in_app, email = detail.deliveries
    assert (in_app.status, in_app.suppression_reason) == ("succeeded", None)
    assert (email.status, email.suppression_reason) == ("suppressed", "recipient_opted_out")
    assert attempts_of(detail, email.id) == [("rejected", "recipient_opted_out")]
    assert journeys.channels["email"].messages == []
    assert len(journeys.channels["in_app"].messages) == 1
    assert detail.run.finished


async def test_a_required_step_is_sent_to_a_recipient_opted_out_of_everything(journeys: Journeys) -> None:
    await journeys.tocsin.set_preference(tenant_id="acme", recipient=ADA, opted_in=False)
    definition = copy.deepcopy(MENTION)
    definition["key"] = "mention_required_email"
    definition["steps"][1]["required"] = True  # the email, as a security notice would be

    detail = await run_to_end(journeys, definition)

    in_app, email = detail.deliveries
    # The in-app step is not required: the opt-out holds for it, and the run goes on to the email.
    assert (in_app.status, in_app.suppression_reason) == ("suppressed", "recipient_opted_out")
    assert (email.status, email.suppression_reason) == ("succeeded", None)
    assert [m.step_key for m in journeys.channels["email"].messages] == ["email"]
    assert journeys.channels["in_app"].messages == []
