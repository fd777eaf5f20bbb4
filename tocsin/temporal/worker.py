"""Building and running a tocsin worker (SPEC 6, 7). The only place tocsin imports workflows/activities."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from tocsin.activities import JourneyActivities, ReconcileActivities
from tocsin.channels import Channel, SmtpChannel, WebhookChannel, builtin_channels
from tocsin.core import contracts as c
from tocsin.db import Database
from tocsin.engine.dispatch import Policy
from tocsin.settings import Settings
from tocsin.workflows import JourneyWorkflow, ReconcileWorkflow

log = logging.getLogger("tocsin.temporal.worker")

# Workflow code imports only tocsin's pure core (tocsin.core), imported once, outside the sandbox (it does no
# I/O and holds no workflow state). Nothing else of tocsin is let through, so workflow code cannot reach I/O.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("tocsin.core", "pydantic", "jinja2", "yaml")
)


def build_worker(
    client: Client,
    db: Database,
    *,
    task_queue: str = c.DEFAULT_TASK_QUEUE,
    channels: Mapping[str, Channel] | None = None,
    policy: Policy | None = None,
    max_concurrent_activities: int = 100,
) -> Worker:
    """A worker for journeys and the reconcile sweep. It never touches schedules: see ensure_reconcile_schedule."""
    journey = JourneyActivities(db, channels if channels is not None else builtin_channels(), policy=policy)
    reconcile = ReconcileActivities(db, client, task_queue=task_queue)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[JourneyWorkflow, ReconcileWorkflow],
        activities=[*journey.all(), reconcile.reconcile],
        workflow_runner=SANDBOX,
        max_concurrent_activities=max_concurrent_activities,
    )


async def ensure_reconcile_schedule(
    client: Client, *, task_queue: str = c.DEFAULT_TASK_QUEUE, grace_seconds: int = 120
) -> bool:
    """Create the every-minute reconcile schedule if it is missing. Returns True if it was created."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            c.RECONCILE_WORKFLOW,
            grace_seconds,
            id=f"{c.RECONCILE_SCHEDULE_ID}-tick",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=1))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(c.RECONCILE_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        return False
    log.info("created the reconcile schedule %s", c.RECONCILE_SCHEDULE_ID)
    return True


async def until_signalled() -> None:
    """Return on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_until_signalled(worker: Worker) -> None:
    """Run the worker until SIGINT/SIGTERM, then shut down gracefully (in-flight activities finish)."""
    async with worker:
        await until_signalled()
        log.info("shutting down the worker")


def channels_from_settings(settings: Settings) -> dict[str, Channel]:
    """The built-in adapters configured from TOCSIN_SMTP_* and TOCSIN_WEBHOOK_URL; email prints without SMTP."""
    smtp = (
        SmtpChannel(
            settings.smtp_host,
            settings.smtp_port,
            sender=settings.smtp_sender,
            username=settings.smtp_username,
            password=settings.smtp_password,
            start_tls=settings.smtp_start_tls,
        )
        if settings.smtp_host
        else None
    )
    webhook = WebhookChannel(settings.webhook_url) if settings.webhook_url else None
    return builtin_channels(smtp=smtp, webhook=webhook)
