"""A journey that does not finish in the time the test allows: its email provider is slower than that."""

import asyncio
from datetime import timedelta

from tocsin.channels import OutboundMessage, SendReceipt
from tocsin.testing import Journeys

REPORTED = {
    "key": "reported",
    "version": 1,
    "steps": [
        {
            "key": "email",
            "channel": "email",
            "content": {"subject": "Hello", "body": "Hi"},
            "progress": [{"kind": "on_outcome", "outcome": "bounced", "to_step": "hook"}],
        },
        {"key": "hook", "channel": "webhook", "content": {"event": "bounced"}},
    ],
}


class SlowProvider:
    """Answers after 5 s of real time: time does not skip while a send is in flight."""

    async def send(self, message: OutboundMessage) -> SendReceipt:
        await asyncio.sleep(5)
        return SendReceipt(provider_message_id="slow-1")


async def test_a_provider_slower_than_the_test(journeys: Journeys) -> None:
    await journeys.register(REPORTED)
    journeys.channels["email"] = SlowProvider()
    run = await journeys.tocsin.start_run(
        workflow_key="reported", tenant_id="acme", recipient="user:8", idempotency_key="reported-8"
    )
    await journeys.run_to_end(run, within=timedelta(seconds=3))
