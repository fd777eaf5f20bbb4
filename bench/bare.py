"""Bare Temporal workflows, the floors that bench/idle_scale.py and bench/journey_floor.py measure tocsin against.

Workflow code only: the workflow sandbox re-imports this module for every workflow run, as it re-imports tocsin's
workflows package, so it imports no more than a workflow module needs (its data types are passed through).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from bench.noop import NOOP, Noop, Plan
    from tocsin.core import contracts as c

IDLE_WORKFLOW = "BenchIdleWorkflow"
ACTIVITIES_WORKFLOW = "BenchActivitiesWorkflow"
TIMEOUT = timedelta(seconds=20)  # the journey's ENGINE_TIMEOUT


def journey_search_attributes() -> list[SearchAttributeUpdate[Any]]:
    """What JourneyWorkflow.publish upserts after a round, keys and value sizes alike."""
    return [
        c.STATE.value_set("active"),
        c.STEP.value_set("second"),
        c.WORKFLOW_KEY.value_set("bench_three_steps"),
        c.TENANT.value_set("bench"),
        c.DUE_AT.value_unset(),
    ]


@workflow.defn(name=ACTIVITIES_WORKFLOW)
class BenchActivitiesWorkflow:
    """The plan's no-op activities one after another, each with the payload sizes and upsert it names."""

    @workflow.run
    async def run(self, plan: Plan) -> int:
        for step in plan.steps:
            request = Noop(pad="x" * step.pad, result_chars=step.result_chars)
            if step.local:
                await workflow.execute_local_activity(NOOP, request, result_type=str, start_to_close_timeout=TIMEOUT)
            else:
                await workflow.execute_activity(NOOP, request, result_type=str, start_to_close_timeout=TIMEOUT)
            if step.upsert:
                workflow.upsert_search_attributes(journey_search_attributes())
        return len(plan.steps)


@workflow.defn(name=IDLE_WORKFLOW)
class BenchIdleWorkflow:
    """Waits on one long timer, as a journey's run waits for its next step. A wake runs one no-op activity
    (the journey's runs its progress_run) and waits again."""

    def __init__(self) -> None:
        self.woken = False

    @workflow.run
    async def run(self, hours: int) -> None:
        # One upsert, the state a waiting journey shows: what idle_scale counts to know the run is waiting.
        workflow.upsert_search_attributes([c.STATE.value_set("waiting")])
        due = workflow.now() + timedelta(hours=hours)
        while True:
            self.woken = False
            try:
                await workflow.wait_condition(lambda: self.woken, timeout=due - workflow.now())
            except TimeoutError:
                return
            await workflow.execute_activity(NOOP, Noop(), result_type=str, start_to_close_timeout=TIMEOUT)

    @workflow.signal(name=c.WAKE_SIGNAL)
    def wake(self) -> None:
        self.woken = True
