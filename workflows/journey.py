"""JourneyWorkflow: one per run. The clock and the driver; Postgres holds every decision (SPEC 6).

Deterministic: time comes from workflow.now(), all I/O happens in activities, no randomness. What the Web UI
shows (activity and timer summaries, current details) is metadata: it never changes the workflow's commands.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from tocsin.core import contracts as c

# Infrastructure faults (database unreachable, worker lost) are retried by Temporal, and so is any other error
# that is not tocsin's own, for ever: the activities report one that keeps failing (activities.journey).
# Tocsin's own errors are raised as non-retryable. Delivery retries are this workflow's own loop, below.
INFRA_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
# A decision is one or two short Postgres transactions: milliseconds, a second under heavy load; so is an instant
# channel's send. In histories from before LOCAL_ACTIVITIES the timeout is also how long a run waits when its
# worker dies mid-decision (a local activity's worker is noticed dying by its workflow task's timeout).
ENGINE_TIMEOUT = timedelta(seconds=20)
# Below INFRA_RETRY's first backoff: a local activity's retries all go through workflow timers.
LOCAL_RETRY_THRESHOLD = timedelta(milliseconds=500)
# A send is one provider call between two short transactions. A worker that dies mid-send is noticed by its
# missing heartbeats, after SEND_HEARTBEAT; the start-to-close timeout only bounds a provider that never
# answers, and is long on purpose: when it fires, the send still running on its worker and the retry would
# both reach the provider (an SMTP session is several commands of up to 30 s each, and a mail server drops no
# duplicate by its Message-ID).
SEND_TIMEOUT = timedelta(minutes=15)
SEND_HEARTBEAT = timedelta(seconds=10)
# While a delivery has not converged (awaiting provider feedback) the workflow waits for a wake signal,
# and re-reads the rows now and then anyway, in case a wake was lost.
SAFETY_RECHECK = timedelta(hours=6)
# Versions the workflow's commands (SPEC 14 "No stall"): a decision whose delivery cannot be sent is
# followed by the next round at once instead of a safety re-check timer.
NO_STALL = "no-stall-after-decision"
# Versions the workflow's commands (SPEC 11.3): a send waits for the delivery's `scheduled_for` (its send window,
# its retry's backoff, both written by the engine) instead of a backoff the workflow computed itself, and a send
# awaiting provider feedback waits for its deadline instead of the safety re-check. Histories recorded before
# carry deliveries without these columns, and so take the old paths.
SEND_TIMES = "send-times-in-postgres"
# Versions the workflow's commands (issue 14): the engine's decisions (progress_run, exhaust_delivery,
# settle_feedback_deadline, cancel_run), each one short Postgres transaction, and the sends of instant channels
# (in_app, log: no provider call, `tocsin.channels.is_instant`) run as local activities: on the workflow's own
# worker, recorded as a marker in the workflow task that asked for them, without an activity task's round trips
# through the server. Still one dispatch (local) activity per attempt (SPEC 6). A send through a provider stays an
# activity task, heartbeating, on any worker. Histories recorded before take the old path.
LOCAL_ACTIVITIES = "local-decisions-and-instant-sends"
# The reason a cancellation requested through Temporal (the Web UI's button, `temporal workflow cancel`) gives.
TEMPORAL_CANCEL = "temporal_cancel_requested"


def moment(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def wait_label(round_: c.Round) -> str:
    """A wait's timer, named for what it waits for: `wait PT2H → email`, `wait until 2027-03-01 08:00:00 UTC → sms`."""
    wait, due_at = round_.wait, round_.run.due_at
    if wait is None:
        return "wait"
    if wait.delay_seconds is None:
        return f"wait until {moment(due_at)} → {wait.to_step}" if due_at else f"wait → {wait.to_step}"
    return f"wait {c.iso_duration(wait.delay_seconds)} → {wait.to_step}"


def batch_label(run: c.RunView) -> str:
    """A batch's timer: `batch closes 2027-03-01 08:10:00 UTC → email` (the step its close activates)."""
    return f"batch closes {moment(run.due_at)} → {run.current_step}" if run.due_at else f"batch → {run.current_step}"


@dataclass(frozen=True)
class Call:
    """One activity of the run loop: what it runs, on what, and how (JourneyWorkflow.start)."""

    activity: str
    request: c.Message
    result_type: type[Any]
    summary: str
    send: bool = False  # dispatch_delivery, not one of the engine's decisions
    instant: bool = False  # a send through an instant channel (Round.instant_send)


class CancelRequested(Exception):
    """Temporal was asked to cancel the workflow: the run loop stops at its next activity or timer."""


def details(round_: c.Round) -> str:
    """Where the run stands, for the Web UI's current details. Steps and statuses only, no personal data."""
    run, delivery = round_.run, round_.delivery
    where = f"**{run.state}** at step `{run.current_step}`"
    if run.finished:
        return f"{where}: {run.terminal_reason or run.status_reason}"
    if run.state == "waiting":
        then = f" → `{round_.wait.to_step}`" if round_.wait else ""
        return f"{where} until {moment(run.due_at)}{then}" if run.due_at else where
    if run.state == "collecting":
        return f"{where}: batch closes {moment(run.due_at)}" if run.due_at else where
    if delivery is None:
        return f"{where}: {run.status_reason}"
    return f"{where}: {delivery.channel} delivery {delivery.status} after {delivery.attempt_count} attempt(s)"


@workflow.defn(name=c.JOURNEY_WORKFLOW)
class JourneyWorkflow:
    @workflow.init
    def __init__(self, run_id: str) -> None:
        self.run_id = uuid.UUID(run_id)
        self.woken = False
        self.finished = False
        self.cancel_requested = False
        self.last: c.Round | None = None
        # When a failed attempt may be retried, fixed once per attempt so that repeated wakes do not
        # push the backoff further out.
        self.retry_at: dict[tuple[uuid.UUID, int], datetime] = {}

    @workflow.run
    async def run(self, run_id: str) -> c.RunView:
        try:
            return await self.journey(run_id)
        except (CancelRequested, asyncio.CancelledError):
            return await self.stop_on_request()

    async def journey(self, run_id: str) -> c.RunView:
        while True:
            self.woken = False
            round_ = await self.progress()
            run = round_.run
            if run.finished:
                self.finished = True
                await workflow.wait_condition(workflow.all_handlers_finished)
                return run
            if run.state in ("waiting", "collecting"):
                # A waiting run or an open batch (SPEC 11.5) always has due_at (a CHECK constraint); without one,
                # re-read now and then. A trigger joining the batch wakes it; it then sleeps on to the same time.
                label = wait_label(round_) if run.state == "waiting" else batch_label(run)
                if run.due_at is None:
                    await self.sleep_until(workflow.now() + SAFETY_RECHECK, "re-check a wait without a due time")
                else:
                    await self.sleep_until(run.due_at, label)
            else:
                await self.drive(round_)
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(run_id)

    async def stop_on_request(self) -> c.RunView:
        """Cancel the run as Temporal was asked to (SPEC 14), then return: Postgres, not Temporal, says it stopped.

        An activity in flight when the request came finished first (see `act`), so a send is never cut in half.
        """
        if self.last is None:  # not one round made: no run this workflow could name
            raise asyncio.CancelledError
        run = await self.cancel_run(self.last.run.tenant_id, TEMPORAL_CANCEL, "cancel · requested through Temporal")
        self.publish(run)
        self.finished = True
        workflow.set_current_details(f"**{run.state}**: cancellation requested through Temporal")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return run

    async def drive(self, round_: c.Round) -> None:
        """Move the active step's delivery one step along: send it, retry it, or wait for news."""
        delivery = round_.delivery
        step = round_.run.current_step
        if delivery is None or delivery.status not in ("pending", "failed"):
            if round_.kind != "noop" and workflow.patched(NO_STALL):
                # A decision just planned a delivery that is already final (a render failure suppressed it):
                # the next round decides on it now. Only a decision gets here, never a noop, so this cannot
                # spin: each decision writes a transition, and max_step_activations bounds them.
                return
            deadline = delivery.feedback_due_at if delivery is not None else None
            if delivery is not None and deadline is not None and workflow.patched(SEND_TIMES):
                # Awaiting the provider's report: a wake brings it; at the deadline it settles as delivered.
                workflow.set_current_details(f"{details(round_)}; feedback deadline {moment(deadline)}")
                if await self.sleep_until(deadline, f"feedback deadline {moment(deadline)} · step {step}"):
                    await self.act(
                        Call(
                            "tocsin.settle_feedback_deadline",
                            c.DeliveryRequest(delivery_id=delivery.id, now=workflow.now()),
                            c.DeliveryView,
                            f"feedback deadline · step {step}",
                        )
                    )
                return
            # In flight awaiting feedback, or not branchable: only a wake (or the safety re-check) helps.
            await self.sleep_until(workflow.now() + SAFETY_RECHECK, f"await news of step {step} · re-check")
            return
        if delivery.status == "pending":
            opens = delivery.scheduled_for
            if opens is not None and opens > workflow.now() and workflow.patched(SEND_TIMES):
                # Outside its send window: sent when the window opens, unless a wake comes first.
                workflow.set_current_details(f"{details(round_)}; send window opens {moment(opens)}")
                if not await self.sleep_until(opens, f"send window opens {moment(opens)} · step {step}"):
                    return
            await self.dispatch(round_, delivery)
            return
        if delivery.attempt_count >= round_.retry.max_attempts:
            await self.act(
                Call(
                    "tocsin.exhaust_delivery",
                    c.DeliveryRequest(delivery_id=delivery.id, now=workflow.now()),
                    c.DeliveryView,
                    f"retries exhausted · step {step} · {delivery.attempt_count} attempts",
                )
            )
            return
        retry_at = self.retry_time(round_, delivery)
        workflow.set_current_details(f"{details(round_)}; retry at {moment(retry_at)}")
        if await self.sleep_until(retry_at, f"retry at {moment(retry_at)} · {delivery.channel} · step {step}"):
            await self.dispatch(round_, delivery)

    def retry_time(self, round_: c.Round, delivery: c.DeliveryView) -> datetime:
        """When a failed delivery is sent again: the time the engine wrote (SPEC 11.3), which a continue-as-new
        or a wake leaves as it is. A delivery without one (recorded before it existed) is retried after the
        backoff from when this workflow first saw the failure, fixed once per attempt."""
        if delivery.scheduled_for is not None and workflow.patched(SEND_TIMES):
            return delivery.scheduled_for
        key = (delivery.id, delivery.attempt_count)
        if key not in self.retry_at:
            backoff = round_.retry.backoff_seconds(delivery.attempt_count)
            self.retry_at[key] = workflow.now() + timedelta(seconds=backoff)
        return self.retry_at[key]

    async def progress(self) -> c.Round:
        step = f"step {self.last.run.current_step}" if self.last else "start"
        request = c.RoundRequest(run_id=self.run_id, now=workflow.now())
        round_: c.Round = await self.act(Call("tocsin.progress_run", request, c.Round, f"decide · {step}"))
        self.last = round_
        self.publish(round_.run)
        workflow.set_current_details(details(round_))
        return round_

    async def dispatch(self, round_: c.Round, delivery: c.DeliveryView) -> None:
        attempt = delivery.attempt_count + 1
        await self.act(
            Call(
                "tocsin.dispatch_delivery",
                c.DispatchRequest(delivery_id=delivery.id, attempt=attempt, now=workflow.now()),
                c.DeliveryView,
                f"send {delivery.channel} · step {round_.run.current_step} · attempt {attempt}",
                send=True,
                instant=round_.instant_send,
            )
        )

    async def act(self, call: Call) -> Any:
        """One of the run loop's activities. A cancellation requested through Temporal while it runs lets it
        finish (a send half made helps nobody) and stops the loop before anything else starts."""
        if self.cancel_requested:
            raise CancelRequested
        handle = self.start(call)
        try:
            return await asyncio.shield(handle)
        except asyncio.CancelledError:
            self.cancel_requested = True
            return await handle

    def start(self, call: Call) -> workflow.ActivityHandle[Any]:
        """A decision, or a send through an instant channel: a local activity (LOCAL_ACTIVITIES). Any other send: an
        activity task with a heartbeat. In histories recorded before that patch, every one an activity task, a
        decision's with the engine's short timeout."""
        common: dict[str, Any] = {"result_type": call.result_type, "summary": call.summary, "retry_policy": INFRA_RETRY}
        if (call.instant or not call.send) and workflow.patched(LOCAL_ACTIVITIES):
            # Every retry waits on a durable timer, not in the worker: it survives the worker, the history shows
            # it, and a time-skipping test server skips it.
            return workflow.start_local_activity(
                call.activity,
                call.request,
                start_to_close_timeout=ENGINE_TIMEOUT,
                local_retry_threshold=LOCAL_RETRY_THRESHOLD,
                **common,
            )
        return workflow.start_activity(
            call.activity,
            call.request,
            start_to_close_timeout=SEND_TIMEOUT if call.send else ENGINE_TIMEOUT,
            heartbeat_timeout=SEND_HEARTBEAT if call.send else None,
            **common,
        )

    async def sleep_until(self, until: datetime, summary: str) -> bool:
        """A durable timer to `until`, cut short by a wake. True when the time really came."""
        if self.cancel_requested:
            raise CancelRequested
        remaining = until - workflow.now()
        if remaining <= timedelta(0):
            return True
        try:
            await workflow.wait_condition(lambda: self.woken, timeout=remaining, timeout_summary=summary)
        except TimeoutError:
            return True
        return False

    async def cancel_run(self, tenant_id: str, reason: str, summary: str) -> c.RunView:
        request = c.CancelRunRequest(run_id=self.run_id, tenant_id=tenant_id, reason=reason, now=workflow.now())
        run: c.RunView = await self.start(Call("tocsin.cancel_run", request, c.RunView, summary))
        return run

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
        run = await self.cancel_run(request.tenant_id, request.reason, "cancel · by request")
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
