"""Starting a run's Temporal workflow, once the run is committed in Postgres (SPEC 6, Starting)."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from tocsin.core import contracts as c
from tocsin.core.models import Run, workflow_id
from tocsin.db import Database
from tocsin.engine.runs import mark_workflow_started


def search_attributes(run: Run) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [SearchAttributePair(key, value) for key, value in c.search_attribute_values(run) if value is not None]
    )


def run_summary(run: Run, first_step: str) -> str:
    """The line the Web UI shows for a run's workflow. Keys and ids only: never the recipient or the data."""
    return f"{run.workflow_key} v{run.workflow_version} · tenant {run.tenant_id} · first step {first_step}"


def run_details(run: Run, first_step: str) -> str:
    """The workflow's fixed details, in Temporal markdown; what changes is in its current details."""
    lines = [
        f"**run** `{run.id}`",
        f"**journey** `{run.workflow_key}` version {run.workflow_version}",
        f"**tenant** `{run.tenant_id}`",
        f"**first step** `{first_step}`",
        f"the whole timeline: `tocsin runs show {run.id} --tenant {run.tenant_id}`",
    ]
    return "  \n".join(lines)


async def start_journey(client: Client, db: Database, run: Run, *, task_queue: str) -> None:
    """Start (or find) the run's workflow, then record that it was started.

    USE_EXISTING makes a repeated start (a retried start_run, the reconcile sweep) find the running
    workflow instead of failing or starting a twin; a closed one is started again (the sweep restarting a
    failed workflow). If the process dies between the two steps, the run keeps workflow_started = false and
    the reconcile sweep starts it again, harmlessly.
    """
    first_step = (await db.definition(run.definition_id)).first_step.key
    await start_or_find(
        client,
        run.id,
        task_queue=task_queue,
        search_attributes=search_attributes(run),
        static_summary=run_summary(run, first_step),
        static_details=run_details(run, first_step),
    )
    await mark_workflow_started(db, run.id)


async def start_or_find(client: Client, run_id: uuid.UUID, *, task_queue: str, **options: Any) -> None:
    """The one way tocsin starts a JourneyWorkflow: its id from the run, its only argument the run id."""
    await client.start_workflow(
        c.JOURNEY_WORKFLOW,
        str(run_id),
        id=workflow_id(run_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        **options,
    )


async def notify_journey(client: Client, run: Run, *, task_queue: str) -> None:
    """After a change made outside the workflow: wake an unfinished run's workflow (starting it again if it
    was lost); for a finished run, just let a still-sleeping workflow notice, so its timer goes away."""
    if not run.finished:
        await wake_journey(client, run.id, task_queue=task_queue)
        return
    try:
        await client.get_workflow_handle(workflow_id(run.id)).signal(c.WAKE_SIGNAL)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:  # already closed: nothing left to wake
            raise


async def wake_journey(client: Client, run_id: uuid.UUID, *, task_queue: str) -> None:
    """Tell a run's workflow that its rows changed; a run whose workflow never started is started.

    Signal-with-start: the hint reaches the running workflow (USE_EXISTING never makes a twin), or starts one
    where the id has no execution yet. A closed one (an operator's Terminate, a failure) is not started again
    (REJECT_DUPLICATE): that is the reconcile sweep's to decide, which stops a terminated one's run and restarts a
    failed one. Only call it for runs that are not finished.
    """
    try:
        await start_or_find(
            client,
            run_id,
            task_queue=task_queue,
            start_signal=c.WAKE_SIGNAL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass  # closed: the rows keep the change, and the reconcile sweep settles the run
