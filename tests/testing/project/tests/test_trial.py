"""A 30-day journey: welcome in the app, remind by email when the trial ends unless the user subscribed."""

import time
from datetime import timedelta

from tocsin.testing import Journeys

TRIAL = {
    "key": "trial",
    "version": 1,
    "steps": [
        {
            "key": "welcome",
            "channel": "in_app",
            "content": {"title": "Welcome, {{ name }}"},
            "progress": [
                {"kind": "wait_until", "delay": "P30D", "to_step": "ending", "cancel_signals": ["subscribed"]}
            ],
        },
        {"key": "ending", "channel": "email", "content": {"subject": "Your trial ends today", "body": "Hi {{ name }}"}},
    ],
}


async def test_the_trial_reminder_goes_out_after_30_days(journeys: Journeys) -> None:
    await journeys.register(TRIAL)
    began = time.monotonic()
    run = await journeys.tocsin.start_run(
        workflow_key="trial", tenant_id="acme", recipient="user:7", data={"name": "Ada"}, idempotency_key="trial-7"
    )
    detail = await journeys.run_to_end(run)
    print(f"30-day journey: {time.monotonic() - began:.3f}s of wall time from start_run to its result")

    assert detail.run.state == "completed"
    welcome, ending = detail.deliveries
    assert welcome.terminal_at is not None
    assert ending.created_at - welcome.terminal_at >= timedelta(days=30)
    assert [m.content["subject"] for m in journeys.channels["email"].messages] == ["Your trial ends today"]
