"""Batching (SPEC 11.5) on a real Postgres: opening, joining, closing by time and at max_items, the next batch
after a close, what the batch's steps see, throttling and trigger data with batches; each on the exact rows."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from journeys import (
    ESCALATION,
    RECIPIENT,
    TENANT,
    assert_noop,
    assert_seq_contiguous,
    deliveries,
    delivery_at,
    drive,
    escalation_waiting,
    iso,
    journey,
    later,
    lock_waiters,
    reasons,
    rows,
    run_row,
    snapshot,
    step,
    transitions,
    wait,
)
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from tocsin.core.errors import InvalidRequest
from tocsin.core.models import StartedRun
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine import cancel_run, create_run, progress_due_runs, progress_run
from tocsin.engine.reads import get_run
from tocsin.engine.reconcile import progress_overdue_runs, unstarted_runs
from tocsin.engine.registry import register_definition

I = t.run_items  # noqa: E741
R = t.workflow_runs

DIGEST_EMAIL = {
    "subject": "{{ items_count }} new comments on {{ post }}",
    "body": "{% for item in items %}{{ item.actor }}: {{ item.excerpt }}\n{% endfor %}",
}
DIGEST = journey(
    "digest",
    step("email", "email", wait("nudge", 3600), content=DIGEST_EMAIL),
    {
        **step("nudge", "in_app", content={"body": "{{ items_count }} comments, first by {{ items[0].actor }}"}),
        "when": "items_count > 1",
    },
    batch={"window": "PT10M", "key": "{{ post }}", "max_items": 3},
)
WINDOW = {"rule_kind": "batch", "window_seconds": 600, "max_items": 3}


def comment(actor: str, post: str = "p1") -> dict[str, Any]:
    return {"actor": actor, "excerpt": f"{actor} says hi", "post": post}


async def trigger(
    db: Database,
    now: datetime,
    key: str,
    data: dict[str, Any] | None = None,
    *,
    workflow: str = "digest",
    recipient: str = RECIPIENT,
) -> tuple[StartedRun, bool]:
    return await create_run(
        db,
        tenant_id=TENANT,
        workflow_key=workflow,
        recipient=recipient,
        idempotency_key=key,
        data=comment(key) if data is None else data,
        now=now,
    )


async def items(db: Database, run_id: uuid.UUID) -> list[dict[str, Any]]:
    return await rows(db, I, I.c.run_id == run_id, order_by="position")


@pytest.fixture
async def digest(db: Database, t0: datetime) -> Database:
    await register_definition(db, DIGEST, now=t0)
    return db


# --- opening and joining ---------------------------------------------------------------------------------------


async def test_the_first_trigger_opens_a_batch_and_nothing_is_sent_yet(digest: Database, t0: datetime) -> None:
    db = digest
    run, created = await trigger(db, t0, "c1")
    due = later(t0, minutes=10)
    assert (created, run.joined, run.state, run.due_at, run.batch_key) == (True, False, "collecting", due, "p1")
    row = await run_row(db, run.id)
    assert {k: row[k] for k in ("state", "current_step", "step_activation", "status_reason", "due_at")} == {
        "state": "collecting",
        "current_step": "email",
        "step_activation": 1,
        "status_reason": "collecting_batch",
        "due_at": due,
    }
    assert row["status_context"] == WINDOW | {"due_at": iso(due)}
    assert (row["data"], row["idempotency_key"], row["batch_key"], row["throttle_key"]) == (
        comment("c1"),
        "c1",
        "p1",
        None,
    )
    assert (row["pending_signals"], row["workflow_started"], row["started_at"], row["step_activated_at"]) == (
        [],
        False,
        t0,
        t0,
    )
    (item,) = await items(db, run.id)
    assert {k: v for k, v in item.items() if k != "id"} == {
        "run_id": run.id,
        "tenant_id": TENANT,
        "idempotency_key": "c1",
        "data": comment("c1"),
        "position": 1,
        "created_at": t0,
    }
    trail = await transitions(db, run.id)
    assert [(tr["seq"], tr["reason"], tr["from_state"], tr["to_state"], tr["step_key"], tr["delivery_id"])
            for tr in trail] == [
        (1, "workflow_started", None, "collecting", None, None),
        (2, "batch_item_added", "collecting", "collecting", None, None),
    ]  # fmt: skip
    assert trail[0]["context"] == {"source": "start_run"} | WINDOW | {"due_at": iso(due)}
    assert trail[1]["context"] == {"item_id": str(item["id"]), "position": 1}
    assert await deliveries(db, run.id) == []


async def test_a_trigger_of_the_scope_joins_the_open_batch(digest: Database, t0: datetime) -> None:
    db = digest
    first, _ = await trigger(db, t0, "c1")
    run, created = await trigger(db, later(t0, minutes=1), "c2")
    assert (run.id, created, run.joined, run.state) == (first.id, True, True, "collecting")
    row = await run_row(db, run.id)
    # The window runs from the first trigger: a join does not move it; the row is touched, as by any transition.
    assert (row["due_at"], row["status_context"], row["data"]) == (
        later(t0, minutes=10),
        first.status_context,
        comment("c1"),
    )
    assert (row["updated_at"], row["last_transition_at"]) == (later(t0, minutes=1), later(t0, minutes=1))
    found = await items(db, run.id)
    assert [(i["position"], i["idempotency_key"], i["data"], i["created_at"]) for i in found] == [
        (1, "c1", comment("c1"), t0),
        (2, "c2", comment("c2"), later(t0, minutes=1)),
    ]
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert [(tr["reason"], tr["from_state"], tr["to_state"], tr["created_at"]) for tr in trail[2:]] == [
        ("batch_item_added", "collecting", "collecting", later(t0, minutes=1))
    ]
    assert trail[2]["context"] == {"item_id": str(found[1]["id"]), "position": 2}


async def test_a_retried_trigger_returns_its_batch_and_writes_nothing(digest: Database, t0: datetime) -> None:
    db = digest
    await trigger(db, t0, "c1")
    await trigger(db, t0, "c2")
    before = await snapshot(db)
    # Retried later, with other data even: the key decides. Joined or not, as the first time.
    opener, created = await trigger(db, later(t0, minutes=2), "c1", comment("someone else"))
    assert (created, opener.joined) == (False, False)
    joiner, created = await trigger(db, later(t0, minutes=2), "c2")
    assert (joiner.id, created, joiner.joined) == (opener.id, False, True)
    assert await snapshot(db) == before


async def test_each_scope_has_a_batch_of_its_own(digest: Database, t0: datetime) -> None:
    db = digest
    p1, _ = await trigger(db, t0, "c1")
    p2, _ = await trigger(db, t0, "c2", comment("Bob", post="p2"))
    other, _ = await trigger(db, t0, "c3", recipient="user:7")
    assert len({p1.id, p2.id, other.id}) == 3
    assert [(r.batch_key, r.recipient, r.joined) for r in (p1, p2, other)] == [
        ("p1", RECIPIENT, False),
        ("p2", RECIPIENT, False),
        ("p1", "user:7", False),
    ]


async def test_a_batch_without_a_key_is_one_scope_per_recipient(db: Database, t0: datetime) -> None:
    await register_definition(db, journey("unkeyed", step("email", "email"), batch={"window_seconds": 60}), now=t0)
    first, _ = await trigger(db, t0, "u1", {"actor": "Ada"}, workflow="unkeyed")
    second, _ = await trigger(db, t0, "u2", {"actor": "Bob"}, workflow="unkeyed")
    assert (second.id, second.joined, first.batch_key) == (first.id, True, None)
    assert first.status_context["max_items"] == 100  # the default


# --- closing ---------------------------------------------------------------------------------------------------


async def test_a_batch_closes_at_its_due_time_and_plans_its_first_step_with_every_item(
    digest: Database, t0: datetime
) -> None:
    db = digest
    run, _ = await trigger(db, t0, "c1")
    await trigger(db, later(t0, minutes=3), "c2")
    due = later(t0, minutes=10)
    await assert_noop(db, run.id, now=later(t0, minutes=9, seconds=59), reason="batch_not_due")

    progress = await progress_run(db, run.id, now=due)

    assert progress.kind == "advanced"
    row = await run_row(db, run.id)
    assert {k: row[k] for k in ("state", "current_step", "step_activation", "step_activated_at", "due_at")} == {
        "state": "active",
        "current_step": "email",
        "step_activation": 1,
        "step_activated_at": due,  # the step begins when the batch closes
        "due_at": None,
    }
    assert (row["status_reason"], row["status_context"]) == ("batch_closed", {"rule_kind": "batch", "items": 2})
    (email,) = await deliveries(db, run.id)
    assert (email["activation"], email["step_key"], email["status"], email["created_at"]) == (
        1,
        "email",
        "pending",
        due,
    )
    assert email["content"] == {"subject": "2 new comments on p1", "body": "c1: c1 says hi\nc2: c2 says hi\n"}
    assert [d.id for d in progress.deliveries] == [email["id"]]
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert [(tr["reason"], tr["from_state"], tr["to_state"], tr["step_key"], tr["delivery_id"], tr["context"])
            for tr in trail[3:]] == [
        ("batch_closed", "collecting", "active", None, None, {"items": 2}),
        ("step_activated", "active", "active", "email", email["id"], {"step_key": "email", "source": "batch"}),
    ]  # fmt: skip
    # Closed once: the decision is not taken again.
    await assert_noop(db, run.id, now=later(due, minutes=1), reason="prior_delivery_not_converged")


async def test_the_trigger_that_reaches_max_items_closes_the_batch_in_its_own_transaction(
    digest: Database, t0: datetime
) -> None:
    db = digest
    for n in (1, 2):
        await trigger(db, later(t0, minutes=n), f"c{n}")
    run, created = await trigger(db, later(t0, minutes=3), "c3")
    assert (created, run.joined, run.state, run.status_reason, run.due_at) == (
        True,
        True,
        "active",
        "batch_closed",
        None,
    )
    trail = await transitions(db, run.id)
    assert reasons(trail) == [
        "workflow_started",
        "batch_item_added",
        "batch_item_added",
        "batch_item_added",
        "batch_closed",
        "step_activated",
    ]
    assert {tr["created_at"] for tr in trail[3:]} == {later(t0, minutes=3)}
    assert trail[4]["context"] == {"items": 3}
    (email,) = await deliveries(db, run.id)
    assert email["content"]["subject"] == "3 new comments on p1"
    # The window that was set no longer applies: at the old due time there is nothing to close.
    await assert_noop(db, run.id, now=later(t0, minutes=10), reason="prior_delivery_not_converged")


async def test_a_trigger_after_the_close_opens_the_next_batch(digest: Database, t0: datetime) -> None:
    db = digest
    first, _ = await trigger(db, t0, "c1")
    await progress_run(db, first.id, now=later(t0, minutes=10))
    closed = await snapshot(db)

    run, created = await trigger(db, later(t0, minutes=11), "c2")

    assert (created, run.joined, run.state, run.due_at) == (True, False, "collecting", later(t0, minutes=21))
    assert run.id != first.id
    assert [i["idempotency_key"] for i in await items(db, run.id)] == ["c2"]
    assert reasons(await transitions(db, run.id)) == ["workflow_started", "batch_item_added"]
    after = await snapshot(db)
    # The closed batch is as it was: not one row of it moved.
    for table in ("workflow_runs", "run_items", "workflow_transitions", "deliveries"):
        old = [r for r in closed[table] if first.id in (r.get("run_id"), r.get("id"))]
        assert old == [r for r in after[table] if first.id in (r.get("run_id"), r.get("id"))]


async def test_a_trigger_arriving_after_the_due_time_but_before_the_close_joins(digest: Database, t0: datetime) -> None:
    # Open until closed (SPEC 11.5): the window's end is when the close is due, not a second close.
    db = digest
    first, _ = await trigger(db, t0, "c1")
    run, _ = await trigger(db, later(t0, minutes=10, seconds=1), "c2")
    assert (run.id, run.joined) == (first.id, True)
    await progress_run(db, run.id, now=later(t0, minutes=10, seconds=2))
    assert (await run_row(db, run.id))["status_context"]["items"] == 2


async def test_progress_due_runs_closes_due_batches_and_advances_due_waits(digest: Database, t0: datetime) -> None:
    db = digest
    due_batch, _ = await trigger(db, t0, "c1")
    later_batch, _ = await trigger(db, later(t0, minutes=5), "c2", comment("Bob", post="p2"))
    waiting, _ = await escalation_waiting(db, now=later(t0, minutes=-120))

    results = await progress_due_runs(db, now=later(t0, minutes=10))

    assert [(p.run.id, p.kind) for p in results] == [(due_batch.id, "advanced"), (waiting.id, "advanced")]
    assert (await run_row(db, later_batch.id))["state"] == "collecting"
    assert await progress_due_runs(db, now=later(t0, minutes=14, seconds=59)) == []
    (last,) = await progress_due_runs(db, now=later(t0, minutes=15))
    assert (last.run.id, last.run.status_context) == (later_batch.id, {"rule_kind": "batch", "items": 1})


async def test_the_reconcile_sweep_starts_a_lost_batch_and_closes_one_whose_timer_was_lost(
    digest: Database, t0: datetime
) -> None:
    db = digest
    run, _ = await trigger(db, t0, "c1")
    grace = timedelta(seconds=120)
    assert [r.id for r in await unstarted_runs(db, now=later(t0, seconds=121), grace=grace)] == [run.id]
    due = later(t0, minutes=10)
    # Its own workflow's timer fires at due: the sweep leaves it alone within the grace.
    assert await progress_overdue_runs(db, now=due + grace - timedelta(seconds=1), grace=grace) == []
    (closed,) = await progress_overdue_runs(db, now=due + grace, grace=grace)
    assert (closed.run.id, closed.kind, closed.run.status_reason) == (run.id, "advanced", "batch_closed")


async def test_later_steps_see_the_items_and_their_count(digest: Database, t0: datetime) -> None:
    db = digest
    runs = []
    for post, authors in (("p1", ["Ada", "Bob"]), ("p2", ["Cy"])):
        for author in authors:
            run, _ = await trigger(db, t0, f"{post}-{author}", comment(author, post=post))
        runs.append(run)
    for run in runs:
        await progress_run(db, run.id, now=later(t0, minutes=10))
        email = await delivery_at(db, run.id, 1)
        await drive(db, email["id"], "succeeded", now=later(t0, minutes=11))
        assert (await progress_run(db, run.id, now=later(t0, minutes=11))).kind == "waiting"
        assert (await progress_run(db, run.id, now=later(t0, minutes=71))).kind == "advanced"
    two, one = [await delivery_at(db, run.id, 2) for run in runs]
    assert (two["status"], two["content"]) == ("pending", {"body": "2 comments, first by Ada"})
    # The nudge's condition, `items_count > 1`, is false for a batch of one.
    assert (one["status"], one["suppression_reason"]) == ("suppressed", "condition_not_met")


async def test_cancelling_an_open_batch_stops_it_and_the_next_trigger_opens_another(
    digest: Database, t0: datetime
) -> None:
    db = digest
    first, _ = await trigger(db, t0, "c1")
    stopped = await cancel_run(db, first.id, tenant_id=TENANT, reason="post deleted", now=later(t0, minutes=1))
    assert (stopped.state, stopped.status_reason, stopped.due_at) == ("stopped", "stopped_by_request", None)
    assert [(tr["reason"], tr["from_state"]) for tr in (await transitions(db, first.id))[2:]] == [
        ("workflow_cancelled", "collecting")
    ]
    assert await progress_due_runs(db, now=later(t0, minutes=10)) == []
    run, _ = await trigger(db, later(t0, minutes=2), "c2")
    assert (run.id != first.id, run.joined, run.state) == (True, False, "collecting")


async def test_get_run_returns_the_items_in_position_order(digest: Database, t0: datetime) -> None:
    db = digest
    run, _ = await trigger(db, t0, "c1")
    await trigger(db, later(t0, seconds=1), "c2")
    detail = await get_run(db, run.id, tenant_id=TENANT)
    assert [(i.position, i.idempotency_key, i.data, i.created_at) for i in detail.items] == [
        (1, "c1", comment("c1"), t0),
        (2, "c2", comment("c2"), later(t0, seconds=1)),
    ]
    plain = await escalation_waiting(db, now=t0)
    assert (await get_run(db, plain[0].id, tenant_id=TENANT)).items == []


# --- locks: a trigger queued behind the close, a close queued behind a trigger ------------------------------------


@pytest.mark.parametrize("first", ["close", "trigger"])
async def test_a_trigger_and_the_close_queued_on_the_batch(digest: Database, t0: datetime, first: str) -> None:
    """Both in flight at once, queued on the batch's row in a known order: a trigger that waited behind the close
    finds the batch closed and opens the next one; a close that waited behind a trigger closes with its item."""
    db = digest
    batch, _ = await trigger(db, t0, "c1")
    due = later(t0, minutes=10)
    make = {"close": lambda: progress_run(db, batch.id, now=due), "trigger": lambda: trigger(db, due, "c2")}
    async with db.transaction() as holder:
        await holder.execute(select(R.c.id).where(R.c.id == batch.id).with_for_update())
        tasks: dict[str, asyncio.Task[Any]] = {}
        for name in (first, "trigger" if first == "close" else "close"):
            tasks[name] = asyncio.create_task(make[name]())
            await lock_waiters(db, len(tasks))
        assert not any(task.done() for task in tasks.values())
    closed = await tasks["close"]
    run, _ = await tasks["trigger"]
    assert closed.kind == "advanced"
    if first == "close":
        assert (run.id != batch.id, run.joined, run.state) == (True, False, "collecting")
        assert closed.run.status_context["items"] == 1
    else:
        assert (run.id, run.joined) == (batch.id, True)
        assert closed.run.status_context["items"] == 2
    assert [i["idempotency_key"] for i in await rows(db, I, order_by="created_at")] == ["c1", "c2"]


# --- throttling and trigger data with batches --------------------------------------------------------------------


async def test_a_throttle_counts_batches_and_applies_only_when_one_would_open(db: Database, t0: datetime) -> None:
    spec = journey(
        "throttled_digest",
        step("email", "email", content={"body": "{{ items_count }}"}),
        batch={"window": "PT10M"},
        throttle={"limit": 1, "period": "PT1H"},
    )
    await register_definition(db, spec, now=t0)
    opened, _ = await trigger(db, t0, "t1", workflow="throttled_digest")
    for n in range(2, 5):  # past the limit in triggers, but they join: one batch
        run, _ = await trigger(db, later(t0, minutes=n), f"t{n}", workflow="throttled_digest")
        assert (run.id, run.joined) == (opened.id, True)
    await progress_run(db, opened.id, now=later(t0, minutes=10))

    throttled, created = await trigger(db, later(t0, minutes=20), "t5", workflow="throttled_digest")

    assert (created, throttled.joined, throttled.state, throttled.status_reason, throttled.terminal_reason) == (
        True,
        False,
        "stopped",
        "throttled",
        "throttle:1/3600s",
    )
    trail = await transitions(db, throttled.id)
    assert [(tr["reason"], tr["from_state"], tr["to_state"]) for tr in trail] == [
        ("workflow_started", None, "active"),
        ("workflow_throttled", "active", "stopped"),
    ]
    assert trail[1]["context"] == {"limit": 1, "period_seconds": 3600, "count": 1}
    # Every trigger is an item, a throttled one too; it never sends.
    assert [i["idempotency_key"] for i in await items(db, throttled.id)] == ["t5"]
    assert await deliveries(db, throttled.id) == []
    before = await snapshot(db)
    again, created = await trigger(db, later(t0, minutes=21), "t5", workflow="throttled_digest")
    assert (again.id, created) == (throttled.id, False)
    assert await snapshot(db) == before
    # An hour after the first batch opened, a batch may open again.
    assert (await trigger(db, later(t0, minutes=61), "t6", workflow="throttled_digest"))[0].state == "collecting"


async def test_every_trigger_s_data_is_checked_and_a_refused_one_writes_nothing(db: Database, t0: datetime) -> None:
    spec = journey(
        "checked_digest",
        step("email", "email", content={"body": "{% for i in items %}{{ i.actor }}{% endfor %} on {{ title }}"}),
        batch={"window": "PT10M", "key": "{{ post }}"},
        data_schema={"type": "object", "properties": {"actor": {"type": "string"}}, "required": ["actor"]},
    )
    await register_definition(db, spec, now=t0)
    good = {"actor": "Ada", "post": "p1", "title": "Hello"}
    await trigger(db, t0, "k1", good, workflow="checked_digest")
    before = await snapshot(db)
    for data, message in (
        ({"actor": 7, "post": "p1", "title": "Hello"}, r"^data\.actor: 7 is not of type 'string'$"),
        ({"actor": "Bob", "title": "Hello"}, r"^data is missing 'post' \(batch\.key\)$"),
        ({"actor": "Bob", "post": "p1"}, r"^data is missing 'title' \(steps\[0\]\.content\.body\)$"),
    ):
        with pytest.raises(InvalidRequest, match=message):
            await trigger(db, t0, "k2", data, workflow="checked_digest")
    assert await snapshot(db) == before


# --- what the database itself holds to ---------------------------------------------------------------------------


async def test_the_database_allows_one_open_batch_per_scope_and_due_at_only_with_it(
    digest: Database, t0: datetime
) -> None:
    db = digest
    run, _ = await trigger(db, t0, "c1")
    row = await run_row(db, run.id)
    twin = {**row, "id": uuid.uuid4(), "idempotency_key": "other"}
    with pytest.raises(IntegrityError, match="workflow_runs_open_batch"):
        async with db.transaction() as conn:
            await conn.execute(insert(R).values(twin))
    # Another key is another scope; a closed batch no longer counts.
    async with db.transaction() as conn:
        await conn.execute(insert(R).values({**twin, "batch_key": "p2"}))
    with pytest.raises(IntegrityError, match="workflow_runs_due_at_only_waiting"):
        async with db.transaction() as conn:
            await conn.execute(update(R).where(R.c.id == run.id).values(due_at=None))
    with pytest.raises(IntegrityError, match="run_items_tenant_idempotency_key"):
        async with db.transaction() as conn:
            (item,) = await items(db, run.id)
            await conn.execute(insert(I).values({**item, "id": uuid.uuid4(), "position": 2}))
    with pytest.raises(IntegrityError, match="run_items_run_position_key"):
        async with db.transaction() as conn:
            await conn.execute(insert(I).values({**item, "id": uuid.uuid4(), "idempotency_key": "x"}))
    await progress_run(db, run.id, now=later(t0, minutes=10))
    async with db.transaction() as conn:
        await conn.execute(insert(R).values({**twin, "id": uuid.uuid4(), "idempotency_key": "third"}))
    # Idempotency keys are the tenant's: the key of an item names its run for any workflow.
    await register_definition(db, ESCALATION, now=t0)
    found, created = await trigger(db, t0, "c1", workflow="mention_escalation")
    assert (found.id, created) == (run.id, False)
