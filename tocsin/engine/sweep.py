"""The due sweep (SPEC 4.9, 11.5): batches whose window has passed, then waiting runs whose gate is due,
progressed a batch of runs at a time.

Each batch of runs is one transaction: lock up to `batch_size` due runs (`FOR UPDATE SKIP LOCKED`, oldest due
first), decide each one in Python with the same pure decision as `progress_run` (`tocsin.engine.plans.plan_due`),
then write all the plans with one set statement per kind of row (run updates, deliveries, their suppressions and
rejections, transitions) and commit. The rows are those `progress_run` would write run by run; a single decision
(`progress_run`, the workflow's path) stays one transaction of its own.
"""

from __future__ import annotations

import contextlib
import gc
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.cursors import BEFORE_ALL
from tocsin.core.definitions import WorkflowDefinition
from tocsin.core.models import Delivery, Progress, Run, RunItem
from tocsin.core.vocabulary import TERMINAL_DELIVERY_STATUSES
from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.engine.deliveries import check_move
from tocsin.engine.plans import Activation, Close, DeliveryPlan, Finish, Plan, plan_due
from tocsin.engine.preferences import recipient_timezones

__all__ = ["SWEEP_BATCH", "progress_due_runs", "write_plans"]

SWEEP_BATCH = 500
"""Runs per transaction: large enough that the per-statement and per-commit costs vanish, small enough that a
batch holds its locks for tens of milliseconds."""


async def progress_due_runs(
    db: Database,
    *,
    now: datetime,
    limit: int = 1000,
    overdue_by: timedelta = timedelta(0),
    batch_size: int = SWEEP_BATCH,
) -> list[Progress]:
    """Close at most `limit` batches whose window has passed and progress waiting runs whose gate is due (in all),
    oldest due first, `batch_size` runs per transaction.

    FOR UPDATE SKIP LOCKED: concurrent sweepers (and a workflow progressing the same run) never collide, and a
    run that another transaction holds is simply left to it. `overdue_by` leaves alone the runs whose own
    workflow timer is about to fire (the reconcile sweep only rescues lost timers).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size!r}")
    results: list[Progress] = []
    # Each kind on its own partial index, batches first.
    for statement in (q.DUE_BATCHES_FOR_UPDATE, q.DUE_RUNS_FOR_UPDATE):
        after = BEFORE_ALL
        while len(results) < limit:
            with _collector_paused():
                async with db.transaction() as conn:
                    runs = await store.fetch_all(
                        conn,
                        Run,
                        statement,
                        due_by=now - overdue_by,
                        after_due_at=after[0],
                        after_id=after[1],
                        batch=min(batch_size, limit - len(results)),
                    )
                    if not runs:
                        break
                    last = runs[-1]
                    if last.due_at is None:  # the schema's CHECK: a waiting or collecting run has a due_at
                        raise RuntimeError(f"run {last.id} is {last.state} with no due_at")
                    after = (last.due_at, last.id)
                    definitions = {run.id: await db.definition(run.definition_id, conn) for run in runs}
                    items = await _items(conn, definitions)
                    plans = [plan_due(run, definitions[run.id], items.get(run.id), now=now) for run in runs]
                    results += await write_plans(conn, plans, now=now)
    return results


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection during one batch. A batch allocates thousands of containers (rows, plans,
    parameters) that live until it ends and are then freed by reference counting, none in a cycle: the collector
    would only scan them, and the process's whole heap at each full collection, over and over (about 40% of a
    sweep's CPU, bench/RESULTS.md). It runs again at the first allocation after the batch. A process that has
    disabled it keeps it so."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _items(
    conn: AsyncConnection, definitions: dict[uuid.UUID, WorkflowDefinition]
) -> dict[uuid.UUID, list[RunItem]]:
    """The items of the batched runs (by run id), in position order, in one read; none for unbatched workflows."""
    batched = [run_id for run_id, definition in definitions.items() if definition.batch is not None]
    if not batched:
        return {}
    found: dict[uuid.UUID, list[RunItem]] = {run_id: [] for run_id in batched}
    for item in await store.fetch_all(conn, RunItem, q.ITEMS_OF_RUNS, **_each(run_id=batched)):
        found[item.run_id].append(item)
    return found


def _json(value: dict[str, Any]) -> str:
    # The set statements take jsonb columns as text, cast in SQL.
    return json.dumps(value)


def _each(**columns: list[Any]) -> dict[str, list[Any]]:
    """The set statements' parameters: one array per column, `each_<column>` (tocsin.db.queries)."""
    return {f"each_{name}": values for name, values in columns.items()}


async def write_plans(conn: AsyncConnection, plans: Sequence[Plan], *, now: datetime) -> list[Progress]:
    """Write the plans of many locked runs (one plan per run), one set statement per kind of row, in the order
    a single decision writes them: the runs, the deliveries, then the transitions (which may name them)."""
    written = await _write_runs(conn, plans, now=now)
    deliveries = await _write_deliveries(conn, [plan.delivery for plan in plans if plan.delivery is not None], now=now)
    transitions = [
        (plan.run.id, ordinal, transition)
        for plan in plans
        for ordinal, transition in enumerate(plan.transitions, start=1)
    ]
    if transitions:
        await store.execute(
            conn,
            q.APPEND_TRANSITIONS,
            **_each(
                run_id=[run_id for run_id, _, _ in transitions],
                ordinal=[ordinal for _, ordinal, _ in transitions],
                step_key=[t.step_key for _, _, t in transitions],
                delivery_id=[
                    deliveries[run_id].id if t.of_planned_delivery else t.delivery_id for run_id, _, t in transitions
                ],
                from_state=[t.from_state for _, _, t in transitions],
                to_state=[t.to_state for _, _, t in transitions],
                reason=[t.reason for _, _, t in transitions],
                context=[_json(t.context) for _, _, t in transitions],
            ),
            now=now,
        )
    results = []
    for plan in plans:
        run = written.get(plan.run.id)
        if plan.update is not None and run is None:  # the run is locked: its UPDATE always finds it
            raise RuntimeError(f"run {plan.run.id} was not updated")
        results.append(plan.progress(run, deliveries.get(plan.run.id)))
    return results


async def _write_runs(conn: AsyncConnection, plans: Sequence[Plan], *, now: datetime) -> dict[uuid.UUID, Run]:
    """The run UPDATEs; each returns what it set, merged here with the context it was sent into the row the sweep
    locked."""
    locked = {plan.run.id: plan.run for plan in plans}
    activations = [(plan.run.id, plan.update) for plan in plans if isinstance(plan.update, Activation)]
    finishes = [(plan.run.id, plan.update) for plan in plans if isinstance(plan.update, Finish)]
    closes = [(plan.run.id, plan.update) for plan in plans if isinstance(plan.update, Close)]
    written: list[dict[str, Any]] = []
    if activations:
        written += await store.fetch_rows(
            conn,
            q.ACTIVATE_STEPS,
            **_each(
                run_id=[run_id for run_id, _ in activations],
                current_step=[a.current_step for _, a in activations],
                status_context=[_json(a.status_context) for _, a in activations],
            ),
            now=now,
        )
    if closes:
        written += await store.fetch_rows(
            conn,
            q.CLOSE_BATCHES,
            **_each(
                run_id=[run_id for run_id, _ in closes],
                status_context=[_json(c.status_context) for _, c in closes],
            ),
            now=now,
        )
    if finishes:
        written += await store.fetch_rows(
            conn,
            q.FINISH_RUNS,
            **_each(
                run_id=[run_id for run_id, _ in finishes],
                state=[f.state for _, f in finishes],
                status_reason=[f.status_reason for _, f in finishes],
                status_context=[_json(f.status_context) for _, f in finishes],
                terminal_reason=[f.terminal_reason for _, f in finishes],
            ),
            now=now,
        )
    contexts = {plan.run.id: plan.update.status_context for plan in plans if plan.update is not None}
    return {
        row["id"]: locked[row["id"]].model_copy(update={**row, "status_context": contexts[row["id"]]})
        for row in written
    }


async def _write_deliveries(
    conn: AsyncConnection, plans: Sequence[DeliveryPlan], *, now: datetime
) -> dict[uuid.UUID, Delivery]:
    """Insert the planned deliveries (ON CONFLICT DO NOTHING: a row already there is read back, locked, and
    kept as it is), suppress the inserted ones as planned and record their rejections; by run id."""
    if not plans:
        return {}
    zones = await recipient_timezones(conn, [(p.tenant_id, p.recipient) for p in plans if p.needs_recipient_zone])
    values = [plan.values(zones.get((plan.tenant_id, plan.recipient)), now=now) for plan in plans]
    columns = {name: [row[name] for row in values] for name in values[0] if name != "now"}
    columns["content"] = [_json(content) for content in columns["content"]]
    contents = {plan.run_id: plan.content for plan in plans}
    inserted = {
        row["run_id"]: Delivery.of({**row, "content": contents[row["run_id"]]})
        for row in await store.fetch_rows(conn, q.INSERT_DELIVERIES, **_each(**columns), now=now)
    }
    found = dict(inserted)
    lost = [plan for plan in plans if plan.run_id not in inserted]
    if lost:
        for delivery in await store.fetch_all(
            conn,
            Delivery,
            q.STEP_DELIVERIES_FOR_UPDATE,
            **_each(run_id=[plan.run_id for plan in lost], activation=[plan.activation for plan in lost]),
        ):
            found[delivery.run_id] = delivery
        gone = [plan for plan in lost if plan.run_id not in found]
        if gone:  # the conflicting rows are committed (ON CONFLICT waited for them): corrupt otherwise
            raise RuntimeError(
                f"run {gone[0].run_id}: the delivery of activation {gone[0].activation} conflicts but is gone"
            )
    suppressed = [
        (inserted[plan.run_id], plan) for plan in plans if plan.run_id in inserted and plan.suppression_reason
    ]
    for delivery, _ in suppressed:
        check_move(delivery, "suppressed")
    if suppressed:
        terminal_at = now if "suppressed" in TERMINAL_DELIVERY_STATUSES else None
        for delivery in await store.fetch_all(
            conn,
            Delivery,
            q.MOVE_DELIVERIES,
            **_each(
                id=[delivery.id for delivery, _ in suppressed],
                status=["suppressed"] * len(suppressed),
                suppression_reason=[plan.suppression_reason for _, plan in suppressed],
                terminal_at=[terminal_at] * len(suppressed),
            ),
            now=now,
        ):
            found[delivery.run_id] = delivery
    rejected = [(delivery.id, plan.rejection) for delivery, plan in suppressed if plan.rejection is not None]
    if rejected:
        # A suppressed delivery is not in flight: the rejection is evidence only, its status stays.
        await store.execute(
            conn,
            q.INSERT_REJECTIONS,
            **_each(
                delivery_id=[delivery_id for delivery_id, _ in rejected],
                outcome=[r.outcome for _, r in rejected],
                error_class=[r.error_class for _, r in rejected],
                error=[r.error for _, r in rejected],
            ),
            now=now,
        )
    return found
