"""Concurrent callers on real, separate connections collapse to one decision (SPEC: every step is idempotent).

Each engine call takes its own pooled connection, so `asyncio.gather` here really runs concurrent Postgres
transactions that contend for the same row locks.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import pytest
from journeys import (
    DATA,
    ESCALATION,
    RECIPIENT,
    TENANT,
    assert_seq_contiguous,
    deliveries,
    delivery_at,
    drive,
    escalation_waiting,
    later,
    lock_waiters,
    reasons,
    rows,
    run_row,
    start,
    transitions,
)
from sqlalchemy import func, select

from tocsin.core.models import Progress
from tocsin.db import Database, store
from tocsin.db import tables as t
from tocsin.engine import create_run, progress_due_runs, progress_run, route_signal
from tocsin.engine.deliveries import SendResult, apply_result, mark_dispatched
from tocsin.engine.feedback import record_delivery_outcome
from tocsin.engine.inbox import stamp_receipt
from tocsin.engine.registry import register_definition

READ = "notification.read"
T = TypeVar("T")
CALLERS = 20


@pytest.fixture
async def sweeper_dbs(fresh_db_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two more handles on the test's database, each with its own pool: two sweeper processes."""
    first = await Database.connect(fresh_db_url, pool_size=5, max_overflow=0)
    second = await Database.connect(fresh_db_url, pool_size=5, max_overflow=0)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def kinds(results: list[Progress]) -> Counter[tuple[str, str | None]]:
    return Counter((p.kind, p.reason) for p in results)


async def all_at_once(
    db: Database, run_id: uuid.UUID, calls: list[Callable[[], Awaitable[T]]], *, gate: bool
) -> list[T]:
    """Run `calls` concurrently. With `gate`, first hold the run's lock until every call has started and
    queued behind it, so that all of them are in flight at the same moment."""
    if not gate:
        return list(await asyncio.gather(*(call() for call in calls)))
    R = t.workflow_runs
    async with db.transaction() as holder:
        await holder.execute(select(R.c.id).where(R.c.id == run_id).with_for_update())
        tasks = [asyncio.create_task(call()) for call in calls]
        await lock_waiters(db, len(calls))
        assert not any(task.done() for task in tasks)
    return list(await asyncio.gather(*tasks))


@pytest.mark.parametrize("gate", [False, True])
async def test_concurrent_progress_of_a_converged_run_advances_once(db: Database, t0: datetime, gate: bool) -> None:
    runs = []
    for _ in range(3):
        run = await start(db, ESCALATION, now=t0)
        await drive(db, (await delivery_at(db, run.id, 1))["id"], "bounced", now=t0)
        runs.append(run)
    at = later(t0, minutes=1)

    for run in runs:
        calls = [lambda run=run: progress_run(db, run.id, now=at)] * CALLERS
        results = await all_at_once(db, run.id, calls, gate=gate)

        assert kinds(results) == Counter({("advanced", None): 1, ("noop", "no_progress_rules"): CALLERS - 1})
        (advance,) = [p for p in results if p.kind == "advanced"]
        found = await deliveries(db, run.id)
        assert [(d["activation"], d["step_key"], d["status"]) for d in found] == [
            (1, "in_app", "cancelled"),
            (2, "email", "pending"),
        ]
        assert [d.id for d in advance.deliveries] == [found[1]["id"]]
        trail = await transitions(db, run.id)
        assert_seq_contiguous(trail)
        assert reasons(trail) == [
            "workflow_started",
            "step_activated",
            "progressed_on_delivery_outcome",
            "step_activated",
        ]
        assert (await run_row(db, run.id))["step_activation"] == 2


@pytest.mark.parametrize("gate", [False, True])
async def test_concurrent_progress_of_a_due_waiting_run_reactivates_once(
    db: Database, t0: datetime, gate: bool
) -> None:
    runs = [(await escalation_waiting(db, now=t0))[0] for _ in range(3)]
    woke = later(t0, hours=3)

    for run in runs:
        calls = [lambda run=run: progress_run(db, run.id, now=woke)] * CALLERS
        results = await all_at_once(db, run.id, calls, gate=gate)

        assert kinds(results) == Counter({("advanced", None): 1, ("noop", "no_progress_rules"): CALLERS - 1})
        assert [d["activation"] for d in await deliveries(db, run.id)] == [1, 2]
        trail = await transitions(db, run.id)
        assert_seq_contiguous(trail)
        assert reasons(trail) == [
            "workflow_started",
            "step_activated",
            "waiting_for_step_progression",
            "reactivated_from_wait",
            "step_activated",
        ]


async def test_two_sweepers_never_progress_a_run_twice(
    db: Database, sweeper_dbs: tuple[Database, Database], t0: datetime
) -> None:
    waiting = [(await escalation_waiting(db, now=later(t0, seconds=i)))[0] for i in range(30)]
    first, second = sweeper_dbs
    sweep_at = later(t0, hours=3)

    a, b = await asyncio.gather(progress_due_runs(first, now=sweep_at), progress_due_runs(second, now=sweep_at))

    assert {p.kind for p in a + b} == {"advanced"}
    progressed = [p.run.id for p in a + b]
    assert len(progressed) == 30
    assert set(progressed) == {run.id for run in waiting}
    async with db.transaction() as conn:
        per_run = (
            await conn.execute(
                select(t.workflow_transitions.c.run_id, func.count())
                .where(t.workflow_transitions.c.reason == "reactivated_from_wait")
                .group_by(t.workflow_transitions.c.run_id)
            )
        ).all()
    assert sorted(count for _, count in per_run) == [1] * 30
    assert len(await rows(db, t.deliveries)) == 60
    for run in waiting:
        assert_seq_contiguous(await transitions(db, run.id))
    # Each sweeper went oldest-due first within its own share.
    for share in (a, b):
        dues = [(await run_row(db, p.run.id))["step_activated_at"] for p in share]
        assert dues == sorted(dues)


async def _jittered(coro: Awaitable[T], rng: random.Random) -> T:
    await asyncio.sleep(rng.random() * 0.004)
    return await coro


async def test_a_signal_racing_the_wait_is_never_lost(db: Database, t0: datetime) -> None:
    """Either order of a signal and the run entering its wait ends with the run stopped by that signal.

    Which order a round takes is up to the scheduler (test_a_signal_and_the_wait_queued_on_the_run_lock
    forces each one); every round checks, from the rows, that it was this round's signal that stopped it.
    """
    rng = random.Random(7)
    finished: dict[uuid.UUID, tuple[str, int]] = {}  # run -> (the signal that stopped it, its trail length)
    for round_number in range(40):
        # A wait sees the signals recorded since its step was activated: each round starts after the previous
        # round's signal, so that only its own signal can stop its run.
        began = later(t0, minutes=round_number)
        run = await start(db, ESCALATION, now=began)
        await drive(db, (await delivery_at(db, run.id, 1))["id"], "succeeded", now=began)
        at = later(began, seconds=1)
        # Half the signals name the run, half go to every run of the recipient (the earlier ones are stopped).
        target = run.id if round_number % 4 < 2 else None
        signal = _jittered(route_signal(db, TENANT, RECIPIENT, READ, now=at, run_id=target), rng)
        progress = _jittered(progress_run(db, run.id, now=at), rng)

        if round_number % 2:
            stopped, progressed = await asyncio.gather(signal, progress)
        else:
            progressed, stopped = await asyncio.gather(progress, signal)

        row = await run_row(db, run.id)
        assert (row["state"], row["status_reason"], row["terminal_reason"], row["due_at"]) == (
            "stopped",
            "stopped_by_signal",
            f"signal:{READ}",
            None,
        )
        trail = await transitions(db, run.id)
        assert_seq_contiguous(trail)
        if stopped == [run.id]:
            # The wait began first; the signal stopped the waiting run.
            assert progressed.kind == "waiting"
            assert reasons(trail)[2:] == ["waiting_for_step_progression", "signal_received"]
            assert trail[-1]["from_state"] == "waiting"
        else:
            # The signal was recorded first; the run saw it as it was about to wait.
            assert stopped == []
            assert progressed.kind == "stopped"
            assert reasons(trail)[2:] == ["signal_received"]
            assert trail[-1]["from_state"] == "active"
        (recorded,) = await rows(db, t.signals, t.signals.c.created_at == at)
        assert (recorded["run_id"], trail[-1]["context"]["signal_id"]) == (target, str(recorded["id"]))
        assert len(await deliveries(db, run.id)) == 1
        finished[run.id] = (str(recorded["id"]), len(trail))

    # The later signals to every run of the recipient wrote nothing for the runs they found stopped.
    for run_id, (signal_id, length) in finished.items():
        trail = await transitions(db, run_id)
        assert (len(trail), trail[-1]["context"]["signal_id"]) == (length, signal_id)


async def test_concurrent_create_run_with_one_idempotency_key_creates_one_run(db: Database, t0: datetime) -> None:
    await register_definition(db, ESCALATION, now=t0)
    results = await asyncio.gather(
        *(
            create_run(
                db,
                tenant_id=TENANT,
                workflow_key="mention_escalation",
                recipient=RECIPIENT,
                idempotency_key="same",
                data=DATA,
                now=t0,
            )
            for _ in range(CALLERS)
        )
    )
    assert sorted(created for _, created in results) == [False] * (CALLERS - 1) + [True]
    assert len({run.id for run, _ in results}) == 1
    (run,) = await rows(db, t.workflow_runs)
    assert len(await deliveries(db, run["id"])) == 1
    trail = await transitions(db, run["id"])
    assert_seq_contiguous(trail)
    assert reasons(trail) == ["workflow_started", "step_activated"]


@pytest.mark.parametrize("first", ["progress", "signal"])
async def test_a_signal_and_the_wait_queued_on_the_run_lock(db: Database, t0: datetime, first: str) -> None:
    """Force the overlap: both transactions are in flight, queued on the run's lock, in a known order.

    With progress first, the signal is already inserted (uncommitted) while the run enters its wait: the
    signal's transaction must re-read the run once it gets the lock, and stop it.
    """
    run = await start(db, ESCALATION, now=t0)
    await drive(db, (await delivery_at(db, run.id, 1))["id"], "succeeded", now=t0)
    at = later(t0, seconds=1)
    R = t.workflow_runs
    async with db.transaction() as holder:
        await holder.execute(select(R.c.id).where(R.c.id == run.id).with_for_update())
        make = {
            "progress": lambda: progress_run(db, run.id, now=at),
            "signal": lambda: route_signal(db, TENANT, RECIPIENT, READ, now=at),
        }
        second = "signal" if first == "progress" else "progress"
        tasks = {}
        for name in (first, second):
            tasks[name] = asyncio.create_task(make[name]())
            await lock_waiters(db, len(tasks))
        assert not any(task.done() for task in tasks.values())
    progressed = await tasks["progress"]
    stopped = await tasks["signal"]

    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    row = await run_row(db, run.id)
    assert (row["state"], row["terminal_reason"]) == ("stopped", f"signal:{READ}")
    if first == "progress":
        assert (progressed.kind, stopped) == ("waiting", [run.id])
        assert reasons(trail)[2:] == ["waiting_for_step_progression", "signal_received"]
    else:
        assert (progressed.kind, stopped) == ("stopped", [])
        assert reasons(trail)[2:] == ["signal_received"]


@pytest.mark.parametrize("report", ["read", "late_bounce"])
async def test_a_receipt_or_late_report_racing_a_decision_waits_instead_of_deadlocking(
    db: Database, t0: datetime, report: str
) -> None:
    # progress_run locks the run, then its delivery. A read receipt or a late provider report touches the
    # same two rows (and signals the run): it must take them in the same order, or one side deadlocks.
    run = await start(db, ESCALATION, now=t0)
    delivery = await drive(db, (await delivery_at(db, run.id, 1))["id"], "succeeded", now=t0)
    async with db.transaction() as conn:
        await store.lock_run(conn, run.id)
        if report == "read":
            racing = asyncio.create_task(
                stamp_receipt(db, delivery.id, tenant_id=TENANT, receipt="read_at", now=later(t0, seconds=1))
            )
        else:
            racing = asyncio.create_task(
                record_delivery_outcome(db, delivery.id, tenant_id=TENANT, outcome="bounced", now=later(t0, seconds=1))
            )
        await lock_waiters(db, 1)
        await store.step_delivery(conn, run.id, 1, lock=True)
    settled = await racing
    assert (settled[0] if isinstance(settled, tuple) else settled).id == delivery.id
    assert [s["name"] for s in await rows(db, t.signals)] == [
        "notification.read" if report == "read" else "delivery.bounced"
    ]


async def test_a_result_recorded_while_a_decision_waits_is_the_one_it_reads(db: Database, t0: datetime) -> None:
    # progress_run reads the latest attempt in its locked step-delivery SELECT, whose snapshot predates any wait
    # on the delivery's lock. It is fresh because a writer of attempts holds the run's lock first, as
    # record_attempt does (store.lock_delivery_and_run): the decision queues on the run and reads after it.
    run = await start(db, ESCALATION, now=t0)
    delivery_id = (await delivery_at(db, run.id, 1))["id"]
    await mark_dispatched(db, delivery_id, now=t0)
    async with db.transaction() as conn:
        delivery, _ = await store.lock_delivery_and_run(conn, delivery_id)
        deciding = asyncio.create_task(progress_run(db, run.id, now=later(t0, seconds=1)))
        await lock_waiters(db, 1)
        await apply_result(conn, delivery, SendResult("bounced", error="mailbox unknown"), now=t0, send_number=1)
    progress = await deciding
    assert progress.kind == "advanced" and progress.run.current_step == "email"
    (progressed,) = [row for row in await transitions(db, run.id) if row["reason"] == "progressed_on_delivery_outcome"]
    assert progressed["context"]["attempt_outcome"] == "bounced"
