"""The reconcile activity: the safety net for lost workflow starts and lost timers (SPEC 6)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client

from tocsin.core import contracts as c
from tocsin.db import Database
from tocsin.engine.reconcile import progress_overdue_runs, unstarted_runs
from tocsin.temporal.starter import start_journey, wake_journey

log = logging.getLogger("tocsin.reconcile")


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

    @activity.defn(name="tocsin.reconcile")
    async def reconcile(self, request: c.ReconcileRequest) -> c.ReconcileReport:
        grace = timedelta(seconds=request.grace_seconds)
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
        return c.ReconcileReport(started=started, progressed=[p.run.id for p in progressed])
