"""The Tocsin API beyond whole journeys: tenant scoping, the inbox, receipts, paging, bad arguments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from journeys import ESCALATION, deliveries, snapshot, start
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig, RPCError

from tocsin import Tocsin
from tocsin.core.errors import DeliveryNotFound, InvalidRequest, RunNotFound
from tocsin.core.models import Run
from tocsin.db import Database
from tocsin.engine import reads
from tocsin.engine.runs import mark_workflow_started
from tocsin.temporal.starter import wake_journey
from tocsin.testing import Journeys, start_time_skipping_server


async def waiting_mention(journeys: Journeys, key: str = "k1", recipient: str = "user:42") -> Run:
    await journeys.register(ESCALATION)
    run = await journeys.tocsin.start_run(
        workflow_key="mention_escalation", tenant_id="acme", recipient=recipient,
        data={"actor": "Grace", "excerpt": "x"}, idempotency_key=key,
    )  # fmt: skip
    await journeys.until(run, lambda d: d.run.state == "waiting", what="the run to wait")
    return run


async def test_another_tenant_sees_nothing_and_writes_nothing(journeys: Journeys) -> None:
    run = await waiting_mention(journeys)
    delivery_id = (await journeys.tocsin.get_run(run.id, tenant_id="acme")).deliveries[0].id
    t = journeys.tocsin
    before = await snapshot(journeys.db)

    with pytest.raises(RunNotFound):
        await t.get_run(run.id, tenant_id="globex")
    with pytest.raises(RunNotFound):
        await t.cancel_run(run.id, tenant_id="globex", reason="nope")
    with pytest.raises(RunNotFound):
        await t.send_signal(tenant_id="globex", recipient="user:42", name="notification.read", run_id=run.id)
    with pytest.raises(DeliveryNotFound):
        await t.record_delivery_outcome(delivery_id, tenant_id="globex", outcome="bounced")
    with pytest.raises(DeliveryNotFound):
        await t.mark_read(delivery_id, tenant_id="globex")
    assert (await t.list_runs(tenant_id="globex")).runs == []
    assert await t.inbox(tenant_id="globex", recipient="user:42") == []

    assert await snapshot(journeys.db) == before


async def test_bad_arguments_are_refused_and_write_nothing(journeys: Journeys) -> None:
    run = await waiting_mention(journeys)
    delivery_id = (await journeys.tocsin.get_run(run.id, tenant_id="acme")).deliveries[0].id
    t = journeys.tocsin
    before = await snapshot(journeys.db)

    with pytest.raises(InvalidRequest, match="reason"):
        await t.cancel_run(run.id, tenant_id="acme", reason="  ")
    with pytest.raises(InvalidRequest, match="unknown delivery outcome"):
        await t.record_delivery_outcome(delivery_id, tenant_id="acme", outcome="exploded")
    with pytest.raises(InvalidRequest, match="unknown run state"):
        await t.list_runs(tenant_id="acme", state="sleeping")
    with pytest.raises(InvalidRequest, match="cursor"):
        await t.list_runs(tenant_id="acme", cursor="not-a-cursor")
    with pytest.raises(InvalidRequest, match="blank"):
        await t.send_signal(tenant_id="acme", recipient="user:42", name=" ")

    assert await snapshot(journeys.db) == before


async def test_seen_and_read_receipts_are_stamped_once(journeys: Journeys) -> None:
    run = await waiting_mention(journeys)
    t = journeys.tocsin
    [item] = await t.inbox(tenant_id="acme", recipient="user:42", unread_only=True)

    seen = await t.mark_seen(item.id, tenant_id="acme")
    seen_again = await t.mark_seen(item.id, tenant_id="acme")

    assert seen.seen_at is not None and seen_again.seen_at == seen.seen_at
    # Seen is not read: this journey only listens for notification.read, so it keeps waiting.
    assert (await t.get_run(run.id, tenant_id="acme")).run.state == "waiting"
    read = await t.mark_read(item.id, tenant_id="acme")
    assert read.read_at is not None
    assert await t.inbox(tenant_id="acme", recipient="user:42", unread_only=True) == []
    assert [i.id for i in await t.inbox(tenant_id="acme", recipient="user:42")] == [item.id]
    assert (await journeys.run_to_end(run)).run.terminal_reason == "signal:notification.read"
    assert (await t.mark_read(item.id, tenant_id="acme")).read_at == read.read_at


async def test_a_wake_starts_the_workflow_of_a_run_that_has_none(journeys: Journeys) -> None:
    # A run whose start never reached Temporal (the process died between the commit and the start).
    run = await start(journeys.db, ESCALATION, now=datetime.now(UTC))
    t = journeys.tocsin
    with pytest.raises(RPCError):
        await t.temporal.get_workflow_handle(run.workflow_id).describe()

    await wake_journey(t.temporal, run.id, task_queue=t.task_queue)

    detail = await journeys.until(run, lambda d: d.run.state == "waiting", what="the started workflow to wait")
    # The workflow sent the first step (one attempt, whatever the recording channel answered) and now sleeps.
    assert [d.attempt_count for d in detail.deliveries] == [1]
    description = await t.temporal.get_workflow_handle(run.workflow_id).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING


async def test_list_runs_pages_newest_first(journeys: Journeys) -> None:
    ids = [(await waiting_mention(journeys, key=f"k{i}", recipient=f"user:{i}")).id for i in range(3)]
    t = journeys.tocsin

    first = await t.list_runs(tenant_id="acme", state="waiting", limit=2)
    second = await t.list_runs(tenant_id="acme", state="waiting", limit=2, cursor=first.next_cursor)

    assert [r.id for r in first.runs + second.runs] == list(reversed(ids))
    assert second.next_cursor is None
    assert [r.id for r in (await t.list_runs(tenant_id="acme", recipient="user:1")).runs] == [ids[1]]


async def test_a_cancel_committed_while_temporal_is_unreachable_is_a_success(db: Database) -> None:
    run = await start(db, ESCALATION, now=datetime.now(UTC))
    await mark_workflow_started(db, run.id)  # its workflow was started, on a server that then went away
    env = await start_time_skipping_server()
    # Few retries, so that each call to the vanished server fails at once with UNAVAILABLE.
    client = await Client.connect(
        env.client.service_client.config.target_host,
        data_converter=pydantic_data_converter,
        retry_config=RetryConfig(max_retries=1, initial_interval_millis=10, max_elapsed_time_millis=100),
    )
    await env.shutdown()

    async with Tocsin(db, client) as tocsin:
        cancelled = await tocsin.cancel_run(run.id, tenant_id="acme", reason="unsubscribed")

    assert (cancelled.state, cancelled.status_reason, cancelled.terminal_reason) == (
        "stopped",
        "stopped_by_request",
        "unsubscribed",
    )
    detail = await reads.get_run(db, run.id, tenant_id="acme")
    assert detail.run == cancelled
    assert [t.reason for t in detail.transitions][-1] == "workflow_cancelled"
    assert [(d["status"], d["suppression_reason"]) for d in await deliveries(db, run.id)] == [
        ("cancelled", "run_cancelled")
    ]


async def test_tocsin_is_an_async_context_manager_that_closes_only_what_it_opened(
    journeys: Journeys, fresh_db_url: str
) -> None:
    async with Tocsin(journeys.db, journeys.env.client) as given:
        await given.register_definition(ESCALATION)
    # The database it was given is still open.
    assert [d.key for d in await journeys.tocsin.list_definitions()] == ["mention_escalation"]

    async with await Tocsin.connect(database_url=fresh_db_url, temporal_client=journeys.env.client) as opened:
        assert [d.key for d in await opened.list_definitions()] == ["mention_escalation"]
        pool = opened.db.engine.pool
    assert opened.db.engine.pool is not pool  # the pool it opened was disposed (a disposed engine gets a new one)
