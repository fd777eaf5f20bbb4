"""The API's reads: a run with everything that explains it, and pages of runs (SPEC 7). Tenant-scoped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tocsin.core.cursors import decode_cursor, encode_cursor
from tocsin.core.errors import InvalidRequest
from tocsin.core.models import Attempt, Delivery, Run, RunDetail, RunItem, RunPage, Transition
from tocsin.core.vocabulary import RUN_STATES
from tocsin.db import Database, store
from tocsin.db import queries as q

MAX_PAGE = 1000
# The keyset start of the first page: after every run (pages go newest first).
_AFTER_ALL_RUNS = (datetime.max.replace(tzinfo=UTC), uuid.UUID(int=(1 << 128) - 1))


async def get_run(db: Database, run_id: uuid.UUID, *, tenant_id: str) -> RunDetail:
    """The run with its whole audit trail, its deliveries and their attempts, and a batched run's items, read in
    one transaction."""
    async with db.transaction() as conn:
        run = await store.get_run(conn, run_id, tenant_id=tenant_id)
        transitions = await store.fetch_all(conn, Transition, q.RUN_TRANSITIONS, run_id=run.id)
        deliveries = await store.fetch_all(conn, Delivery, q.RUN_DELIVERIES, run_id=run.id)
        attempts = await store.fetch_all(conn, Attempt, q.RUN_ATTEMPTS, run_id=run.id)
        items = await store.fetch_all(conn, RunItem, q.RUN_ITEMS, run_id=run.id)
    return RunDetail(run=run, transitions=transitions, deliveries=deliveries, attempts=attempts, items=items)


async def list_runs(
    db: Database,
    *,
    tenant_id: str,
    state: str | None = None,
    recipient: str | None = None,
    workflow_key: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> RunPage:
    """Runs newest first, a page at a time; `next_cursor` (None on the last page) asks for the next one."""
    if state is not None and state not in RUN_STATES:
        raise InvalidRequest(f"unknown run state {state!r}; expected one of {', '.join(RUN_STATES)}")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    before_created_at, before_id = decode_cursor(cursor) if cursor is not None else _AFTER_ALL_RUNS
    async with db.transaction() as conn:
        rows = await store.fetch_all(
            conn,
            Run,
            q.LIST_RUNS,
            tenant_id=tenant_id,
            states=[state] if state is not None else list(RUN_STATES),
            recipient=recipient,
            workflow_key=workflow_key,
            before_created_at=before_created_at,
            before_id=before_id,
            limit=limit + 1,  # one more than the page: whether another page follows
        )
    page, more = rows[:limit], len(rows) > limit
    return RunPage(runs=page, next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if more else None)
