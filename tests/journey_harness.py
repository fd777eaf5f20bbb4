"""Journeys under real Temporal: a time-skipping server, a worker with real local channel peers, a client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from peers import HttpServer, SmtpServer
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from time_skipping import StartedWorkflows, skipping_client

from tocsin import Tocsin, build_worker
from tocsin.channels import Channel, InAppChannel, SmtpChannel, WebhookChannel
from tocsin.cli.binaries import wheel_binary
from tocsin.core.models import RunDetail, workflow_id
from tocsin.db import Database
from tocsin.temporal.connect import declare_search_attributes

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], *, within: float = 20.0, what: str = "") -> T:
    """Poll `probe` until it returns something truthy. Polling never unlocks time skipping."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping server per test (about 0.1 s): its clock starts at the host's."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=wheel_binary("temporal-test-server"),
    )
    await declare_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@dataclass
class Harness:
    env: WorkflowEnvironment
    db: Database
    tocsin: Tocsin
    smtp: SmtpServer
    http: HttpServer
    started: StartedWorkflows  # the workflows self.tocsin started, awaitable with time skipping

    def handle(self, run_id: uuid.UUID) -> WorkflowHandle[Any, Any]:
        return self.env.client.get_workflow_handle(workflow_id(run_id))

    async def finish(self, run_id: uuid.UUID, tenant_id: str = "acme") -> RunDetail:
        """Let time skip until the run's workflow returns, then read the run's canonical rows."""
        await self.started.result(workflow_id(run_id))
        return await self.tocsin.get_run(run_id, tenant_id=tenant_id)

    async def until(self, run_id: uuid.UUID, predicate: Callable[[RunDetail], bool], what: str) -> RunDetail:
        async def probe() -> RunDetail | None:
            detail = await self.tocsin.get_run(run_id, tenant_id="acme")
            return detail if predicate(detail) else None

        return await eventually(probe, what=what)


@pytest.fixture
async def harness(
    time_env: WorkflowEnvironment, db: Database, smtp_server: SmtpServer, http_server: HttpServer
) -> AsyncIterator[Harness]:
    channels: dict[str, Channel] = {
        "in_app": InAppChannel(),
        "email": smtp_server.channel(),
        # A relay whose 250 is not delivery: the bounce arrives later through record_delivery_outcome.
        "email_relay": SmtpChannel("127.0.0.1", smtp_server.port, sender="tocsin@example.com", await_feedback=True),
        "webhook": WebhookChannel(http_server.url),
    }
    task_queue = f"tocsin-test-{uuid.uuid4()}"
    client, started = skipping_client(time_env)
    async with build_worker(time_env.client, db, task_queue=task_queue, channels=channels):
        yield Harness(time_env, db, Tocsin(db, client, task_queue=task_queue), smtp_server, http_server, started)
