"""A worker SIGKILLed mid-send, on the dev server: a second worker takes the sends over (issue 8).

The provider is a local HTTP server that records each request's `Idempotency-Key` and holds the first
request of every delivery until the worker sending it is killed. The dispatch activity heartbeats, so
Temporal notices the dead worker after its heartbeat timeout (not the start-to-close one) and the retry
resends each delivery, under the same key, from the second worker. The recovery time (kill -> the resend
reaching the provider) is printed, not asserted: `pytest -s tests/reliability/test_worker_kill.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tocsin import Tocsin
from tocsin.cli.binaries import wheel_binary
from tocsin.core import contracts as c
from tocsin.core.models import RunDetail
from tocsin.db import Database
from tocsin.testing import eventually

RUNS = 4
HOOK_THEN_NOTE = {
    "key": "hook_then_note",
    "version": 1,
    "steps": [
        {
            "key": "hook",
            "channel": "webhook",
            "content": {"event": "invoice.overdue"},
            "progress": [{"kind": "wait_until", "delay": "PT1S", "to_step": "note"}],
        },
        {"key": "note", "channel": "in_app", "content": {"title": "sent"}},
    ],
}


@dataclass
class Provider:
    """Records (arrival, Idempotency-Key) of each request; holds every first one until `killed` is set."""

    url: str = ""
    received: list[tuple[float, str]] = field(default_factory=list)
    killed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = dict(line.split(": ", 1) for line in head.strip().split("\r\n")[1:])
        headers = {name.lower(): value for name, value in headers.items()}
        await reader.readexactly(int(headers.get("content-length", "0")))
        key = headers["idempotency-key"]
        self.received.append((time.monotonic(), key))
        if not self.killed.is_set():
            await self.killed.wait()  # its sender dies meanwhile: nobody reads the answer
        body = json.dumps({"id": f"msg-{key}"}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    def keys(self) -> set[str]:
        return {key for _, key in self.received}


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    provider = Provider()
    server = await asyncio.start_server(provider.handle, "127.0.0.1", 0)
    provider.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    async with server:
        yield provider
        provider.killed.set()


async def start_worker(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).parents[2] / "worker.py"),
        env=env, stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


def assert_whole(detail: RunDetail) -> None:
    assert detail.run.state == "completed", detail.run
    assert [d.activation for d in detail.deliveries] == [1, 2]
    assert [d.status for d in detail.deliveries] == ["succeeded", "succeeded"]
    assert [t.seq for t in detail.transitions] == list(range(1, len(detail.transitions) + 1))


async def test_a_worker_killed_mid_send_is_replaced_and_every_send_resent_under_its_key(
    db: Database, fresh_db_url: str, provider: Provider, tmp_path: Path
) -> None:
    temporal = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=wheel_binary("temporal"),
        search_attributes=c.SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--ui-disable-news-fetch"],
    )
    task_queue = f"tocsin-kill-{uuid.uuid4()}"
    env = dict(os.environ) | {
        "TOCSIN_DATABASE_URL": fresh_db_url,
        "TEMPORAL_ADDRESS": temporal.client.service_client.config.target_host,
        "TOCSIN_TASK_QUEUE": task_queue,
        "TOCSIN_WEBHOOK_URL": provider.url,
    }
    workers: list[asyncio.subprocess.Process] = []
    try:
        tocsin = Tocsin(db, temporal.client, task_queue=task_queue)
        await tocsin.register_definition(HOOK_THEN_NOTE)
        workers.append(await start_worker(env, tmp_path / "worker-1.log"))
        runs = [
            await tocsin.start_run(
                workflow_key="hook_then_note", tenant_id="acme", recipient=f"user:{i}", idempotency_key=f"kill-{i}"
            )
            for i in range(RUNS)
        ]

        async def all_held() -> bool:
            return len(provider.keys()) == RUNS

        await eventually(all_held, within=60, what="every run's first send to reach the provider")
        workers[0].send_signal(signal.SIGKILL)
        await workers[0].wait()
        killed_at = time.monotonic()
        provider.killed.set()
        workers.append(await start_worker(env, tmp_path / "worker-2.log"))

        async def finished() -> list[RunDetail] | None:
            details = [await tocsin.get_run(run.id, tenant_id="acme") for run in runs]
            return details if all(d.run.finished for d in details) else None

        details = await eventually(finished, within=120, what="every run to finish on the second worker")
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        await temporal.shutdown()

    for detail in details:
        assert_whole(detail)
    hooks = {str(detail.deliveries[0].id): detail.deliveries[0] for detail in details}
    # Every request carried a delivery's own key; each delivery was sent once before the kill, again after it.
    assert provider.keys() == set(hooks)
    before = sorted(key for at, key in provider.received if at < killed_at)
    after = sorted(key for at, key in provider.received if at >= killed_at)
    assert before == sorted(hooks) and after == sorted(hooks)
    assert all(hook.attempt_count == 1 for hook in hooks.values())  # a resend, not a new attempt
    recovery = sorted(at - killed_at for at, _ in provider.received if at >= killed_at)
    print(f"\nrecovery after SIGKILL: first resend {recovery[0]:.1f} s, last {recovery[-1]:.1f} s ({RUNS} sends)")
