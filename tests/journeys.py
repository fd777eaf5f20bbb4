"""Shared test helpers: journey definition dicts, driving a delivery to a status, reading canonical rows.

Everything here talks to a real `Database` through the engine's own public functions; nothing is mocked.
Row readers return plain dicts (column -> value) so that tests can compare whole rows exactly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, select, text

from tocsin.core.models import Delivery, Progress, Run
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.db.store import lock_delivery
from tocsin.engine.deliveries import (
    SendResult,
    exhaust_delivery,
    mark_dispatched,
    move,
    record_attempt,
    suppress_delivery,
)
from tocsin.engine.registry import register_definition
from tocsin.engine.runs import create_run, progress_run

TENANT = "acme"
RECIPIENT = "user:42"
DATA: dict[str, Any] = {"actor": "Ada", "excerpt": "see the draft"}

# Every table of the schema, in foreign-key order, with the column that orders its rows.
TABLES: tuple[tuple[Table, str], ...] = (
    (t.workflow_definitions, "id"),
    (t.workflow_runs, "id"),
    (t.run_items, "id"),
    (t.deliveries, "id"),
    (t.delivery_attempts, "id"),
    (t.signals, "id"),
    (t.workflow_transitions, "id"),
)


# --- definition dicts ------------------------------------------------------------------------------------


def wait(
    to_step: str,
    delay_seconds: int,
    *,
    anchor: str = "prior_delivery_terminal_at",
    cancel_signals: list[str] | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"kind": "wait_until", "anchor": anchor, "delay_seconds": delay_seconds}
    rule["to_step"] = to_step
    if cancel_signals is not None:
        rule["cancel_signals"] = cancel_signals
    return rule


def on(outcome: str, to_step: str) -> dict[str, Any]:
    return {"kind": "on_outcome", "outcome": outcome, "to_step": to_step}


def stop(outcome: str) -> dict[str, Any]:
    return {"kind": "stop", "outcome": outcome}


def step(
    key: str,
    channel: str,
    *progress: dict[str, Any],
    content: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "key": key,
        "channel": channel,
        "content": content if content is not None else {"body": f"{key}: {{{{ actor }}}}"},
        "progress": list(progress),
    }
    if retry is not None:
        spec["retry"] = retry
    return spec


def journey(key: str, *steps: dict[str, Any], version: int = 1, **extra: Any) -> dict[str, Any]:
    return {"key": key, "version": version, "steps": list(steps), **extra}


IN_APP_CONTENT = {"title": "{{ actor }} mentioned you", "body": "{{ excerpt }}"}
EMAIL_CONTENT = {"subject": "You were mentioned", "body": "{{ actor }} wrote: {{ excerpt }}"}

# SPEC 3's example: in_app, then email on a bounce or two hours after the in-app message landed.
ESCALATION = journey(
    "mention_escalation",
    step(
        "in_app",
        "in_app",
        on("bounced", "email"),
        wait("email", 7200, cancel_signals=["notification.read"]),
        content=IN_APP_CONTENT,
    ),
    step("email", "email", content=EMAIL_CONTENT),
)


# --- registering and starting ----------------------------------------------------------------------------


async def start(
    db: Database,
    spec: dict[str, Any],
    *,
    now: datetime,
    tenant_id: str = TENANT,
    recipient: str = RECIPIENT,
    data: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Run:
    """Register `spec` (idempotent) and create one run of it; returns the new run."""
    await register_definition(db, spec, now=now)
    run, created = await create_run(
        db,
        tenant_id=tenant_id,
        workflow_key=spec["key"],
        version=spec["version"],
        recipient=recipient,
        idempotency_key=idempotency_key or f"key-{uuid.uuid4()}",
        data=DATA if data is None else data,
        now=now,
    )
    assert created
    return run


# --- driving a delivery ----------------------------------------------------------------------------------

# Where `drive` can take a delivery, and the (status, suppression_reason) it ends with.
DRIVEN: dict[str, tuple[str, str | None]] = {
    "dispatched": ("dispatched", None),
    "succeeded": ("succeeded", None),
    "failed": ("failed", None),
    "bounced": ("cancelled", "bounced"),
    "permanent_failure": ("cancelled", "permanent_failure"),
    "retries_exhausted": ("cancelled", "retries_exhausted"),
    "suppressed": ("suppressed", "recipient_opted_out"),
}


async def drive(db: Database, delivery_id: uuid.UUID, to: str, *, now: datetime) -> Delivery:
    """Take a `pending` delivery to `to` (a key of DRIVEN) the way dispatch would, stamping `now`."""
    if to == "suppressed":
        return await suppress_delivery(db, delivery_id, reason="recipient_opted_out", now=now)
    delivery = await mark_dispatched(db, delivery_id, now=now)
    kind = {
        "dispatched": None,
        "succeeded": "succeeded",
        "failed": "temporary",
        "retries_exhausted": "temporary",
        "bounced": "bounced",
        "permanent_failure": "permanent",
    }[to]
    if kind is not None:
        delivery = await record_attempt(db, delivery_id, SendResult(kind, error=_ERRORS.get(kind)), now=now)
    if to == "retries_exhausted":
        delivery = await exhaust_delivery(db, delivery_id, now=now)
    assert (delivery.status, delivery.suppression_reason) == DRIVEN[to]
    return delivery


_ERRORS = {"temporary": "smtp 451", "bounced": "mailbox unknown", "permanent": "smtp 550"}


async def cancel_delivery(db: Database, delivery_id: uuid.UUID, *, reason: str, now: datetime) -> Delivery:
    """`pending` or `dispatched` -> `cancelled` with an arbitrary reason (e.g. one no outcome maps)."""
    async with db.transaction() as conn:
        delivery = await lock_delivery(conn, delivery_id)
        return await move(conn, delivery, "cancelled", now=now, suppression_reason=reason)


async def escalation_waiting(db: Database, *, now: datetime, **start_args: Any) -> tuple[Run, Delivery]:
    """An ESCALATION run whose in-app delivery succeeded at `now`, waiting until `now` + 2 hours."""
    run = await start(db, ESCALATION, now=now, **start_args)
    (first,) = await deliveries(db, run.id)
    delivery = await drive(db, first["id"], "succeeded", now=now)
    progress = await progress_run(db, run.id, now=now)
    assert progress.kind == "waiting"
    assert progress.run.due_at == later(now, hours=2)
    return progress.run, delivery


async def assert_noop(db: Database, run_id: uuid.UUID, *, now: datetime, reason: str) -> Progress:
    """progress_run decides nothing, for `reason`, and writes nothing at all."""
    before = await snapshot(db)
    progress = await progress_run(db, run_id, now=now)
    assert (progress.kind, progress.reason, progress.deliveries) == ("noop", reason, [])
    assert await snapshot(db) == before
    return progress


# --- races ----------------------------------------------------------------------------------------------


async def lock_waiters(db: Database, expected: int) -> None:
    """Return once `expected` backends of this database are blocked on a lock (60 s at most: on a machine loaded
    by other work, 21 callers took more than 5 s to reach the lock)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    waiting = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with db.transaction() as conn:  # a new transaction each time: a fresh activity snapshot
            waiting = await conn.scalar(query)
        if waiting == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{waiting} of {expected} calls queued on the lock")


# --- reading rows ----------------------------------------------------------------------------------------


async def rows(db: Database, table: Table, *where: Any, order_by: str = "id") -> list[dict[str, Any]]:
    async with db.transaction() as conn:
        result = await conn.execute(select(table).where(*where).order_by(table.c[order_by]))
        return [dict(r) for r in result.mappings().all()]


async def run_row(db: Database, run_id: uuid.UUID) -> dict[str, Any]:
    (row,) = await rows(db, t.workflow_runs, t.workflow_runs.c.id == run_id)
    return row


async def transitions(db: Database, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """The run's audit trail in `seq` order, each row without its global `id`."""
    found = await rows(db, t.workflow_transitions, t.workflow_transitions.c.run_id == run_id, order_by="seq")
    return [{k: v for k, v in row.items() if k != "id"} for row in found]


async def deliveries(db: Database, run_id: uuid.UUID) -> list[dict[str, Any]]:
    return await rows(db, t.deliveries, t.deliveries.c.run_id == run_id, order_by="activation")


async def attempts(db: Database, delivery_id: uuid.UUID) -> list[dict[str, Any]]:
    return await rows(
        db, t.delivery_attempts, t.delivery_attempts.c.delivery_id == delivery_id, order_by="attempt_number"
    )


async def delivery_at(db: Database, run_id: uuid.UUID, activation: int) -> dict[str, Any]:
    (row,) = await rows(db, t.deliveries, t.deliveries.c.run_id == run_id, t.deliveries.c.activation == activation)
    return row


async def counts(db: Database) -> dict[str, int]:
    """Rows per table."""
    async with db.transaction() as conn:
        return {table.name: int(await conn.scalar(select(func.count()).select_from(table)) or 0) for table, _ in TABLES}


async def snapshot(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table: compare two snapshots to prove that a call wrote nothing."""
    return {table.name: await rows(db, table, order_by=order) for table, order in TABLES}


def assert_seq_contiguous(trail: list[dict[str, Any]]) -> None:
    """The run's transitions are numbered 1..n with no gap, and all belong to one run."""
    assert [row["seq"] for row in trail] == list(range(1, len(trail) + 1))
    assert len({row["run_id"] for row in trail}) <= 1


def reasons(trail: list[dict[str, Any]]) -> list[str]:
    return [row["reason"] for row in trail]


def iso(moment: datetime) -> str:
    return moment.isoformat()


def later(moment: datetime, **delta: float) -> datetime:
    return moment + timedelta(**delta)
