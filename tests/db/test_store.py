"""tocsin.db.store's statements sent to asyncpg directly, and Database.transaction's liveness rule (issue 14).

Inside Database.transaction, store hands asyncpg the statement SQLAlchemy would compile and turns the rows into
the same models; errors are SQLAlchemy's; statements sent through SQLAlchemy share the transaction; a pooled
session that ended is replaced when the next transaction begins (there is no pre-ping).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from journeys import ESCALATION, escalation_waiting, run_row, start, transitions
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError

from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.db import tables as t
from tocsin.db.database import driver_of


def listen(db: Database) -> list[tuple[str, list[Any]]]:
    seen: list[tuple[str, list[Any]]] = []
    store.listen_statements(db.engine, lambda sql, params: seen.append((sql, list(params))))
    return seen


async def test_store_sends_asyncpg_the_statement_sqlalchemy_compiles(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    seen = listen(db)
    async with db.transaction() as conn:
        locked = await store.lock_run(conn, run.id)
    assert locked.model_dump() == run.model_dump(exclude={"joined"})  # create_run's answer says if it joined
    assert seen == [(str(q.RUN_FOR_UPDATE.compile(dialect=db.engine.dialect)), [run.id])]


async def test_rows_read_directly_are_the_rows_read_through_sqlalchemy(db: Database, t0: datetime) -> None:
    # A waiting run has every kind of column set: jsonb, text[], timestamps, uuids.
    run, _ = await escalation_waiting(db, now=t0)
    seen = listen(db)

    async def read(conn: Any) -> tuple[Any, ...]:
        return (
            await store.get_run(conn, run.id),
            await store.step_delivery(conn, run.id, 1),
            await store.lock_step_delivery_with_latest_attempt(conn, run.id, 1),
            await store.scalar(conn, q.DEFINITION_SPEC, definition_id=run.definition_id),
        )

    async with db.transaction() as conn:
        direct = await read(conn)
    sent_directly = len(seen)
    async with db.engine.connect() as conn:
        # Outside any transaction (autocommit): store leaves every statement to SQLAlchemy.
        through_sqlalchemy = await read(await conn.execution_options(isolation_level="AUTOCOMMIT"))
    assert sent_directly == 4 and len(seen) == 4
    assert direct == through_sqlalchemy
    assert direct[0].pending_signals == ["notification.read"] and direct[0].due_at is not None
    assert direct[2] == (direct[1], store.AttemptOutcome("succeeded", None))


async def test_an_error_on_the_direct_path_is_sqlalchemys_and_rolls_back(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    before = await transitions(db, run.id)
    with pytest.raises(IntegrityError, match="workflow_transitions_reason_check") as raised:
        async with db.transaction() as conn:
            await store.append_transition(
                conn, run, now=t0, reason="step_activated", from_state="active", to_state="active", context={}
            )
            await store.append_transition(
                conn, run, now=t0, reason="no_such_reason", from_state="active", to_state="active", context={}
            )
    assert "INSERT INTO tocsin.workflow_transitions" in str(raised.value.statement)
    assert not raised.value.connection_invalidated
    assert await transitions(db, run.id) == before


async def test_sqlalchemy_statements_share_the_transaction(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    before = await transitions(db, run.id)
    mark = update(t.workflow_runs).where(t.workflow_runs.c.id == run.id).values(terminal_reason="marked")

    async def both(conn: Any) -> None:
        await store.append_transition(
            conn, run, now=t0, reason="step_activated", from_state="active", to_state="active", context={}
        )
        await conn.execute(mark)

    with pytest.raises(RuntimeError, match="abandoned"):
        async with db.transaction() as conn:
            await both(conn)
            raise RuntimeError("abandoned")
    assert await transitions(db, run.id) == before
    assert (await run_row(db, run.id))["terminal_reason"] is None

    async with db.transaction() as conn:
        await both(conn)
    assert len(await transitions(db, run.id)) == len(before) + 1
    assert (await run_row(db, run.id))["terminal_reason"] == "marked"


async def backend_pids(db: Database, count: int) -> set[int]:
    """The backends of `count` transactions held open at once (so the pool opens that many sessions)."""
    gate = asyncio.Barrier(count)

    async def one() -> int:
        async with db.transaction() as conn:
            pid = int(await conn.scalar(text("SELECT pg_backend_pid()")))
            await gate.wait()
            return pid

    return set(await asyncio.gather(*(one() for _ in range(count))))


async def test_sessions_that_ended_in_the_pool_are_replaced_when_a_transaction_begins(fresh_db_url: str) -> None:
    db = await Database.connect(fresh_db_url, pool_size=3, max_overflow=0)
    admin = await asyncpg.connect(fresh_db_url)
    try:
        pooled = await backend_pids(db, 3)
        # With a timeout, pg_terminate_backend returns once the backend has exited.
        ended = await admin.fetch("SELECT pg_terminate_backend(pid, 10000) FROM unnest($1::int[]) AS pid", list(pooled))
        assert all(row[0] for row in ended)
        # Every pooled session is gone: the next transactions begin on new ones, and no caller sees an error.
        assert not (await backend_pids(db, 3)) & pooled
    finally:
        await admin.close()
        await db.close()


async def test_statements_prepared_on_an_ended_session_go_with_it(fresh_db_url: str, t0: datetime) -> None:
    # Each statement is prepared once per connection; nothing may keep a dropped connection alive through them.
    db = await Database.connect(fresh_db_url, pool_size=1, max_overflow=0)
    admin = await asyncpg.connect(fresh_db_url)
    try:
        ended: list[weakref.ref[Any]] = []
        for _ in range(3):
            run = await start(db, ESCALATION, now=t0)  # store's statements, prepared on the pooled session
            async with db.transaction() as conn:
                await store.lock_run(conn, run.id)
                ended.append(weakref.ref(driver_of(conn)))
                pid = int(await conn.scalar(text("SELECT pg_backend_pid()")))
            await admin.execute("SELECT pg_terminate_backend($1, 10000)", pid)
        async with db.transaction() as conn:
            assert (await store.lock_run(conn, run.id)).id == run.id  # prepared again on the new session
        gc.collect()
        assert [ref() for ref in ended] == [None, None, None]
    finally:
        await admin.close()
        await db.close()
