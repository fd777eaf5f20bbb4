"""The worker's Temporal tuning from the environment (issue 14): build_worker passes it to the SDK worker, and
journeys run with a cache smaller than the runs in flight (an evicted run is replayed from its history)."""

from __future__ import annotations

import uuid

import pytest
from journeys import journey, step, wait
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import PollerBehaviorAutoscaling, PollerBehaviorSimpleMaximum

from tocsin import Tocsin, build_worker
from tocsin.channels import InAppChannel
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.settings import Settings
from tocsin.testing.time_skipping import skipping_client

# Two in_app messages an hour apart: each run is evicted while its timer runs, and replayed when it fires.
REMINDER = journey(
    "tuning_reminder",
    step("first", "in_app", wait("second", 3600), content={"title": "Hello"}),
    step("second", "in_app", content={"title": "Again"}),
)


async def test_a_worker_tuned_from_the_environment_runs_journeys_past_its_cache(
    monkeypatch: pytest.MonkeyPatch, db: Database, time_env: WorkflowEnvironment
) -> None:
    for name, value in {
        "TOCSIN_WORKER_MAX_CACHED_WORKFLOWS": "1",
        "TOCSIN_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": "2",
        "TOCSIN_WORKER_MAX_CONCURRENT_ACTIVITIES": "2",
        "TOCSIN_WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES": "3",
        "TOCSIN_WORKER_WORKFLOW_TASK_POLLERS": "2",
        "TOCSIN_WORKER_ACTIVITY_TASK_POLLERS": "auto",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings(database_url=None, temporal_address=None)
    task_queue = f"tocsin-tuning-{uuid.uuid4()}"
    client, started = skipping_client(time_env)
    tocsin = Tocsin(db, client, task_queue=task_queue)
    await tocsin.register_definition(REMINDER)
    worker = build_worker(
        time_env.client, db, task_queue=task_queue, channels={"in_app": InAppChannel()}, **settings.worker_tuning
    )
    config = worker.config()
    assert (
        config.get("max_cached_workflows"),
        config.get("max_concurrent_workflow_tasks"),
        config.get("max_concurrent_activities"),
        config.get("max_concurrent_local_activities"),
        config.get("workflow_task_poller_behavior"),
        config.get("activity_task_poller_behavior"),
    ) == (1, 2, 2, 3, PollerBehaviorSimpleMaximum(maximum=2), PollerBehaviorAutoscaling())
    async with worker:
        runs = [
            await tocsin.start_run(
                workflow_key=REMINDER["key"],
                tenant_id="acme",
                recipient=f"user:{i}",
                data={},
                idempotency_key=str(uuid.uuid4()),
            )
            for i in range(3)
        ]
        for run in runs:
            await started.result(workflow_id(run.id))
    for run in runs:
        detail = await tocsin.get_run(run.id, tenant_id="acme")
        assert detail.run.state == "completed"
        assert [(d.step_key, d.status) for d in detail.deliveries] == [("first", "succeeded"), ("second", "succeeded")]
