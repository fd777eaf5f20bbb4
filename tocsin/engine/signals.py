"""Signals: record them, and stop the waiting runs that listen for them (SPEC 4.7)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.errors import InvalidRequest
from tocsin.core.models import Run, Signal
from tocsin.core.vocabulary import UNFINISHED_RUN_STATES
from tocsin.db import Database, store
from tocsin.db import tables as t

R = t.workflow_runs
S = t.signals


async def stop_by_signal(conn: AsyncConnection, run: Run, signal: Signal, *, now: datetime) -> Run:
    """Stop a run (locked by the caller) because `signal` arrived."""
    return await store.finish_run(
        conn,
        run,
        now=now,
        state="stopped",
        status_reason="stopped_by_signal",
        transition_reason="signal_received",
        context={"event_name": signal.name, "signal_id": str(signal.id)},
        terminal_reason=f"signal:{signal.name}",
    )


async def earliest_cancelling_signal(conn: AsyncConnection, run: Run, names: tuple[str, ...]) -> Signal | None:
    """A signal that would cancel the wait and was recorded since the step was activated (SPEC 4.3)."""
    if not names:
        return None
    query = (
        select(S)
        .where(
            S.c.tenant_id == run.tenant_id,
            S.c.recipient == run.recipient,
            or_(S.c.run_id == run.id, S.c.run_id.is_(None)),
            S.c.name.in_(names),
            S.c.created_at >= run.step_activated_at,
        )
        .order_by(S.c.created_at, S.c.id)
        .limit(1)
    )
    return await store.fetch_first(conn, Signal, query)


async def route_signal(
    db: Database,
    tenant_id: str,
    recipient: str,
    name: str,
    data: dict[str, Any] | None = None,
    *,
    now: datetime,
    run_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Record the signal and stop every waiting run of this tenant and recipient that listens for it.

    Returns the ids of the runs it stopped. Active runs are locked too (then left alone): a run that is
    entering its wait right now either commits first (and is stopped here, since the lock makes this
    statement re-read it) or sees this signal once it gets the lock (SPEC 4.3). No signal is lost.
    """
    for field_name, value in (("tenant_id", tenant_id), ("recipient", recipient), ("name", name)):
        if not value or not value.strip():
            raise InvalidRequest(f"signal {field_name} must not be blank")
    async with db.transaction() as conn:
        if run_id is not None:
            target = await store.get_run(conn, run_id, tenant_id=tenant_id)  # RunNotFound for another tenant's
            if target.recipient != recipient:
                raise InvalidRequest(f"run {run_id} belongs to another recipient than {recipient!r}")
        return await route_in(conn, tenant_id, recipient, name, data, now=now, run_id=run_id)


async def route_in(
    conn: AsyncConnection,
    tenant_id: str,
    recipient: str,
    name: str,
    data: dict[str, Any] | None = None,
    *,
    now: datetime,
    run_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """`route_signal` inside the caller's transaction."""
    signal = await store.fetch_one(
        conn,
        Signal,
        insert(S)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            recipient=recipient,
            run_id=run_id,
            name=name,
            data=data or {},
            created_at=now,
        )
        .returning(*S.c),
    )
    query = (
        select(R)
        .where(R.c.tenant_id == tenant_id, R.c.recipient == recipient, R.c.state.in_(UNFINISHED_RUN_STATES))
        .order_by(R.c.id)
        .with_for_update()
    )
    if run_id is not None:
        query = query.where(R.c.id == run_id)
    stopped: list[uuid.UUID] = []
    for run in await store.fetch_all(conn, Run, query):
        if run.state == "waiting" and name in run.pending_signals:
            await stop_by_signal(conn, run, signal, now=now)
            stopped.append(run.id)
    return stopped
