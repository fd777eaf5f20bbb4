"""Activity errors that are not tocsin's own (a bug, corrupt data): retried for ever, never quietly.

The fault is real: the definition row of a run is made corrupt in the test's own database, so every
`progress_run` of that run fails inside the engine, as it would in production. The worker has a Database of
its own (a process of its own would), so the row is read as it is now, not from the starting side's cache.

The run is started by a client of the test's own (with the metrics runtime), not the environment's, so
awaiting its result would not skip time: the activity's retry backoff is skipped with the public
`WorkflowEnvironment.sleep` between polls instead.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest
from peers import free_port
from sqlalchemy import update
from temporalio.testing import WorkflowEnvironment

from tocsin import Tocsin, build_worker
from tocsin.activities.journey import STUCK_AFTER, STUCK_METRIC
from tocsin.channels import InAppChannel
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.logs import ContextFilter
from tocsin.settings import Settings
from tocsin.temporal.connect import connect_from_settings
from tocsin.testing import eventually

T = TypeVar("T")

# Past the longest retry interval of the journey's activities (a minute): each skip lets the next retry run.
SKIP = timedelta(minutes=1)

NOTICE: dict[str, Any] = {
    "key": "stuck_notice",
    "version": 1,
    "steps": [{"key": "notice", "channel": "in_app", "content": {"title": "Hello {{ name }}"}}],
}


def skipping(env: WorkflowEnvironment, probe: Callable[[], Awaitable[T | None]]) -> Callable[[], Awaitable[T | None]]:
    """`probe`, after moving the server's clock on by SKIP."""

    async def skip_then_probe() -> T | None:
        await env.sleep(SKIP)
        return await probe()

    return skip_then_probe


def stuck_records(caplog: pytest.LogCaptureFixture, run_id: uuid.UUID) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "tocsin.activities" and r.levelno == logging.ERROR and getattr(r, "run_id", None) == str(run_id)
    ]


def metric_value(body: str, run_id: uuid.UUID) -> tuple[str, float] | None:
    """The labels and value of the stuck-failures series of `run_id` on a Prometheus page, if it is there."""
    for line in body.splitlines():
        match = re.match(rf"{STUCK_METRIC}\{{(.*)\}} (\S+)$", line)
        if match and f'run_id="{run_id}"' in match.group(1):
            return match.group(1), float(match.group(2))
    return None


async def test_a_corrupt_definition_is_retried_reported_as_stuck_and_resumes_once_repaired(
    time_env: WorkflowEnvironment, db: Database, fresh_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = Settings(
        temporal_address=time_env.client.service_client.config.target_host, metrics_bind=f"127.0.0.1:{port}"
    )
    client = await connect_from_settings(settings)
    task_queue = f"tocsin-stuck-{uuid.uuid4()}"
    tocsin = Tocsin(db, client, task_queue=task_queue)
    record = await tocsin.register_definition(NOTICE)
    await db.definition(record.id)  # the starting side parsed it before the row went bad
    definitions = t.workflow_definitions
    async with db.transaction() as conn:
        await conn.execute(update(definitions).where(definitions.c.id == record.id).values(spec={"key": "garbled"}))
    run = await tocsin.start_run(
        workflow_key=NOTICE["key"],
        tenant_id="acme",
        recipient="user:42",
        data={"name": "Ada"},
        idempotency_key=str(uuid.uuid4()),
    )
    caplog.set_level(logging.INFO, logger="tocsin.activities")
    caplog.handler.addFilter(ContextFilter())
    worker_db = await Database.connect(fresh_db_url)

    async def reported_twice() -> list[logging.LogRecord] | None:
        stuck = stuck_records(caplog, run.id)
        return stuck if len(stuck) >= 2 else None

    async def finished() -> bool:
        return (await tocsin.get_run(run.id, tenant_id="acme")).run.state == "completed"

    async def scrape() -> tuple[str, float] | None:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
        return metric_value(response.text, run.id) if response.status_code == 200 else None

    try:
        async with build_worker(client, worker_db, task_queue=task_queue, channels={"in_app": InAppChannel()}):
            stuck = await eventually(
                skipping(time_env, reported_twice), within=60, what="two ERROR lines about the run"
            )
            labels, value = await eventually(scrape, within=10, what="the stuck metric on /metrics")
            # Reported from the STUCK_AFTER-th attempt on, once per failed attempt, and still retried.
            assert [getattr(r, "attempt", None) for r in stuck[:2]] == [STUCK_AFTER, STUCK_AFTER + 1]
            first = stuck[0]
            assert (getattr(first, "activity", None), getattr(first, "error", None)) == (
                "tocsin.progress_run",
                "ValidationError",
            )
            assert getattr(first, "workflow_id", None) == workflow_id(run.id)
            assert first.exc_info is not None and "validation error" in first.getMessage()
            assert 'activity_type="tocsin.progress_run"' in labels and 'error="ValidationError"' in labels
            assert value >= 1
            assert (await tocsin.get_run(run.id, tenant_id="acme")).run.state == "active"

            # The repair: the run resumes on its next attempt, nothing lost.
            async with db.transaction() as conn:
                await conn.execute(update(definitions).where(definitions.c.id == record.id).values(spec=record.spec))
            await eventually(skipping(time_env, finished), within=60, what="the repaired run to complete")
    finally:
        await worker_db.close()

    detail = await tocsin.get_run(run.id, tenant_id="acme")
    assert detail.run.state == "completed"
    [delivery] = detail.deliveries
    assert (delivery.status, delivery.content) == ("succeeded", {"title": "Hello Ada"})
