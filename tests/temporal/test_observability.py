"""Observability: JSON logs that name the run and the delivery, Prometheus metrics, OpenTelemetry tracing.

The metrics and tracing tests run a real journey on the time-skipping server with a client of their own:
a Runtime with metrics (and the tracing interceptor) must exist before the client connects, so the
environment's own client cannot be used.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from peers import free_port
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tocsin import Tocsin, build_worker
from tocsin.channels import InAppChannel
from tocsin.core.errors import ConfigurationError
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.logs import (
    HANDLER_NAME,
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    bind_log_context,
    configure_logging,
    current_log_context,
    log_context,
    parse_level,
)
from tocsin.settings import Settings
from tocsin.temporal.connect import connect_from_settings
from tocsin.testing import eventually

NOTICE: dict[str, Any] = {
    "key": "observability_notice",
    "version": 1,
    "steps": [{"key": "notice", "channel": "in_app", "content": {"title": "Hello {{ name }}"}}],
}


async def run_one_journey(client: Client, db: Database) -> uuid.UUID:
    """A one-step in_app journey on `client`'s server, with a worker built from `client`; returns the run id."""
    task_queue = f"tocsin-obs-{uuid.uuid4()}"
    tocsin = Tocsin(db, client, task_queue=task_queue)
    async with build_worker(client, db, task_queue=task_queue, channels={"in_app": InAppChannel()}):
        await tocsin.register_definition(NOTICE)
        run = await tocsin.start_run(
            workflow_key=NOTICE["key"],
            tenant_id="acme",
            recipient="user:42",
            data={"name": "Ada"},
            idempotency_key=str(uuid.uuid4()),
        )
        # No timer in this journey: it finishes without time skipping.
        await client.get_workflow_handle(workflow_id(run.id)).result()
    detail = await tocsin.get_run(run.id, tenant_id="acme")
    assert detail.run.state == "completed"
    return run.id


def target_of(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


# --- logs -------------------------------------------------------------------------------------------------


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """configure_logging(json=True) into a buffer; the root logger is put back afterwards."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            if handler.get_name() == HANDLER_NAME:
                root.removeHandler(handler)
        root.setLevel(level)
        configure_text_adapters()


def configure_text_adapters() -> None:
    from temporalio import activity, workflow

    activity.logger.activity_info_on_message = True
    workflow.logger.workflow_info_on_message = True


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def record(message: str = "hello", **extra: Any) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "tocsin.test", "levelno": logging.INFO, "levelname": "INFO", "msg": message})
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_json_line_has_the_base_fields_the_context_and_the_extras() -> None:
    with log_context(run_id="r-1", delivery_id=None):
        rec = record("sent %s", channel="email", attempt=2)
        rec.args = ("it",)
        assert ContextFilter().filter(rec)
    line = json.loads(JsonFormatter().format(rec))

    assert list(line)[:4] == ["ts", "level", "logger", "message"]
    assert line["ts"].endswith("Z")
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "tocsin.test", "sent it")
    assert line["run_id"] == "r-1"
    assert "delivery_id" not in line  # None is "not known", never written
    assert (line["channel"], line["attempt"]) == ("email", 2)


def test_log_context_nests_and_resets_and_an_explicit_extra_wins() -> None:
    assert current_log_context() == {}
    run_id = uuid.uuid4()
    with log_context(run_id=run_id):
        with log_context(delivery_id="d-1"):
            assert current_log_context() == {"run_id": str(run_id), "delivery_id": "d-1"}
            rec = record(run_id="explicit")
            ContextFilter().filter(rec)
            assert (rec.run_id, rec.delivery_id) == ("explicit", "d-1")
        assert current_log_context() == {"run_id": str(run_id)}
    assert current_log_context() == {}


async def test_bind_log_context_lasts_for_the_task_only() -> None:
    import asyncio

    async def activity_like() -> dict[str, str]:
        bind_log_context(run_id="r-9")
        return current_log_context()

    assert await asyncio.create_task(activity_like()) == {"run_id": "r-9"}
    assert current_log_context() == {}


def test_a_traceback_is_one_field_of_the_same_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        rec = record("failed")
        rec.exc_info = sys.exc_info()
    text = JsonFormatter().format(rec)
    assert "\n" not in text
    assert "RuntimeError: boom" in json.loads(text)["exc"]


def test_text_lines_for_a_terminal() -> None:
    rec = record("progress", run_id="r-1", kind="advanced")
    line = TextFormatter().format(rec)
    assert line.endswith("INFO    tocsin.test progress run_id=r-1 kind=advanced")


def test_configure_logging_replaces_its_own_handler_and_rejects_unknown_levels(captured_logs: io.StringIO) -> None:
    configure_logging("debug", json=True, stream=captured_logs)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == HANDLER_NAME]
    assert len(ours) == 1
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("httpx").level == logging.WARNING
    logging.getLogger("tocsin.test").debug("one line", extra={"delivery_id": "d-7"})
    [line] = json_lines(captured_logs)
    assert (line["message"], line["delivery_id"]) == ("one line", "d-7")

    assert parse_level("warning") == logging.WARNING
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("LOUD")


def test_json_is_the_default_off_a_terminal(captured_logs: io.StringIO) -> None:
    configure_logging(stream=captured_logs)
    logging.getLogger("tocsin.test").warning("plain stream")
    assert json_lines(captured_logs)[-1]["message"] == "plain stream"


async def test_a_journey_logs_each_decision_and_each_dispatch_with_run_and_delivery_ids(
    time_env: WorkflowEnvironment, db: Database, captured_logs: io.StringIO
) -> None:
    run_id = await run_one_journey(time_env.client, db)
    detail = await Tocsin(db, time_env.client).get_run(run_id, tenant_id="acme")
    [delivery] = detail.deliveries

    lines = [line for line in json_lines(captured_logs) if line.get("run_id") == str(run_id)]
    [dispatch] = [line for line in lines if line["logger"] == "tocsin.dispatch"]
    assert dispatch["delivery_id"] == str(delivery.id)
    assert (dispatch["channel"], dispatch["attempt"], dispatch["result"], dispatch["status"]) == (
        "in_app",
        1,
        "succeeded",
        "succeeded",
    )
    assert dispatch["error"] is None
    assert dispatch["workflow_id"] == workflow_id(run_id)
    assert dispatch["activity"] == "tocsin.dispatch_delivery"

    decisions = [line for line in lines if line["logger"] == "tocsin.activities" and "kind" in line]
    assert decisions, lines
    assert all(line["activity"] == "tocsin.progress_run" for line in decisions)
    assert all(line["workflow_id"] == workflow_id(run_id) for line in decisions)
    assert decisions[-1]["kind"] == "completed"
    assert {"reason", "state", "step"} <= set(decisions[-1])
    # Nothing personal: the recipient and the rendered content never reach the logs.
    assert "user:42" not in captured_logs.getvalue()
    assert "Hello Ada" not in captured_logs.getvalue()


# --- metrics ----------------------------------------------------------------------------------------------


async def test_the_worker_exposes_temporal_sdk_metrics_for_prometheus(
    time_env: WorkflowEnvironment, db: Database
) -> None:
    port = free_port()
    settings = Settings(temporal_address=target_of(time_env), metrics_bind=f"127.0.0.1:{port}")
    client = await connect_from_settings(settings)

    await run_one_journey(client, db)

    async def scrape() -> str | None:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
        body = response.text if response.status_code == 200 else ""
        return body if "temporal_workflow_completed" in body else None

    body = await eventually(scrape, within=10, what="workflow metrics on the Prometheus endpoint")
    names = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line and not line.startswith("#")}
    for expected in (
        "temporal_workflow_completed",
        # The journey's one step is in_app: its decisions and its send all run as local activities.
        "temporal_local_activity_execution_latency_bucket",
        "temporal_workflow_task_execution_latency_bucket",
        "temporal_request",
    ):
        assert expected in names, sorted(names)
    assert 'task_queue="tocsin-obs-' in body


async def test_connect_from_settings_needs_an_address() -> None:
    with pytest.raises(ConfigurationError, match="TEMPORAL_ADDRESS"):
        await connect_from_settings(Settings(temporal_address=None))


# --- tracing ----------------------------------------------------------------------------------------------


async def test_tracing_spans_cover_the_client_the_workflow_and_the_activities(
    time_env: WorkflowEnvironment, db: Database
) -> None:
    # The otel extra is part of `.[dev]`: a missing package fails this test rather than skipping it.
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from temporalio.contrib.opentelemetry import TracingInterceptor

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        # A process that set up OpenTelemetry itself is left alone by tocsin: this test is such a process.
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    client = await connect_from_settings(Settings(temporal_address=target_of(time_env), otel_tracing=True))
    assert any(isinstance(i, TracingInterceptor) for i in client.config()["interceptors"])
    assert trace.get_tracer_provider() is provider

    run_id = await run_one_journey(client, db)

    names = {span.name for span in exporter.get_finished_spans()}
    assert "StartWorkflow:JourneyWorkflow" in names
    # The worker was given no interceptor: it inherited the client's.
    assert "RunWorkflow:JourneyWorkflow" in names
    assert {"RunActivity:tocsin.progress_run", "RunActivity:tocsin.dispatch_delivery"} <= names
    started = [s for s in exporter.get_finished_spans() if s.name == "StartWorkflow:JourneyWorkflow"]
    assert any((s.attributes or {}).get("temporalWorkflowID") == workflow_id(run_id) for s in started)
