"""The reconcile activity: the safety net for lost workflow starts, lost timers and closed workflows (SPEC 6, 14)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable
from datetime import datetime, timedelta

from temporalio import activity
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from tocsin.core import contracts as c
from tocsin.core.models import Run, workflow_id
from tocsin.core.vocabulary import UNFINISHED_RUN_STATES
from tocsin.db import Database
from tocsin.engine.reconcile import (
    BATCH,
    overdue_sends,
    progress_overdue_runs,
    settle_overdue_feedback,
    stop_terminated_run,
    unfinished_runs,
    unstarted_runs,
)
from tocsin.temporal.starter import start_journey, wake_journey

log = logging.getLogger("tocsin.reconcile")
# Closed without finishing their run, as the journey's last search attributes say. Completed and
# continued-as-new executions are the normal ends; a cancelled one has cancelled its run itself.
CLOSED_UNFINISHED = (
    'WorkflowType = "{workflow}" AND TaskQueue = "{queue}" AND ExecutionStatus IN ("Terminated", "Failed", "TimedOut")'
    " AND TocsinState IN ({states})"
)


class ReconcileActivities:
    def __init__(self, db: Database, client: Client, *, task_queue: str) -> None:
        self.db = db
        self.client = client
        self.task_queue = task_queue

    @staticmethod
    async def attempt(call: Awaitable[None], run_id: uuid.UUID) -> bool:
        try:
            await call
        except Exception:
            log.exception(
                "reconcile: could not start or wake the workflow of run %s", run_id, extra={"run_id": str(run_id)}
            )
            return False
        return True

    async def closed_journeys(self) -> list[tuple[WorkflowExecution, Run]]:
        """The queue's journeys whose latest execution closed with their run unfinished, and those runs.

        Visibility lists the candidates; a closed execution's search attributes never change, so those an earlier
        sweep settled stay listed until retention removes them. One read of Postgres says which runs are still
        unfinished, so a settled one costs no describe; a describe of the others says whether the listed
        execution is still the latest (one an earlier sweep restarted has a successor)."""
        query = CLOSED_UNFINISHED.format(
            workflow=c.JOURNEY_WORKFLOW,
            queue=self.task_queue,
            states=", ".join(f'"{state}"' for state in UNFINISHED_RUN_STATES),
        )
        listed: list[tuple[WorkflowExecution, uuid.UUID]] = []
        async for execution in self.client.list_workflows(query, limit=BATCH):
            try:
                listed.append((execution, uuid.UUID(execution.id.removeprefix(workflow_id("")))))
            except ValueError:  # a journey workflow someone started by hand: no run of tocsin's
                log.warning("reconcile: the closed workflow %s is not a run's", execution.id)
        runs = await unfinished_runs(self.db, [run_id for _, run_id in listed])
        closed = []
        for execution, run_id in listed:
            run = runs.get(run_id)
            if run is None:  # finished: settled by an earlier sweep, or the workflow closed after its last commit
                continue
            latest = await self.client.get_workflow_handle(execution.id).describe()
            if latest.run_id == execution.run_id:
                closed.append((execution, run))
        return closed

    async def settle_closed(self, execution: WorkflowExecution, run: Run, now: datetime) -> tuple[str, uuid.UUID]:
        """A terminated workflow's run is stopped; a failed (or timed out) one is started again (SPEC 14)."""
        if execution.status == WorkflowExecutionStatus.TERMINATED:
            await stop_terminated_run(self.db, run, now=now)
            log.info("reconcile: stopped run %s, its workflow was terminated", run.id, extra={"run_id": str(run.id)})
            return "stopped", run.id
        await start_journey(self.client, self.db, run, task_queue=self.task_queue)
        log.warning(
            "reconcile: restarted the workflow of run %s, it had %s",
            run.id,
            execution.status.name.lower() if execution.status else "closed",
            extra={"run_id": str(run.id)},
        )
        return "restarted", run.id

    @activity.defn(name="tocsin.reconcile")
    async def reconcile(self, request: c.ReconcileRequest) -> c.ReconcileReport:
        grace = timedelta(seconds=request.grace_seconds)
        # Before the overdue waits: a failed workflow restarted here is one their wakes can reach (a wake never
        # starts a closed workflow again).
        settled: dict[str, list[uuid.UUID]] = {"stopped": [], "restarted": []}
        for execution, run in await self.closed_journeys():
            try:
                kind, run_id = await self.settle_closed(execution, run, request.now)
            except Exception:
                log.exception("reconcile: could not settle the closed workflow %s", execution.id)
                continue
            settled[kind].append(run_id)
        started: list[uuid.UUID] = []
        for run in await unstarted_runs(self.db, now=request.now, grace=grace):
            # One run that cannot be started must not keep the sweep from the others (nor the lost timers).
            if await self.attempt(start_journey(self.client, self.db, run, task_queue=self.task_queue), run.id):
                started.append(run.id)
        progressed = await progress_overdue_runs(self.db, now=request.now, grace=grace)
        for progress in progressed:
            if not progress.run.finished:
                await self.attempt(
                    wake_journey(self.client, progress.run.id, task_queue=self.task_queue), progress.run.id
                )
        # Feedback deadlines and sends whose workflow timer was lost: settled or woken, so the run moves on.
        deadlines = await settle_overdue_feedback(self.db, now=request.now, grace=grace)
        woken = {d.run_id for d in deadlines if d.status == "succeeded"}
        rescued = await overdue_sends(self.db, now=request.now, grace=grace)
        for run_id in sorted(woken | set(rescued)):
            await self.attempt(wake_journey(self.client, run_id, task_queue=self.task_queue), run_id)
        return c.ReconcileReport(
            started=started,
            progressed=[p.run.id for p in progressed],
            settled=[d.id for d in deadlines if d.status == "succeeded"],
            rescued=rescued,
            **settled,
        )
