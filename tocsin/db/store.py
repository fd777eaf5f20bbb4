"""Canonical row access shared by every decision: locking, updating a run, appending to the audit trail.

Every function takes the open transaction's connection; none commits.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Executable, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.errors import DeliveryNotFound, RunNotFound
from tocsin.core.models import Attempt, Delivery, Row, Run, Transition
from tocsin.db import tables as t

R = t.workflow_runs
D = t.deliveries
A = t.delivery_attempts
T = t.workflow_transitions
M = TypeVar("M", bound=Row)


async def fetch_one(conn: AsyncConnection, model: type[M], statement: Executable) -> M:
    """The one row a statement returns (an INSERT or UPDATE ... RETURNING), as a model."""
    return model.of((await conn.execute(statement)).mappings().one())


async def fetch_first(conn: AsyncConnection, model: type[M], statement: Executable) -> M | None:
    row = (await conn.execute(statement)).mappings().first()
    return model.of(row) if row is not None else None


async def fetch_all(conn: AsyncConnection, model: type[M], statement: Executable) -> list[M]:
    return [model.of(row) for row in (await conn.execute(statement)).mappings().all()]


async def lock_run(conn: AsyncConnection, run_id: uuid.UUID, *, tenant_id: str | None = None) -> Run:
    """The run row, locked FOR UPDATE until the transaction ends."""
    return await get_run(conn, run_id, tenant_id=tenant_id, lock=True)


async def get_run(conn: AsyncConnection, run_id: uuid.UUID, *, tenant_id: str | None = None, lock: bool = False) -> Run:
    """The run row; with `tenant_id`, another tenant's run looks like no run at all (RunNotFound)."""
    query = select(R).where(R.c.id == run_id)
    if tenant_id is not None:
        query = query.where(R.c.tenant_id == tenant_id)
    if lock:
        query = query.with_for_update()
    run = await fetch_first(conn, Run, query)
    if run is None:
        raise RunNotFound(f"run {run_id} not found" + (f" for tenant {tenant_id!r}" if tenant_id else ""))
    return run


async def update_run(conn: AsyncConnection, run_id: uuid.UUID, *, now: datetime, **values: Any) -> Run:
    """Move a run; every move is also a transition, so `last_transition_at` moves with it."""
    return await fetch_one(
        conn,
        Run,
        update(R).where(R.c.id == run_id).values(updated_at=now, last_transition_at=now, **values).returning(*R.c),
    )


async def lock_delivery(conn: AsyncConnection, delivery_id: uuid.UUID, *, tenant_id: str | None = None) -> Delivery:
    query = select(D).where(D.c.id == delivery_id).with_for_update()
    if tenant_id is not None:
        query = query.where(D.c.tenant_id == tenant_id)
    delivery = await fetch_first(conn, Delivery, query)
    if delivery is None:
        raise DeliveryNotFound(
            f"delivery {delivery_id} not found" + (f" for tenant {tenant_id!r}" if tenant_id else "")
        )
    return delivery


async def lock_delivery_and_run(
    conn: AsyncConnection, delivery_id: uuid.UUID, *, tenant_id: str
) -> tuple[Delivery, Run]:
    """Lock a delivery's run, then the delivery: the order every decision takes (run before delivery),
    so that a receipt or a provider report racing `progress_run` waits instead of deadlocking."""
    run_id = await conn.scalar(select(D.c.run_id).where(D.c.id == delivery_id, D.c.tenant_id == tenant_id))
    if run_id is None:
        raise DeliveryNotFound(f"delivery {delivery_id} not found for tenant {tenant_id!r}")
    run = await lock_run(conn, run_id)
    return await lock_delivery(conn, delivery_id), run


async def step_delivery(
    conn: AsyncConnection, run_id: uuid.UUID, activation: int, *, lock: bool = False
) -> Delivery | None:
    """The delivery of one step activation; with `lock`, locked FOR UPDATE until the transaction ends."""
    query = select(D).where(D.c.run_id == run_id, D.c.activation == activation)
    if lock:
        query = query.with_for_update()
    return await fetch_first(conn, Delivery, query)


async def update_delivery(conn: AsyncConnection, delivery_id: uuid.UUID, *, now: datetime, **values: Any) -> Delivery:
    return await fetch_one(
        conn, Delivery, update(D).where(D.c.id == delivery_id).values(updated_at=now, **values).returning(*D.c)
    )


async def latest_attempt(conn: AsyncConnection, delivery_id: uuid.UUID) -> Attempt | None:
    query = select(A).where(A.c.delivery_id == delivery_id).order_by(A.c.attempt_number.desc()).limit(1)
    return await fetch_first(conn, Attempt, query)


async def insert_attempt(
    conn: AsyncConnection,
    delivery_id: uuid.UUID,
    *,
    now: datetime,
    outcome: str,
    error_class: str | None = None,
    error: str | None = None,
    provider_message_id: str | None = None,
    provider_response: dict[str, Any] | None = None,
) -> Attempt:
    """Append an attempt row, numbered after the last one (the caller holds the delivery's lock)."""
    # Numbered in the INSERT itself: one round trip, and the caller's lock makes max + 1 safe.
    number = (
        select(func.coalesce(func.max(A.c.attempt_number), 0) + 1)
        .where(A.c.delivery_id == delivery_id)
        .scalar_subquery()
    )
    return await fetch_one(
        conn,
        Attempt,
        insert(A)
        .values(
            delivery_id=delivery_id,
            attempt_number=number,
            outcome=outcome,
            error_class=error_class,
            error=error,
            provider_message_id=provider_message_id,
            provider_response=provider_response or {},
            created_at=now,
        )
        .returning(*A.c),
    )


async def append_transition(
    conn: AsyncConnection,
    run: Run,
    *,
    now: datetime,
    reason: str,
    from_state: str | None,
    to_state: str,
    context: dict[str, Any],
    step_key: str | None = None,
    delivery_id: uuid.UUID | None = None,
) -> Transition:
    """Append one row to the run's audit trail with the next `seq` (the caller holds the run's lock)."""
    seq = select(func.coalesce(func.max(T.c.seq), 0) + 1).where(T.c.run_id == run.id).scalar_subquery()
    return await fetch_one(
        conn,
        Transition,
        insert(T)
        .values(
            run_id=run.id,
            seq=seq,
            step_key=step_key,
            delivery_id=delivery_id,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            context=context,
            created_at=now,
        )
        .returning(*T.c),
    )


async def finish_run(
    conn: AsyncConnection,
    run: Run,
    *,
    now: datetime,
    state: str,
    status_reason: str,
    transition_reason: str,
    context: dict[str, Any],
    terminal_reason: str | None = None,
    delivery_id: uuid.UUID | None = None,
) -> Run:
    """End a locked run (completed or stopped) and record why, in the run and in its audit trail alike."""
    finished = await update_run(
        conn,
        run.id,
        now=now,
        state=state,
        status_reason=status_reason,
        status_context=context,
        terminal_reason=terminal_reason,
        due_at=None,
        pending_signals=[],
    )
    await append_transition(
        conn,
        run,
        now=now,
        reason=transition_reason,
        from_state=run.state,
        to_state=state,
        step_key=run.current_step,
        delivery_id=delivery_id,
        context=context,
    )
    return finished


def iso(moment: datetime | None) -> str | None:
    """Timestamps inside jsonb contexts are ISO-8601 strings."""
    return moment.isoformat() if moment is not None else None
