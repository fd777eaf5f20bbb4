"""Digests (SPEC 11.5) as whole journeys on the time-skipping server: five triggers make one run, whose workflow
sleeps until the window closes, sends one email listing all five, and then keeps its step's retry and wait rules;
a batch that fills up sends at once; the comment digest example (tocsin/examples/comment_digest.yaml with
comment_notice.yaml).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import recording
from temporalio.api.enums.v1 import EventType

from tocsin.core.models import Run, StartedRun
from tocsin.examples import example
from tocsin.testing import Journeys

ACTORS = ("Ada", "Bob", "Cy", "Dee", "Eve")
DIGEST: dict[str, Any] = {
    "key": "comment_digest_test",
    "version": 1,
    "batch": {"window": "PT10M", "key": "{{ post_id }}"},
    "steps": [
        {
            "key": "email",
            "channel": "email",
            "content": {
                "subject": "{{ items_count }} new comments on {{ post_title }}",
                "body": "{% for item in items %}- {{ item.actor }}: {{ item.excerpt }}\n{% endfor %}",
            },
            "retry": {"max_attempts": 3, "initial_interval": "PT1M"},
            "progress": [{"kind": "wait_until", "delay": "PT1H", "to_step": "nudge"}],
        },
        {
            "key": "nudge",
            "channel": "in_app",
            "when": "items_count > 1",
            "content": {"title": "{{ items_count }} comments on {{ post_title }} await you"},
        },
    ],
}


async def comment(journeys: Journeys, actor: str) -> StartedRun:
    return await journeys.tocsin.start_run(
        workflow_key=DIGEST["key"],
        tenant_id="acme",
        recipient="user:author",
        data={"post_id": "p1", "post_title": "Batching", "actor": actor, "excerpt": f"{actor} agrees"},
        idempotency_key=f"comment-{uuid.uuid4()}",
    )


async def timer_summaries(journeys: Journeys, run: Run) -> list[str]:
    history = await journeys.handle(run).fetch_history()
    return [
        json.loads(e.user_metadata.summary.data)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED and e.user_metadata.HasField("summary")
    ]


async def test_a_digest_of_five_triggers_sends_one_email_listing_all_five_then_retries_and_waits(
    journeys: Journeys,
) -> None:
    await journeys.register(DIGEST)
    journeys.channels["email"].script("temp", "ok")
    runs = [await comment(journeys, actor) for actor in ACTORS]
    assert {run.id for run in runs} == {runs[0].id}
    assert [run.joined for run in runs] == [False, True, True, True, True]
    assert {run.state for run in runs} == {"collecting"}

    detail = await journeys.run_to_end(runs[0])

    assert detail.run.state == "completed"
    assert [item.data["actor"] for item in detail.items] == list(ACTORS)
    sent = journeys.channels["email"].messages
    body = "".join(f"- {actor}: {actor} agrees\n" for actor in ACTORS)
    # One email (one delivery), sent twice: its retry rule held after the batch.
    assert {m.delivery_id for m in sent} == {detail.deliveries[0].id}
    assert [m.content for m in sent] == [{"subject": "5 new comments on Batching", "body": body}] * 2
    email, nudge = detail.deliveries
    assert (email.status, email.attempt_count, nudge.status) == ("succeeded", 2, "succeeded")
    first, second = (a.created_at for a in detail.attempts if a.delivery_id == email.id)
    assert second - first >= timedelta(minutes=1)
    # The batch closed when its window did, not before; the wait after the email held too.
    closed = next(tr for tr in detail.transitions if tr.reason == "batch_closed")
    assert closed.created_at >= detail.items[0].created_at + timedelta(minutes=10)
    assert closed.context == {"items": 5}
    assert email.terminal_at is not None and nudge.created_at >= email.terminal_at + timedelta(hours=1)
    assert journeys.channels["in_app"].messages[0].content == {"title": "5 comments on Batching await you"}
    summaries = await timer_summaries(journeys, runs[0])
    assert any(s.startswith("batch closes ") and s.endswith(" → email") for s in summaries), summaries
    await recording.record_history(journeys.handle(runs[0]), "digest_of_five")


async def test_a_batch_that_fills_up_sends_at_once(journeys: Journeys) -> None:
    await journeys.register({**DIGEST, "key": "small_digest", "batch": {"window": "P1D", "max_items": 2}})
    data = {"post_id": "p1", "post_title": "Batching", "actor": "Ada", "excerpt": "hi"}
    started = [
        await journeys.tocsin.start_run(
            workflow_key="small_digest", tenant_id="acme", recipient="user:a", data=data, idempotency_key=key
        )
        for key in ("s1", "s2")
    ]
    assert [(run.state, run.joined) for run in started] == [("collecting", False), ("active", True)]
    # The join woke the workflow: the email goes out now, not a day later.
    detail = await journeys.until(started[0], lambda d: d.deliveries[0].status == "succeeded", what="the email sent")
    assert detail.deliveries[0].content["subject"] == "2 new comments on Batching"


async def test_the_comment_digest_example_sends_the_first_comment_in_app_and_one_email_for_all(
    journeys: Journeys,
) -> None:
    await journeys.register(example("comment_digest"))
    await journeys.register(example("comment_notice"))
    post = {"post_id": "post-7", "post_title": "Release notes"}
    notices, digests = [], []
    for n, actor in enumerate(ACTORS):
        data = {**post, "actor": actor, "excerpt": f"{actor} agrees"}
        # Idempotency keys are the tenant's: the two journeys of one comment take two keys.
        for workflow, runs in (("comment_notice", notices), ("comment_digest", digests)):
            runs.append(
                await journeys.tocsin.start_run(
                    workflow_key=workflow,
                    tenant_id="acme",
                    recipient="user:author",
                    data=data,
                    idempotency_key=f"comment-{n}:{workflow}",
                )
            )

    assert [run.state for run in notices] == ["active"] + ["stopped"] * 4  # throttled: the digest tells of them
    detail = await journeys.run_to_end(digests[0])
    await journeys.run_to_end(notices[0])

    (inbox,) = journeys.channels["in_app"].messages
    assert inbox.content == {"title": "Ada commented on Release notes", "body": "Ada agrees"}
    (email,) = journeys.channels["email"].messages
    assert email.content == {
        "subject": "Ada and 4 more commented on Release notes",
        "body": "".join(f"{actor}: {actor} agrees\n" for actor in ACTORS),
    }
    assert (detail.run.state, len(detail.items)) == ("completed", 5)
