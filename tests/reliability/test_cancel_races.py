"""Cancel signals racing due waits (SPEC 4.2, 4.7, 4.9): each run is either stopped by the signal with no next
delivery, or advanced past its wait with the signal left unheard; never both, and its trail says which.

The gated races make the two transactions truly overlap on real connections: the test holds the audit trail's
table lock, so the first party takes the run's row lock and then stops at its first transition insert, still in
flight; the second then queues on the run's lock (a signal, progress_run) or, a sweeper, skips the run it holds
(SKIP LOCKED). pg_stat_activity shows both waiting before the gate opens. The ungated round throws everything at
once at many runs: signals, progress_run calls and two sweepers.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from db.test_concurrency import lock_waiters
from journeys import assert_seq_contiguous, deliveries, escalation_waiting, later, reasons, run_row, transitions
from sqlalchemy import text

from tocsin.core.models import Progress
from tocsin.db import Database
from tocsin.engine import progress_due_runs, progress_run, route_signal

TENANT = "acme"
READ = "notification.read"
RUNS_PER_ORDER = 6
SWARM = 30

WAITED = ["workflow_started", "step_activated", "waiting_for_step_progression"]
STOPPED_TRAIL = [*WAITED, "signal_received"]
ADVANCED_TRAIL = [*WAITED, "reactivated_from_wait", "step_activated"]


@pytest.fixture
async def sweeper_db(fresh_db_url: str) -> AsyncIterator[Database]:
    """A second handle on the test's database: a sweeper in another process."""
    other = await Database.connect(fresh_db_url, pool_size=3, max_overflow=0)
    try:
        yield other
    finally:
        await other.close()


async def settled(db: Database, run_id: uuid.UUID) -> str:
    """'stopped' or 'advanced', read from the rows alone; fails on anything else (both, or neither)."""
    row = await run_row(db, run_id)
    trail = await transitions(db, run_id)
    assert_seq_contiguous(trail)
    found = await deliveries(db, run_id)
    if row["state"] == "stopped":
        assert (row["status_reason"], row["terminal_reason"], row["due_at"]) == (
            "stopped_by_signal",
            f"signal:{READ}",
            None,
        )
        assert reasons(trail) == STOPPED_TRAIL
        assert trail[-1]["from_state"] == "waiting"
        assert [d["step_key"] for d in found] == ["in_app"]  # no next delivery
        return "stopped"
    assert (row["state"], row["current_step"], row["step_activation"], row["pending_signals"]) == (
        "active",
        "email",
        2,
        [],
    )
    assert reasons(trail) == ADVANCED_TRAIL
    assert [(d["step_key"], d["status"]) for d in found] == [("in_app", "succeeded"), ("email", "pending")]
    return "advanced"


async def overlapping(
    db: Database, first: Callable[[], Awaitable[Any]], second: Callable[[], Awaitable[Any]], *, second_queues: bool
) -> tuple[Any, Any]:
    """Start `first`, let it take the run and stop mid-transaction, then start `second` against it."""
    async with db.transaction() as gate:
        await gate.execute(text("LOCK TABLE tocsin.workflow_transitions IN EXCLUSIVE MODE"))
        one = asyncio.create_task(first())
        await lock_waiters(db, 1)  # holding the run's row lock, blocked on its first transition insert
        two = asyncio.create_task(second())
        if second_queues:
            await lock_waiters(db, 2)  # queued on the run's lock behind `first`
        else:
            await two  # a sweeper skips the run `first` holds, while `first` is in flight
        assert not one.done()
    return await one, await two


def signal_for(db: Database, run_id: uuid.UUID, recipient: str, index: int, at: datetime) -> Callable[[], Any]:
    # Half of the signals name the run, half go to every run of its recipient (each run has its own).
    target = run_id if index % 2 else None
    return lambda: route_signal(db, TENANT, recipient, READ, now=at, run_id=target)


@pytest.mark.parametrize("first", ["signal", "progress_run", "sweep"])
async def test_a_cancel_signal_and_a_due_wait_overlapping(
    db: Database, sweeper_db: Database, t0: datetime, first: str
) -> None:
    runs = []
    for i in range(RUNS_PER_ORDER):
        run, _ = await escalation_waiting(db, now=later(t0, minutes=i), recipient=f"user:{first}-{i}", tenant_id=TENANT)
        runs.append(run)

    for i, run in enumerate(runs):
        assert run.due_at is not None
        at = run.due_at  # due now, and the later runs are not due yet: only this run is in play
        signal = signal_for(db, run.id, run.recipient, i, at)
        if first == "signal":
            # The signal stops the waiting run; the due progress then finds it finished (or a sweeper skips it).
            if i % 2:
                stopped, progress = await overlapping(
                    db, signal, lambda run=run, at=at: progress_run(db, run.id, now=at), second_queues=True
                )
                assert (progress.kind, progress.reason) == ("noop", "run_not_active")
            else:
                stopped, swept = await overlapping(
                    db, signal, lambda at=at: progress_due_runs(sweeper_db, now=at), second_queues=False
                )
                assert swept == []
            assert stopped == [run.id]
            assert await settled(db, run.id) == "stopped"
            assert await progress_due_runs(sweeper_db, now=at) == []
        else:
            # The due wait advances first; the signal then finds an active run that no longer listens.
            def progress(run: Any = run, at: datetime = at) -> Awaitable[Any]:
                if first == "progress_run":
                    return progress_run(db, run.id, now=at)
                return progress_due_runs(sweeper_db, now=at)

            result, stopped = await overlapping(db, progress, signal, second_queues=True)
            advanced: list[Progress] = [result] if first == "progress_run" else result
            assert [(p.kind, p.run.id) for p in advanced] == [("advanced", run.id)]
            assert stopped == []
            assert await settled(db, run.id) == "advanced"


async def test_many_signals_and_sweeps_racing_due_waits_settle_each_run_once(
    db: Database, sweeper_db: Database, t0: datetime
) -> None:
    runs = [
        (await escalation_waiting(db, now=t0, recipient=f"user:swarm-{i}", tenant_id=TENANT))[0] for i in range(SWARM)
    ]
    at = later(t0, hours=2)
    calls: list[tuple[str, Awaitable[Any]]] = [
        *(("signal", signal_for(db, run.id, run.recipient, i, at)()) for i, run in enumerate(runs)),
        *(("progress_run", progress_run(db, run.id, now=at)) for run in runs[::3]),
        ("sweep", progress_due_runs(db, now=at)),
        ("sweep", progress_due_runs(sweeper_db, now=at)),
    ]
    random.Random(8).shuffle(calls)  # no kind of call gets a head start
    results = await asyncio.gather(*(call for _, call in calls))

    stopped_by_signals: list[uuid.UUID] = []
    decided: list[Progress] = []
    for (kind, _), result in zip(calls, results, strict=True):
        if kind == "signal":
            stopped_by_signals += result
        elif kind == "progress_run":
            decided += [result] if result.kind != "noop" else []
        else:
            decided += result
    outcome = {run.id: await settled(db, run.id) for run in runs}

    assert sorted(stopped_by_signals) == sorted(r for r, o in outcome.items() if o == "stopped")
    assert len(stopped_by_signals) == len(set(stopped_by_signals))
    assert {p.kind for p in decided} <= {"advanced"}
    assert sorted(p.run.id for p in decided) == sorted(r for r, o in outcome.items() if o == "advanced")
    assert await progress_due_runs(db, now=at) == []
