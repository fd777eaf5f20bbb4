"""The Temporal dev server stopped and started again on its database file while runs wait (issue 8).

Runs wait on durable timers; the server goes down (SIGTERM), stays down until some of those timers are past due,
and comes back on the same file (on another port: the worker and the clients dial a forwarder, faults.py).
The worker process stays up throughout. Timers that fell due during
the outage fire once the server is back, the others on time, and every run finishes exactly once. The reconcile
sweep is told to leave the runs alone (a day of grace), so it is the workflows' own timers that fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from faults import forwarder
from peers import free_port
from stack import assert_once_through, client_of, run_states, start_runs, temporal_on_file, workers

from tocsin import Tocsin
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.testing import eventually

RUNS_PER_WAIT = 3


def note_then_email(key: str, delay: str) -> dict[str, Any]:
    return {
        "key": key,
        "version": 1,
        "steps": [
            {
                "key": "note",
                "channel": "in_app",
                "content": {"title": "invoice {{ n }}"},
                "progress": [{"kind": "wait_until", "delay": delay, "to_step": "email"}],
            },
            {"key": "email", "channel": "email", "content": {"subject": "invoice {{ n }} is overdue"}},
        ],
    }


# Due while the server is down; due after it is back.
DUE_IN_OUTAGE = note_then_email("due_in_outage", "PT10S")
DUE_AFTER = note_then_email("due_after", "PT40S")


async def executions(address: str, run_ids: list[uuid.UUID]) -> Counter[str]:
    client = await client_of(address)
    found: Counter[str] = Counter()
    for run_id in run_ids:
        async for execution in client.list_workflows(f'WorkflowId = "{workflow_id(run_id)}"'):
            found[execution.status.name if execution.status else ""] += 1
    return found


@pytest.mark.slow
async def test_timers_fire_after_the_temporal_server_restarts_on_its_database_file(
    db: Database, fresh_db_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "temporal"
    async with forwarder() as temporal, contextlib.AsyncExitStack() as restarted:
        first = contextlib.AsyncExitStack()
        try:
            temporal.point_at(await first.enter_async_context(temporal_on_file(root, free_port())))
            address = temporal.address
            async with workers(
                1, database_url=fresh_db_url, address=address, logs=tmp_path, TOCSIN_RECONCILE_GRACE_SECONDS="86400"
            ) as (task_queue, _):
                tocsin = Tocsin(db, await client_of(address), task_queue=task_queue)
                for spec in (DUE_IN_OUTAGE, DUE_AFTER):
                    await tocsin.register_definition(spec)
                soon = await start_runs(tocsin, "due_in_outage", RUNS_PER_WAIT, prefix="soon")
                later = await start_runs(tocsin, "due_after", RUNS_PER_WAIT, prefix="later")
                every = soon + later

                async def all_waiting() -> bool:
                    return await run_states(db, every) == {"waiting": len(every)}

                await eventually(all_waiting, within=60, what="every run to wait on its timer")
                await first.aclose()
                temporal.point_at(None)

                # Down until the short timers are past due (and a little more): nothing moves meanwhile.
                soon_due = max([(await tocsin.get_run(r, tenant_id="acme")).run.due_at for r in soon])
                assert soon_due is not None
                await asyncio.sleep((soon_due - datetime.now(UTC)).total_seconds() + 3)
                assert await run_states(db, every) == {"waiting": len(every)}

                temporal.point_at(await restarted.enter_async_context(temporal_on_file(root, free_port())))
                back_at = datetime.now(UTC)

                async def all_completed() -> bool:
                    return await run_states(db, every) == {"completed": len(every)}

                await eventually(all_completed, within=120, what="every run to complete after the restart")

                # The run row settles in the last activity; its execution closes a moment later.
                async def all_closed() -> bool:
                    return "RUNNING" not in await executions(address, every)

                await eventually(all_closed, within=30, what="every execution to close")
                found = await executions(address, every)
        finally:
            await first.aclose()

    assert found == Counter({"COMPLETED": len(every)}), found  # one execution each, completed once
    for run_id in every:
        detail = await tocsin.get_run(run_id, tenant_id="acme")
        assert_once_through(detail, ["note", "email"])
        (woke,) = [tr for tr in detail.transitions if tr.reason == "reactivated_from_wait"]
        due = datetime.fromisoformat(woke.context["due_at"])
        if run_id in soon:
            # Due before the server was back (during the outage, or as it went down): fired once it was back.
            assert due < back_at
            assert woke.created_at >= back_at
        else:
            assert back_at < due <= woke.created_at


@pytest.mark.slow
async def test_the_dev_server_comes_back_on_the_port_it_just_left(fresh_db_url: str, tmp_path: Path) -> None:
    """`tocsin dev`'s Temporal stopped and started again at once on its port, a worker still long-polling it.

    The connections the server closes as it stops leave its port in TIME_WAIT for a minute; Temporal itself
    listens on it again at once (SO_REUSEADDR), so the dev stack's check that the port is free must not refuse
    it meanwhile.
    """
    root, port = tmp_path / "temporal", free_port()
    async with contextlib.AsyncExitStack() as restarted:
        first = contextlib.AsyncExitStack()
        try:
            address = await first.enter_async_context(temporal_on_file(root, port))
            async with workers(1, database_url=fresh_db_url, address=address, logs=tmp_path):
                await first.aclose()
                address = await restarted.enter_async_context(temporal_on_file(root, port))
                assert (await (await client_of(address)).count_workflows()).count >= 0
        finally:
            await first.aclose()
