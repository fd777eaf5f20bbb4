"""JourneyWorkflow: one per run. The clock and the driver; Postgres holds every decision (SPEC 6).

Deterministic: time comes from workflow.now(), all I/O happens in activities, no randomness.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from tocsin.core import contracts as c

# Infrastructure faults (database unreachable, worker lost) are retried by Temporal, and so is any other error
# that is not tocsin's own, for ever: the activities report one that keeps failing (activities.journey).
# Tocsin's own errors are raised as non-retryable. Delivery retries are this workflow's own loop, below.
INFRA_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
ENGINE_TIMEOUT = timedelta(seconds=60)
SEND_TIMEOUT = timedelta(minutes=5)
# While a delivery has not converged (awaiting provider feedback) the workflow waits for a wake signal,
# and re-reads the rows now and then anyway, in case a wake was lost.
SAFETY_RECHECK = timedelta(hours=6)
# Versions the workflow's commands (SPEC 14 "No stall"): a decision whose delivery cannot be sent is
# followed by the next round at once instead of a safety re-check timer.
NO_STALL = "no-stall-after-decision"


@workflow.defn(name=c.JOURNEY_WORKFLOW)
class JourneyWorkflow:
    @workflow.init
    def __init__(self, run_id: str) -> None:
        self.run_id = uuid.UUID(run_id)
        self.woken = False
        self.finished = False
        self.last: c.Round | None = None
        # When a failed attempt may be retried, fixed once per attempt so that repeated wakes do not
        # push the backoff further out.
        self.retry_at: dict[tuple[uuid.UUID, int], datetime] = {}

    @workflow.run
    async def run(self, run_id: str) -> c.RunView:
        while True:
            self.woken = False
            round_ = await self.progress()
            run = round_.run
            if run.finished:
                self.finished = True
                await workflow.wait_condition(workflow.all_handlers_finished)
                return run
            if run.state == "waiting":
                # A waiting run always has due_at (a CHECK constraint); without one, re-read now and then.
                await self.sleep_until(run.due_at or workflow.now() + SAFETY_RECHECK)
            else:
                await self.drive(round_)
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(run_id)

    async def drive(self, round_: c.Round) -> None:
        """Move the active step's delivery one step along: send it, retry it, or wait for news."""
        delivery = round_.delivery
        if delivery is None or delivery.status not in ("pending", "failed"):
            if round_.kind != "noop" and workflow.patched(NO_STALL):
                # A decision just planned a delivery that is already final (a render failure suppressed it):
                # the next round decides on it now. Only a decision gets here, never a noop, so this cannot
                # spin: each decision writes a transition, and max_step_activations bounds them.
                return
            # In flight awaiting feedback, or not branchable: only a wake (or the safety re-check) helps.
            await self.sleep_until(workflow.now() + SAFETY_RECHECK)
            return
        if delivery.status == "pending":
            await self.dispatch(delivery.id, delivery.attempt_count + 1)
            return
        if delivery.attempt_count >= round_.retry.max_attempts:
            await workflow.execute_activity(
                "tocsin.exhaust_delivery",
                c.ExhaustRequest(delivery_id=delivery.id, now=workflow.now()),
                result_type=c.DeliveryView,
                start_to_close_timeout=ENGINE_TIMEOUT,
                retry_policy=INFRA_RETRY,
            )
            return
        key = (delivery.id, delivery.attempt_count)
        if key not in self.retry_at:
            backoff = round_.retry.backoff_seconds(delivery.attempt_count)
            self.retry_at[key] = workflow.now() + timedelta(seconds=backoff)
        if await self.sleep_until(self.retry_at[key]):
            await self.dispatch(delivery.id, delivery.attempt_count + 1)

    async def progress(self) -> c.Round:
        round_: c.Round = await workflow.execute_activity(
            "tocsin.progress_run",
            c.RoundRequest(run_id=self.run_id, now=workflow.now()),
            result_type=c.Round,
            start_to_close_timeout=ENGINE_TIMEOUT,
            retry_policy=INFRA_RETRY,
        )
        self.last = round_
        self.publish(round_.run)
        return round_

    async def dispatch(self, delivery_id: uuid.UUID, attempt: int) -> None:
        await workflow.execute_activity(
            "tocsin.dispatch_delivery",
            c.DispatchRequest(delivery_id=delivery_id, attempt=attempt),
            result_type=c.DeliveryView,
            start_to_close_timeout=SEND_TIMEOUT,
            retry_policy=INFRA_RETRY,
        )

    async def sleep_until(self, moment: datetime) -> bool:
        """A durable timer to `moment`, cut short by a wake. True when the time really came."""
        remaining = moment - workflow.now()
        if remaining <= timedelta(0):
            return True
        try:
            await workflow.wait_condition(lambda: self.woken, timeout=remaining)
        except TimeoutError:
            return True
        return False

    def publish(self, run: c.RunView) -> None:
        workflow.upsert_search_attributes(
            [
                key.value_set(value) if value is not None else key.value_unset()
                for key, value in c.search_attribute_values(run)
            ]
        )

    @workflow.signal(name=c.WAKE_SIGNAL)
    def wake(self) -> None:
        """A hint that canonical rows changed; the workflow re-reads them, it never trusts the signal."""
        self.woken = True

    @workflow.update(name=c.CANCEL_UPDATE)
    async def cancel(self, request: c.CancelRequest) -> c.RunView:
        run: c.RunView = await workflow.execute_activity(
            "tocsin.cancel_run",
            c.CancelRunRequest(
                run_id=self.run_id, tenant_id=request.tenant_id, reason=request.reason, now=workflow.now()
            ),
            result_type=c.RunView,
            start_to_close_timeout=ENGINE_TIMEOUT,
            retry_policy=INFRA_RETRY,
        )
        self.woken = True
        return run

    @cancel.validator
    def validate_cancel(self, request: c.CancelRequest) -> None:
        if not request.reason.strip():
            raise ValueError("a cancel reason must not be blank")
        if self.finished:
            raise ValueError(f"run {self.run_id} has already finished")

    @workflow.query(name=c.STATUS_QUERY)
    def status(self) -> c.Round | None:
        return self.last
