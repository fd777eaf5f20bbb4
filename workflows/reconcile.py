"""ReconcileWorkflow: started every minute by a Temporal Schedule; one reconcile activity per tick."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from tocsin.core import contracts as c


@workflow.defn(name=c.RECONCILE_WORKFLOW)
class ReconcileWorkflow:
    @workflow.run
    async def run(self, grace_seconds: int = 120) -> c.ReconcileReport:
        report: c.ReconcileReport = await workflow.execute_activity(
            "tocsin.reconcile",
            c.ReconcileRequest(now=workflow.now(), grace_seconds=grace_seconds),
            result_type=c.ReconcileReport,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        return report
