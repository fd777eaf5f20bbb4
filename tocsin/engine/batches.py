"""Batching (SPEC 11.5): a batched workflow's trigger joins its scope's open batch or opens one; a batch closes
when its window has passed or at `max_items`, and its first step then runs with every item in its context.

Every function works inside the caller's transaction. `tocsin.engine.runs.create_run` takes a trigger's turn
(the order of its locks is there); `progress_run` and the due sweep close a batch by time
(`tocsin.engine.plans.plan_due_batch`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.definitions import Batch, WorkflowDefinition
from tocsin.core.models import Progress, Run, RunItem
from tocsin.db import queries as q
from tocsin.db import store
from tocsin.engine.planning import write_plan
from tocsin.engine.plans import plan_batch_close


@dataclass(frozen=True)
class Trigger:
    """One `create_run` call, its data checked and its keys rendered, before anything is written."""

    tenant_id: str
    recipient: str
    idempotency_key: str
    data: dict[str, Any]
    definition_id: uuid.UUID
    definition: WorkflowDefinition
    throttle_key: str | None
    batch_key: str | None
    now: datetime

    @property
    def batch(self) -> Batch:
        if self.definition.batch is None:
            raise ValueError(f"{self.definition.key!r} is not a batched workflow")
        return self.definition.batch

    def run_values(self) -> dict[str, Any]:
        """The parameters every statement that inserts a run for this trigger takes."""
        return {
            "id": uuid.uuid4(),
            "tenant_id": self.tenant_id,
            "definition_id": self.definition_id,
            "workflow_key": self.definition.key,
            "workflow_version": self.definition.version,
            "recipient": self.recipient,
            "data": self.data,
            "idempotency_key": self.idempotency_key,
            "throttle_key": self.throttle_key,
            "batch_key": self.batch_key,
            "current_step": self.definition.first_step.key,
            "now": self.now,
        }


async def lock_trigger_key(conn: AsyncConnection, tenant_id: str, idempotency_key: str) -> None:
    """Wait for any other transaction of a trigger with this key, until the end of this one."""
    await store.execute(conn, q.LOCK_TRIGGER_KEY, trigger=json.dumps(["trigger", tenant_id, idempotency_key]))


async def join_open_batch(conn: AsyncConnection, trigger: Trigger) -> Run | None:
    """The scope's open batch, locked until the transaction ends; None when there is none (or it just closed)."""
    statement = q.JOIN_OPEN_BATCH_UNKEYED if trigger.batch_key is None else q.JOIN_OPEN_BATCH_KEYED
    return await store.fetch_first(
        conn,
        Run,
        statement,
        scope_tenant_id=trigger.tenant_id,
        scope_workflow_key=trigger.definition.key,
        scope_recipient=trigger.recipient,
        scope_batch_key=trigger.batch_key,
        now=trigger.now,
    )


async def open_batch(conn: AsyncConnection, trigger: Trigger) -> Run | None:
    """A new `collecting` run for the trigger's scope, with its `workflow_started` transition; None when another
    trigger opened the scope's batch first, or a run with this key appeared (the caller looks which)."""
    batch = trigger.batch
    due_at = trigger.now + timedelta(seconds=batch.window_seconds)
    context = {
        "rule_kind": "batch",
        "window_seconds": batch.window_seconds,
        "due_at": store.iso(due_at),
        "max_items": batch.max_items,
    }
    run = await store.fetch_first(
        conn, Run, q.OPEN_BATCH, **trigger.run_values(), status_context=context, due_at=due_at
    )
    if run is not None:
        # The trail keeps when the batch was due: the run's status_context says so only while it collects.
        await store.append_transition(
            conn,
            run,
            now=trigger.now,
            reason="workflow_started",
            from_state=None,
            to_state="collecting",
            context={"source": "start_run"} | context,
        )
    return run


async def add_item(conn: AsyncConnection, run: Run, trigger: Trigger) -> RunItem:
    """Append the trigger as the next item of the locked `run`."""
    return await store.fetch_one(
        conn,
        RunItem,
        q.INSERT_ITEM,
        id=uuid.uuid4(),
        run_id=run.id,
        tenant_id=trigger.tenant_id,
        idempotency_key=trigger.idempotency_key,
        data=trigger.data,
        now=trigger.now,
    )


async def admit(conn: AsyncConnection, batch: Run, trigger: Trigger) -> Run:
    """The trigger joins the locked, collecting `batch` (the one it just opened, or another's); at `max_items`
    the batch closes in the same transaction. Returns the batch as it is then."""
    item = await add_item(conn, batch, trigger)
    await store.append_transition(
        conn,
        batch,
        now=trigger.now,
        reason="batch_item_added",
        from_state="collecting",
        to_state="collecting",
        context={"item_id": str(item.id), "position": item.position},
    )
    if item.position < trigger.batch.max_items:
        return batch
    return (await close_batch(conn, batch, trigger.definition, now=trigger.now)).run


async def items_of(conn: AsyncConnection, run: Run, definition: WorkflowDefinition) -> list[RunItem] | None:
    """A batched run's items in position order (what its templates see); None for a run of an unbatched workflow."""
    if definition.batch is None:
        return None
    return await store.fetch_all(conn, RunItem, q.RUN_ITEMS, run_id=run.id)


async def close_batch(conn: AsyncConnection, run: Run, definition: WorkflowDefinition, *, now: datetime) -> Progress:
    """Close the locked, collecting `run` (`tocsin.engine.plans.plan_batch_close`, as the due sweep does)."""
    items = await store.fetch_all(conn, RunItem, q.RUN_ITEMS, run_id=run.id)
    return await write_plan(conn, plan_batch_close(run, definition, items), now=now)
