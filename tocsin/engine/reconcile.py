"""What the reconcile sweep looks for (SPEC 6): runs never handed to Temporal, and waits whose timer was lost."""

from __future__ import annotations

from datetime import datetime, timedelta

from tocsin.core.models import Progress, Run
from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.engine.runs import progress_due_runs

BATCH = 500


async def unstarted_runs(db: Database, *, now: datetime, grace: timedelta, limit: int = BATCH) -> list[Run]:
    """Unfinished runs created more than `grace` ago whose workflow was never marked started, oldest first.

    The process that committed them died before (or while) starting their workflow.
    """
    async with db.transaction() as conn:
        return await store.fetch_all(conn, Run, q.UNSTARTED_RUNS, created_by=now - grace, limit=limit)


async def progress_overdue_runs(db: Database, *, now: datetime, grace: timedelta, limit: int = BATCH) -> list[Progress]:
    """Progress the waits overdue by more than `grace`: their own workflow timer would have fired by now."""
    return await progress_due_runs(db, now=now, limit=limit, overdue_by=grace)
