"""The Tocsin API beyond whole journeys: tenant scoping, the inbox, receipts, paging, bad arguments."""

from __future__ import annotations

import uuid

import pytest
from journey_harness import Harness
from journeys import ESCALATION, snapshot

from tocsin.core.errors import DeliveryNotFound, InvalidRequest, RunNotFound


async def waiting_mention(harness: Harness, key: str = "k1", recipient: str = "user:42") -> uuid.UUID:
    await harness.tocsin.register_definition(ESCALATION)
    run = await harness.tocsin.start_run(
        workflow_key="mention_escalation", tenant_id="acme", recipient=recipient,
        data={"actor": "Grace", "excerpt": "x"}, idempotency_key=key,
    )  # fmt: skip
    await harness.until(run.id, lambda d: d.run.state == "waiting", "the run to wait")
    return run.id


async def test_another_tenant_sees_nothing_and_writes_nothing(harness: Harness) -> None:
    run_id = await waiting_mention(harness)
    delivery_id = (await harness.tocsin.get_run(run_id, tenant_id="acme")).deliveries[0].id
    t = harness.tocsin
    before = await snapshot(harness.db)

    with pytest.raises(RunNotFound):
        await t.get_run(run_id, tenant_id="globex")
    with pytest.raises(RunNotFound):
        await t.cancel_run(run_id, tenant_id="globex", reason="nope")
    with pytest.raises(RunNotFound):
        await t.send_signal(tenant_id="globex", recipient="user:42", name="notification.read", run_id=run_id)
    with pytest.raises(DeliveryNotFound):
        await t.record_delivery_outcome(delivery_id, tenant_id="globex", outcome="bounced")
    with pytest.raises(DeliveryNotFound):
        await t.mark_read(delivery_id, tenant_id="globex")
    assert (await t.list_runs(tenant_id="globex")).runs == []
    assert await t.inbox(tenant_id="globex", recipient="user:42") == []

    assert await snapshot(harness.db) == before


async def test_bad_arguments_are_refused_and_write_nothing(harness: Harness) -> None:
    run_id = await waiting_mention(harness)
    delivery_id = (await harness.tocsin.get_run(run_id, tenant_id="acme")).deliveries[0].id
    t = harness.tocsin
    before = await snapshot(harness.db)

    with pytest.raises(InvalidRequest, match="reason"):
        await t.cancel_run(run_id, tenant_id="acme", reason="  ")
    with pytest.raises(InvalidRequest, match="unknown delivery outcome"):
        await t.record_delivery_outcome(delivery_id, tenant_id="acme", outcome="exploded")
    with pytest.raises(InvalidRequest, match="unknown run state"):
        await t.list_runs(tenant_id="acme", state="sleeping")
    with pytest.raises(InvalidRequest, match="cursor"):
        await t.list_runs(tenant_id="acme", cursor="not-a-cursor")
    with pytest.raises(InvalidRequest, match="blank"):
        await t.send_signal(tenant_id="acme", recipient="user:42", name=" ")

    assert await snapshot(harness.db) == before


async def test_seen_and_read_receipts_are_stamped_once(harness: Harness) -> None:
    run_id = await waiting_mention(harness)
    t = harness.tocsin
    [item] = await t.inbox(tenant_id="acme", recipient="user:42", unread_only=True)

    seen = await t.mark_seen(item.id, tenant_id="acme")
    seen_again = await t.mark_seen(item.id, tenant_id="acme")

    assert seen.seen_at is not None and seen_again.seen_at == seen.seen_at
    # Seen is not read: this journey only listens for notification.read, so it keeps waiting.
    assert (await t.get_run(run_id, tenant_id="acme")).run.state == "waiting"
    read = await t.mark_read(item.id, tenant_id="acme")
    assert read.read_at is not None
    assert await t.inbox(tenant_id="acme", recipient="user:42", unread_only=True) == []
    assert [i.id for i in await t.inbox(tenant_id="acme", recipient="user:42")] == [item.id]
    assert (await harness.finish(run_id)).run.terminal_reason == "signal:notification.read"
    assert (await t.mark_read(item.id, tenant_id="acme")).read_at == read.read_at


async def test_list_runs_pages_newest_first(harness: Harness) -> None:
    ids = [await waiting_mention(harness, key=f"k{i}", recipient=f"user:{i}") for i in range(3)]
    t = harness.tocsin

    first = await t.list_runs(tenant_id="acme", state="waiting", limit=2)
    second = await t.list_runs(tenant_id="acme", state="waiting", limit=2, cursor=first.next_cursor)

    assert [r.id for r in first.runs + second.runs] == list(reversed(ids))
    assert second.next_cursor is None
    assert [r.id for r in (await t.list_runs(tenant_id="acme", recipient="user:1")).runs] == [ids[1]]
