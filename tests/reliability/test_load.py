"""Load: N journeys on the dev server with two `python worker.py` processes; 0 lost, 0 duplicated (issue 8).

Each journey is an in-app message, a one-second wait (a durable timer), then a webhook to a local HTTP provider
that records every request's Idempotency-Key. Lost: a run that does not complete. Duplicated: a second
delivery for an activation, a second attempt, a second completion, or a second request under one key.

N is TOCSIN_LOAD_JOURNEYS (default sized for CI's two shared cores); the time and the throughput are printed,
never asserted (`-s` to see them). The issue's 1 000:
`TOCSIN_LOAD_JOURNEYS=1000 .venv/bin/pytest -s -p no:cacheprovider tests/reliability/test_load.py`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from peers import HttpServer
from stack import assert_once_through, run_states, start_runs, temporal_in_memory, workers
from temporalio.client import Client

from tocsin import Tocsin
from tocsin.core import contracts as c
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.testing import eventually

JOURNEYS = int(os.environ.get("TOCSIN_LOAD_JOURNEYS", "40"))
NOTE_THEN_HOOK = {
    "key": "note_then_hook",
    "version": 1,
    "steps": [
        {
            "key": "note",
            "channel": "in_app",
            "content": {"title": "invoice {{ n }} is due"},
            "progress": [{"kind": "wait_until", "delay": "PT1S", "to_step": "hook"}],
        },
        {"key": "hook", "channel": "webhook", "content": {"event": "invoice.due", "n": "{{ n }}"}},
    ],
}


async def completed_executions(client: Client, task_queue: str) -> Counter[str] | None:
    """The journeys' executions on the task queue by status, once visibility lists none of them as running."""
    query = f'TaskQueue = "{task_queue}" AND WorkflowType = "{c.JOURNEY_WORKFLOW}"'
    found = Counter([w.status.name if w.status else "" async for w in client.list_workflows(query)])
    return found if "RUNNING" not in found else None


@pytest.mark.slow
async def test_n_journeys_on_two_workers_none_lost_none_duplicated(
    db: Database, fresh_db_url: str, http_server: HttpServer, tmp_path: Path
) -> None:
    async with temporal_in_memory() as client:
        address = client.service_client.config.target_host
        async with workers(
            2, database_url=fresh_db_url, address=address, logs=tmp_path, TOCSIN_WEBHOOK_URL=http_server.url
        ) as (task_queue, _):
            tocsin = Tocsin(db, client, task_queue=task_queue)
            await tocsin.register_definition(NOTE_THEN_HOOK)
            began = time.monotonic()
            run_ids = await start_runs(tocsin, "note_then_hook", JOURNEYS, prefix="load")
            started = time.monotonic()

            async def all_completed() -> bool:
                return (await run_states(db, run_ids)).get("completed", 0) == JOURNEYS

            # A bound, not a timing assertion (wide: the machine may be busy): a lost journey would wait for ever.
            try:
                await eventually(all_completed, within=120 + JOURNEYS * 2, what=f"{JOURNEYS} journeys to complete")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; runs by state: {await run_states(db, run_ids)}") from None
            done = time.monotonic()
            # The rows say completed once the last decision committed; its workflow returns just after.
            results = await asyncio.gather(*(client.get_workflow_handle(workflow_id(r)).result() for r in run_ids))
            executions = await eventually(
                lambda: completed_executions(client, task_queue), what="every execution to be listed as completed"
            )

    elapsed = done - began
    print(
        f"\n{JOURNEYS} journeys on 2 workers: started in {started - began:.1f} s, all completed after {elapsed:.1f} s"
        f" ({JOURNEYS / elapsed:.1f} journeys/s, {2 * JOURNEYS / elapsed:.1f} deliveries/s)"
    )
    assert len(set(run_ids)) == JOURNEYS
    hooks = []
    for run_id in run_ids:
        detail = await tocsin.get_run(run_id, tenant_id="acme")
        assert_once_through(detail, ["note", "hook"])
        hooks.append(str(detail.deliveries[1].id))
    # Every webhook reached the provider exactly once, under its own delivery's key.
    keys = Counter(request.headers["idempotency-key"] for request in http_server.received)
    assert keys == Counter(hooks)
    # One workflow execution per run, each completed once.
    assert [result["state"] for result in results] == ["completed"] * JOURNEYS
    assert executions == Counter({"COMPLETED": JOURNEYS}), executions
