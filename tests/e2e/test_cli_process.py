"""The `tocsin` console script as a process: what it flushes before it leaves through os._exit.

`tocsin worker` runs against a Temporal dev server (the reconcile schedule needs one) started by the dev
stack's own code, with tracing exported over OTLP/HTTP to a small collector served here.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from peers import free_port

from tocsin import Tocsin
from tocsin.cli.devstack import temporal_dev_server
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.temporal.connect import connect_temporal
from tocsin.testing import eventually

TOCSIN = str(Path(sys.executable).parent / "tocsin")
NOTE = {"key": "traced_note", "version": 1, "steps": [{"key": "note", "channel": "in_app", "content": {"title": "hi"}}]}


@dataclass
class Collector:
    """An OTLP/HTTP trace receiver: every exported span's (service name, span name)."""

    endpoint: str
    spans: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    found: list[tuple[str, str]] = []
    reply = ExportTraceServiceResponse().SerializeToString()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = dict(
            (name.strip().lower(), value.strip()) for name, value in (h.split(":", 1) for h in head.split("\r\n")[1:-2])
        )
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                found.extend((attributes.get("service.name", ""), span.name) for span in scope.spans)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(reply)}\r\nConnection: close\r\n\r\n".encode()
            + reply
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield Collector(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", found)


@pytest.fixture
async def dev_temporal(tmp_path: Path) -> AsyncIterator[str]:
    async with temporal_dev_server(
        tmp_path / "temporal", port=free_port(), ui_port=free_port(), namespace="default"
    ) as a:
        yield a


async def test_a_traced_worker_exports_its_last_spans_when_it_stops(
    collector: Collector, dev_temporal: str, fresh_db_url: str, db: Database
) -> None:
    task_queue = f"traced-{uuid.uuid4()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {
        "TOCSIN_DATABASE_URL": fresh_db_url,
        "TEMPORAL_ADDRESS": dev_temporal,
        "TOCSIN_TASK_QUEUE": task_queue,
        "TOCSIN_OTEL_TRACING": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_SERVICE_NAME": "tocsin-traced-worker",
        # An hour between batch exports: every span the collector gets was sent by the flush at exit.
        "OTEL_BSP_SCHEDULE_DELAY": "3600000",
    }
    worker = await asyncio.create_subprocess_exec(
        TOCSIN, "worker", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert worker.stdout is not None
        started = await asyncio.wait_for(worker.stdout.readline(), 60)
        assert started.startswith(f"worker on task queue {task_queue!r}".encode()), started

        client = await connect_temporal(dev_temporal)
        tocsin = Tocsin(db, client, task_queue=task_queue)
        await tocsin.register_definition(NOTE)
        run = await tocsin.start_run(
            workflow_key="traced_note", tenant_id="acme", recipient="user:1", idempotency_key="traced-1"
        )
        await asyncio.wait_for(client.get_workflow_handle(workflow_id(run.id)).result(), 60)

        async def completed() -> bool:
            return (await tocsin.get_run(run.id, tenant_id="acme")).run.state == "completed"

        await eventually(completed, within=30, what="the journey to complete")
        assert collector.spans == []  # nothing exported yet: the spans wait in the batch processor

        worker.send_signal(signal.SIGTERM)
        _, logs = await asyncio.wait_for(worker.communicate(), 60)
        assert worker.returncode == 0, logs.decode()
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()

    # The run was started by an untraced client: the SDK makes no workflow spans without a parent span.
    names = {name for service, name in collector.spans if service == "tocsin-traced-worker"}
    assert names == {"RunActivity:tocsin.progress_run", "RunActivity:tocsin.dispatch_delivery"}, collector.spans
