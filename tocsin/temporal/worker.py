"""Building and running a tocsin worker (SPEC 6, 7). The only place tocsin imports workflows/activities."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Mapping
from datetime import timedelta
from typing import Literal

from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import PollerBehavior, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from tocsin.activities import JourneyActivities, ReconcileActivities
from tocsin.channels import Channel, SmtpChannel, WebhookChannel, builtin_channels
from tocsin.core import contracts as c
from tocsin.db import Database
from tocsin.engine.dispatch import Policy
from tocsin.settings import DEFAULT_MAX_CACHED_WORKFLOWS, DEFAULT_MAX_CONCURRENT_TASKS, DEFAULT_POLLERS, Settings
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
    max_cached_workflows: int = DEFAULT_MAX_CACHED_WORKFLOWS,
    max_concurrent_workflow_tasks: int = DEFAULT_MAX_CONCURRENT_TASKS,
    max_concurrent_activities: int = DEFAULT_MAX_CONCURRENT_TASKS,
    max_concurrent_local_activities: int = DEFAULT_MAX_CONCURRENT_TASKS,
    workflow_task_poller_behavior: PollerBehavior = DEFAULT_POLLERS,
    activity_task_poller_behavior: PollerBehavior = DEFAULT_POLLERS,
) -> Worker:
    """A worker for journeys and the reconcile sweep. It never touches schedules: see ensure_reconcile_schedule.

    The tuning options are the SDK worker's (`tocsin worker` reads them from TOCSIN_WORKER_*, see
    tocsin.settings.WorkerTuning). `max_cached_workflows` bounds the memory: a cached waiting run costs the
    worker's RSS (bench/RESULTS.md, "Issue 14 goal 4"); an evicted one is replayed from its history when it wakes.
    """
    journey = JourneyActivities(db, channels if channels is not None else builtin_channels(), policy=policy)
    reconcile = ReconcileActivities(db, client, task_queue=task_queue)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[JourneyWorkflow, ReconcileWorkflow],
        activities=[*journey.all(), reconcile.reconcile],
        workflow_runner=SANDBOX,
        max_cached_workflows=max_cached_workflows,
        max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
        max_concurrent_activities=max_concurrent_activities,
        max_concurrent_local_activities=max_concurrent_local_activities,
        workflow_task_poller_behavior=workflow_task_poller_behavior,
        activity_task_poller_behavior=activity_task_poller_behavior,
    )


ScheduleChange = Literal["created", "updated", "unchanged"]


def reconcile_schedule_id(task_queue: str) -> str:
    """One schedule per task queue: a second deployment in the namespace (another queue) gets its own sweep."""
    return f"{c.RECONCILE_SCHEDULE_ID}-{task_queue}"


async def ensure_reconcile_schedule(
    client: Client,
    *,
    task_queue: str = c.DEFAULT_TASK_QUEUE,
    grace_seconds: int = 120,
    interval: timedelta = timedelta(minutes=1),
) -> ScheduleChange:
    """Create the task queue's reconcile schedule, or update it if its grace period, task queue or interval
    differ from these. An operator's pause and note are kept."""
    schedule_id = reconcile_schedule_id(task_queue)
    wanted = Schedule(
        action=ScheduleActionStartWorkflow(
            c.RECONCILE_WORKFLOW, grace_seconds, id=f"{schedule_id}-tick", task_queue=task_queue
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    change = await _create_or_update(client, schedule_id, wanted)
    # After the queue's own schedule exists: the queue is never left without a sweep.
    await retire_the_shared_schedule(client, task_queue)
    if change != "unchanged":
        log.info("%s the reconcile schedule %s (grace %ss, every %s)", change, schedule_id, grace_seconds, interval)
    return change


async def _create_or_update(client: Client, schedule_id: str, wanted: Schedule) -> ScheduleChange:
    try:
        await client.create_schedule(schedule_id, wanted)
        return "created"
    except ScheduleAlreadyRunningError:
        pass
    updated = False

    async def differing(current: ScheduleUpdateInput) -> ScheduleUpdate | None:
        nonlocal updated
        existing = current.description.schedule
        updated = await reconcile_terms(client, existing) != await reconcile_terms(client, wanted)
        return ScheduleUpdate(schedule=dataclasses.replace(wanted, state=existing.state)) if updated else None

    await client.get_schedule_handle(schedule_id).update(differing)
    return "updated" if updated else "unchanged"


async def reconcile_terms(client: Client, schedule: Schedule) -> tuple[object, ...]:
    """What ensure_reconcile_schedule sets, comparable between a described schedule (raw payloads) and a new one."""
    action = schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow):
        return (type(action).__name__,)
    args = list(action.args)
    if args and all(isinstance(arg, Payload) for arg in args):
        args = await client.data_converter.decode(args)
    intervals = [(spec.every, spec.offset or timedelta(0)) for spec in schedule.spec.intervals]
    return (action.workflow, action.id, action.task_queue, args, intervals, schedule.policy.overlap)


async def retire_the_shared_schedule(client: Client, task_queue: str) -> None:
    """Delete `tocsin-reconcile`, the one schedule earlier versions shared between all the task queues of a
    namespace (it swept only the queue that created it), once it is this queue's: this queue has its own now."""
    handle = client.get_schedule_handle(c.RECONCILE_SCHEDULE_ID)
    try:
        action = (await handle.describe()).schedule.action
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return
        raise
    if isinstance(action, ScheduleActionStartWorkflow) and action.task_queue == task_queue:
        await handle.delete()
        log.info("deleted the shared reconcile schedule %s: task queue %r has its own", handle.id, task_queue)


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
    """The built-in adapters configured from TOCSIN_SMTP_* and TOCSIN_WEBHOOK_URL; email prints without SMTP.

    The webhook adapter is always there: without TOCSIN_WEBHOOK_URL it posts to each step's content `url`
    (a step without one fails `webhook_url_missing`).
    """
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
    return builtin_channels(smtp=smtp, webhook=WebhookChannel(settings.webhook_url))
