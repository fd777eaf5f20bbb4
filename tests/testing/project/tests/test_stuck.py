"""A journey that cannot finish: its email is accepted, and the provider's report never comes."""

from datetime import timedelta

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


async def test_a_report_that_never_comes(journeys: Journeys) -> None:
    await journeys.register(REPORTED)
    journeys.channels["email"].script("awaiting_feedback")
    run = await journeys.tocsin.start_run(
        workflow_key="reported", tenant_id="acme", recipient="user:8", idempotency_key="reported-8"
    )
    await journeys.run_to_end(run, within=timedelta(seconds=3))
