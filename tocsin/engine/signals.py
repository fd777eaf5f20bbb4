"""Signals: record them, and stop the waiting runs that listen for them (SPEC 4.7)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.errors import InvalidRequest
from tocsin.core.limits import check_data, check_identifier
from tocsin.core.models import Progress, Run
from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.db.store import SignalRef
from tocsin.engine.planning import write_plan
from tocsin.engine.plans import plan_finish


async def stop_by_signal(conn: AsyncConnection, run: Run, signal: SignalRef, *, now: datetime) -> Progress:
    """Stop a run (locked by the caller) because `signal` arrived."""
    plan = plan_finish(
        run,
        state="stopped",
        status_reason="stopped_by_signal",
        transition_reason="signal_received",
        context={"event_name": signal.name, "signal_id": str(signal.id)},
        terminal_reason=f"signal:{signal.name}",
    )
    return await write_plan(conn, plan, now=now)


async def earliest_cancelling_signal(conn: AsyncConnection, run: Run, names: tuple[str, ...]) -> SignalRef | None:
    """A signal that would cancel the wait and was recorded since the step was activated (SPEC 4.3)."""
    if not names:
        return None
    row = await store.first_row(
        conn,
        q.EARLIEST_CANCELLING_SIGNAL,
        tenant_id=run.tenant_id,
        recipient=run.recipient,
        run_id=run.id,
        names=list(names),
        since=run.step_activated_at,
    )
    return SignalRef(row["id"], row["name"]) if row is not None else None


def check_signal(tenant_id: str, recipient: str, name: str, data: dict[str, Any] | None = None) -> None:
    """InvalidRequest for a signal no run could receive (tocsin.core.limits), before anything is written."""
    check_identifier("signal tenant_id", tenant_id)
    check_identifier("signal recipient", recipient)
    check_identifier("signal name", name)
    if data is not None:
        check_data("signal data", data)


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
    check_signal(tenant_id, recipient, name, data)
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
    signal_id = uuid.uuid4()
    await store.execute(
        conn,
        q.INSERT_SIGNAL,
        id=signal_id,
        tenant_id=tenant_id,
        recipient=recipient,
        run_id=run_id,
        name=name,
        data=data or {},
        now=now,
    )
    signal = SignalRef(signal_id, name)
    if run_id is None:
        runs = await store.fetch_all(conn, Run, q.RECIPIENT_RUNS_FOR_UPDATE, tenant_id=tenant_id, recipient=recipient)
    else:
        runs = await store.fetch_all(
            conn, Run, q.TARGET_RUN_FOR_UPDATE, tenant_id=tenant_id, recipient=recipient, run_id=run_id
        )
    stopped: list[uuid.UUID] = []
    for run in runs:
        if run.state == "waiting" and name in run.pending_signals:
            await stop_by_signal(conn, run, signal, now=now)
            stopped.append(run.id)
    return stopped
