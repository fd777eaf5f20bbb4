"""What the reconcile sweep looks for (SPEC 6, 11.3): runs never handed to Temporal, waits and sends whose timer
was lost, and overdue feedback deadlines."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from tocsin.core.models import Delivery, Progress, Run
from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.engine.feedback import settle_feedback_deadlines
from tocsin.engine.runs import cancel_run, progress_due_runs

BATCH = 500
# The terminal reason of a run whose workflow an operator terminated (SPEC 14).
TERMINATED = "temporal:terminated"


async def unstarted_runs(db: Database, *, now: datetime, grace: timedelta, limit: int = BATCH) -> list[Run]:
    """Unfinished runs created more than `grace` ago whose workflow was never marked started, oldest first.

    The process that committed them died before (or while) starting their workflow.
    """
    async with db.transaction() as conn:
        return await store.fetch_all(conn, Run, q.UNSTARTED_RUNS, created_by=now - grace, limit=limit)


async def progress_overdue_runs(db: Database, *, now: datetime, grace: timedelta, limit: int = BATCH) -> list[Progress]:
    """Progress the waits overdue by more than `grace`: their own workflow timer would have fired by now."""
    return await progress_due_runs(db, now=now, limit=limit, overdue_by=grace)


async def overdue_sends(db: Database, *, now: datetime, grace: timedelta, limit: int = BATCH) -> list[uuid.UUID]:
    """Active runs whose next send (a retry, a window's opening) is overdue by more than `grace`: the workflow's
    timer for it was lost, as a wait's can be (SPEC 11.3). The sweep wakes them."""
    async with db.transaction() as conn:
        rows = (await conn.execute(q.OVERDUE_SENDS, {"due_by": now - grace, "limit": limit})).all()
    return [row.id for row in rows]


async def settle_overdue_feedback(
    db: Database, *, now: datetime, grace: timedelta, limit: int = BATCH
) -> list[Delivery]:
    """Settle the feedback deadlines overdue by more than `grace` (each workflow's own timer settles the others)."""
    return await settle_feedback_deadlines(db, now=now, limit=limit, overdue_by=grace)


async def unfinished_runs(db: Database, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Run]:
    """The runs among `run_ids` that exist and may still change, by id: what the sweep asks, in one read, before
    acting on closed workflows."""
    if not run_ids:
        return {}
    async with db.transaction() as conn:
        runs = await store.fetch_all(conn, Run, q.UNFINISHED_RUNS_BY_ID, run_ids=list(run_ids))
    return {run.id: run for run in runs}


async def stop_terminated_run(db: Database, run: Run, *, now: datetime) -> Run:
    """Stop a run whose workflow was terminated: the operator meant it to end, not to be brought back."""
    return await cancel_run(db, run.id, tenant_id=run.tenant_id, reason=TERMINATED, now=now)
