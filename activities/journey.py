"""Activities of JourneyWorkflow: thin adapters from Temporal to the engine and to dispatch."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from tocsin import engine
from tocsin.channels import Channel, is_instant
from tocsin.core import contracts as c
from tocsin.core.errors import TocsinError
from tocsin.core.models import Delivery, Progress, Run, workflow_id
from tocsin.db import Database, store
from tocsin.engine import deliveries, feedback
from tocsin.engine.dispatch import Policy, dispatch_delivery
from tocsin.logs import bind_log_context

S = TypeVar("S")
Q = TypeVar("Q")
T = TypeVar("T")
Activity = Callable[[S, Q], Awaitable[T]]
log = logging.getLogger("tocsin.activities")
# From this attempt on, an activity failing with an error that is not tocsin's own is reported (1 s, 2 s, 4 s
# and 8 s of backoff lie before it: about 15 s, longer than a database restart or failover usually takes).
STUCK_AFTER = 5
# Exported as tocsin_activity_stuck_failures{activity_type, run_id, error, ...}; a run whose series grows
# is stuck (rate(...[5m]) > 0).
STUCK_METRIC = "tocsin_activity_stuck_failures"


def run_view(run: Run) -> c.RunView:
    return c.RunView.model_validate(run.model_dump(include=set(c.RunView.model_fields)))


def delivery_view(delivery: Delivery) -> c.DeliveryView:
    return c.DeliveryView.model_validate(delivery.model_dump(include=set(c.DeliveryView.model_fields)))


def wait_view(run: Run) -> c.Wait | None:
    """The wait a waiting run entered, from its status_context (the rule that fired, whichever it was)."""
    if run.state != "waiting":
        return None
    wait = run.status_context
    if wait.get("anchor") == "until":
        return c.Wait(delay_seconds=None, to_step=wait["to_step"])
    delay = datetime.fromisoformat(wait["due_at"]) - datetime.fromisoformat(wait["anchor_timestamp"])
    return c.Wait(delay_seconds=int(delay.total_seconds()), to_step=wait["to_step"])


def server_clock() -> Callable[[], datetime]:
    """The server's clock, as this activity sees it: its attempt's scheduled time plus the time elapsed since.

    Under the time-skipping test server this keeps one consistent clock with workflow.now(); in production
    it stamps the real moment.
    """
    return clock_from(activity.info().current_attempt_scheduled_time)


def clock_from(start: datetime) -> Callable[[], datetime]:
    """A clock that reads `start` now and moves on with the time elapsed since. A local activity starts it from the
    workflow.now() its request carries: its own scheduled time is the worker's clock, which a time-skipping test
    server does not move."""
    started = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - started)


async def heartbeating(work: Awaitable[T]) -> T:
    """Await `work`, heartbeating while it runs, and see it through to its end.

    The heartbeats are how Temporal notices that a worker died mid-send (within the heartbeat timeout, not the
    start-to-close one); a send that ends within a third of that timeout never heartbeats. A cancellation from
    Temporal (the workflow closed or was reset, the worker shutting down) does not cut the send in half: it
    would leave the attempt without its result, so the send finishes and is recorded.
    """
    task = asyncio.ensure_future(work)
    every = (activity.info().heartbeat_timeout or timedelta(seconds=30)) / 3
    while not task.done():
        try:
            await asyncio.wait([task], timeout=every.total_seconds())
        except asyncio.CancelledError:
            continue
        if not task.done():
            activity.heartbeat()
    return task.result()


def journey_activity(name: str) -> Callable[[Activity[S, Q, T]], Activity[S, Q, T]]:
    """`activity.defn`, with tocsin's policy for the errors an activity raises (docs/design.md).

    Tocsin's own errors (unknown run, illegal move) are not infrastructure faults: never retried. Any other
    error is retried for ever by the workflow's INFRA_RETRY: a database outage ends, a bug is fixed by a
    deploy, corrupt data by a repair, and the run then resumes where it stood. It must not fail quietly:
    from the STUCK_AFTER-th attempt on, each failure is logged at ERROR and counted per run.
    """

    def decorate(fn: Activity[S, Q, T]) -> Activity[S, Q, T]:
        @functools.wraps(fn)
        async def guarded(self: S, request: Q) -> T:
            try:
                return await fn(self, request)
            except TocsinError as exc:
                raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from exc
            except Exception as exc:
                report_repeated_failure(exc)
                raise

        return activity.defn(name=name)(guarded)

    return decorate


def report_repeated_failure(exc: Exception) -> None:
    info = activity.info()
    if info.attempt < STUCK_AFTER:
        return  # the SDK logs each failed attempt at WARNING already; a blip is not news
    # The workflow id is workflow_id(run_id): the run is named even where the request names only a delivery.
    run_id = (info.workflow_id or "").removeprefix(workflow_id(""))
    error = type(exc).__name__
    log.error(
        "%s has failed %d times in a row, still retrying: %s: %s",
        info.activity_type,
        info.attempt,
        error,
        exc,
        exc_info=exc,
        extra={"run_id": run_id, "activity": info.activity_type, "attempt": info.attempt, "error": error},
    )
    counter = activity.metric_meter().create_counter(
        STUCK_METRIC, "Failures of a tocsin activity that has failed repeatedly, per run", "1"
    )
    counter.add(1, {"run_id": run_id, "error": error})


class JourneyActivities:
    def __init__(self, db: Database, channels: Mapping[str, Channel], *, policy: Policy | None = None) -> None:
        self.db = db
        self.channels = channels
        self.policy = policy

    @journey_activity("tocsin.progress_run")
    async def progress_run(self, request: c.RoundRequest) -> c.Round:
        bind_log_context(run_id=request.run_id)
        progress = await engine.progress_run(self.db, request.run_id, now=request.now)
        run = progress.run
        log.info(
            "progress: %s (%s)",
            progress.kind,
            progress.reason,
            extra={"kind": progress.kind, "reason": progress.reason, "state": run.state, "step": run.current_step},
        )
        step = (await self.db.definition(run.definition_id)).step(run.current_step)
        delivery = await self.active_delivery(progress)
        return c.Round(
            kind=progress.kind,
            reason=progress.reason,
            run=run_view(run),
            delivery=delivery_view(delivery) if delivery else None,
            retry=step.retry,
            wait=wait_view(run),
            instant_send=delivery is not None and is_instant(self.channels.get(delivery.channel)),
        )

    async def active_delivery(self, progress: Progress) -> Delivery | None:
        """The delivery the workflow drives next: only an active run has one; an advance just planned it."""
        run = progress.run
        if run.state != "active":
            return None
        if progress.deliveries:
            return progress.deliveries[0]
        async with self.db.transaction() as conn:
            return await store.step_delivery(conn, run.id, run.step_activation)

    @journey_activity("tocsin.dispatch_delivery")
    async def dispatch_delivery(self, request: c.DispatchRequest) -> c.DeliveryView:
        bind_log_context(delivery_id=request.delivery_id)
        send = dispatch_delivery(
            self.db,
            request.delivery_id,
            channels=self.channels,
            now=clock_from(request.now) if request.now is not None and activity.info().is_local else server_clock(),
            attempt=request.attempt,
            policy=self.policy,
        )
        return delivery_view(await heartbeating(send))

    @journey_activity("tocsin.exhaust_delivery")
    async def exhaust_delivery(self, request: c.DeliveryRequest) -> c.DeliveryView:
        bind_log_context(delivery_id=request.delivery_id)
        delivery = await deliveries.exhaust_delivery(self.db, request.delivery_id, now=request.now)
        log.info(
            "delivery exhausted after %d attempts: %s",
            delivery.attempt_count,
            delivery.status,
            extra={"run_id": str(delivery.run_id), "attempt": delivery.attempt_count, "status": delivery.status},
        )
        return delivery_view(delivery)

    @journey_activity("tocsin.settle_feedback_deadline")
    async def settle_feedback_deadline(self, request: c.DeliveryRequest) -> c.DeliveryView:
        bind_log_context(delivery_id=request.delivery_id)
        delivery = await feedback.settle_feedback_deadline(self.db, request.delivery_id, now=request.now)
        log.info(
            "feedback deadline: %s",
            delivery.status,
            extra={"run_id": str(delivery.run_id), "status": delivery.status},
        )
        return delivery_view(delivery)

    @journey_activity("tocsin.cancel_run")
    async def cancel_run(self, request: c.CancelRunRequest) -> c.RunView:
        bind_log_context(run_id=request.run_id)
        run = await engine.cancel_run(
            self.db, request.run_id, tenant_id=request.tenant_id, reason=request.reason, now=request.now
        )
        return run_view(run)

    def all(self) -> list[Callable[..., object]]:
        return [
            self.progress_run,
            self.dispatch_delivery,
            self.exhaust_delivery,
            self.settle_feedback_deadline,
            self.cancel_run,
        ]
