"""The progression engine (SPEC 4): every decision is one transaction over canonical rows.

`now` is the only clock the engine reads; it never asks the database or the host for the time.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.context import render_context
from tocsin.core.data import check_trigger_data
from tocsin.core.definitions import OnOutcomeRule, StopRule, WaitUntilRule, WorkflowDefinition
from tocsin.core.errors import DefinitionNotFound, InvalidRequest
from tocsin.core.limits import INT4_MAX, check_data, check_identifier
from tocsin.core.models import Delivery, Progress, Run, StartedRun
from tocsin.core.moments import until_moment
from tocsin.core.outcome import Branchable, outcome_of
from tocsin.core.rules import Advance, Complete, EnterWait, Halt, Hold, RuleFailed, decide
from tocsin.core.templates import RenderError, render_text
from tocsin.core.vocabulary import DUE_RUN_STATES
from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.engine import batches
from tocsin.engine.batches import Trigger
from tocsin.engine.deliveries import move
from tocsin.engine.planning import plan_next_step_delivery, write_plan
from tocsin.engine.plans import plan_due, plan_finish, plan_outcome_advance, run_context
from tocsin.engine.signals import earliest_cancelling_signal, stop_by_signal
from tocsin.engine.sweep import progress_due_runs

__all__ = [
    "cancel_run",
    "check_run_request",
    "create_run",
    "mark_workflow_started",
    "progress_due_runs",
    "progress_run",
]

# A cancel reason is a sentence for the audit trail (kept as the run's terminal_reason), not an identifier.
MAX_REASON_LENGTH = 1000


async def create_run(
    db: Database,
    *,
    tenant_id: str,
    workflow_key: str,
    recipient: str,
    idempotency_key: str,
    now: datetime,
    data: dict[str, Any] | None = None,
    version: int | None = None,
) -> tuple[StartedRun, bool]:
    """Create a run with its first planned delivery (SPEC 4.0), or for a batched workflow add the trigger to its
    scope's open batch or open one (SPEC 11.5). Returns (run, created): created is false when the trigger's key
    was already known (its run comes back and nothing is written); the run's `joined` says whether the trigger
    joined a batch that an earlier trigger opened.
    """
    check_run_request(
        tenant_id=tenant_id,
        workflow_key=workflow_key,
        recipient=recipient,
        idempotency_key=idempotency_key,
        data=data,
        version=version,
    )
    async with db.transaction() as conn:
        existing = await _run_by_key(conn, tenant_id, idempotency_key)
        if existing is not None:
            return existing, False
        definition_id, definition = await _find_definition(db, conn, workflow_key, version)
        # SPEC 11.7: the trigger's data is checked before anything is written.
        check_trigger_data(definition, data or {})
        context = render_context(data or {}, recipient=recipient, tenant_id=tenant_id, workflow_key=definition.key)
        batch, throttle = definition.batch, definition.throttle
        trigger = Trigger(
            tenant_id=tenant_id,
            recipient=recipient,
            idempotency_key=idempotency_key,
            data=data or {},
            definition_id=definition_id,
            definition=definition,
            batch_key=_render_key(batch.key if batch else None, context, "batch.key"),
            throttle_key=_render_key(throttle.key if throttle else None, context, "throttle.key"),
            now=now,
        )
        if batch is not None:
            return await _batch_trigger(conn, trigger)
        count = await _throttle_count(conn, trigger, lock=True)
        run = await _insert_run(conn, trigger)
        if run is None:
            return await _twin(conn, trigger), False
        if throttle is not None and count >= throttle.limit:
            return await _throttle(conn, run, trigger, count), True
        first = definition.first_step
        planned = await plan_next_step_delivery(conn, run, definition, first, run_context(run), now=now)
        await store.append_transition(
            conn,
            run,
            now=now,
            reason="step_activated",
            from_state="active",
            to_state="active",
            step_key=first.key,
            delivery_id=planned.id,
            context={"step_key": first.key, "source": "start_run"},
        )
        return run, True


async def _batch_trigger(conn: AsyncConnection, trigger: Trigger) -> tuple[StartedRun, bool]:
    """A trigger of a batched workflow takes its turn (SPEC 11.5). Locks, in this order: the trigger's key, the
    throttle scope (if any), the scope's open batch. A closing batch holds only its row, so no cycle can form."""
    await batches.lock_trigger_key(conn, trigger.tenant_id, trigger.idempotency_key)
    # A twin of this trigger may have committed while it queued on the key.
    existing = await _run_by_key(conn, trigger.tenant_id, trigger.idempotency_key)
    if existing is not None:
        return existing, False
    throttle = trigger.definition.throttle
    if throttle is not None:
        # Held to the end: of the scope's triggers that would open a batch, one counts and opens at a time.
        await _lock_throttle_scope(conn, trigger)
    while True:
        joined = await batches.join_open_batch(conn, trigger)
        if joined is not None:
            return _started(await batches.admit(conn, joined, trigger), joined=True), True
        # SPEC 11.4 with 11.5: throttling counts batches, and applies only when one would open.
        count = await _throttle_count(conn, trigger, lock=False)
        if throttle is not None and count >= throttle.limit:
            run = await _insert_run(conn, trigger)
            if run is None:
                return await _twin(conn, trigger), False
            await batches.add_item(conn, run, trigger)  # every trigger is an item, a throttled one too
            return await _throttle(conn, run, trigger, count), True
        opened = await batches.open_batch(conn, trigger)
        if opened is not None:
            return _started(await batches.admit(conn, opened, trigger)), True
        # No row: a run with this key appeared (a start of another workflow with the same key), or another trigger
        # opened the scope's batch since this one looked. The next turn of the loop joins that batch.
        existing = await _run_by_key(conn, trigger.tenant_id, trigger.idempotency_key)
        if existing is not None:
            return existing, False


def _started(run: Run, *, joined: bool = False) -> StartedRun:
    return StartedRun(**run.model_dump(), joined=joined)


async def _insert_run(conn: AsyncConnection, trigger: Trigger) -> StartedRun | None:
    """The trigger's new active run with its `workflow_started` transition; None when a twin with the same key
    committed first."""
    run = await store.fetch_first(conn, StartedRun, q.INSERT_RUN, **trigger.run_values())
    if run is not None:
        await store.append_transition(
            conn,
            run,
            now=trigger.now,
            reason="workflow_started",
            from_state=None,
            to_state="active",
            context={"source": "start_run"},
        )
    return run


async def _twin(conn: AsyncConnection, trigger: Trigger) -> StartedRun:
    """The run a twin with the same key committed first (ON CONFLICT waited for it): that run is the answer."""
    twin = await _run_by_key(conn, trigger.tenant_id, trigger.idempotency_key)
    if twin is None:
        raise RuntimeError(f"run with idempotency key {trigger.idempotency_key!r} conflicts but is gone")
    return twin


async def _throttle(conn: AsyncConnection, run: Run, trigger: Trigger, count: int) -> StartedRun:
    """Stop the new run at once: its scope let `limit` runs through in the period already (SPEC 11.4)."""
    throttle = trigger.definition.throttle
    if throttle is None:
        raise ValueError(f"{trigger.definition.key!r} has no throttle")
    plan = plan_finish(
        run,
        state="stopped",
        status_reason="throttled",
        transition_reason="workflow_throttled",
        context={"limit": throttle.limit, "period_seconds": throttle.period_seconds, "count": count},
        terminal_reason=f"throttle:{throttle.limit}/{throttle.period_seconds}s",
    )
    return _started((await write_plan(conn, plan, now=trigger.now)).run)


def _render_key(template: str | None, context: dict[str, Any], location: str) -> str | None:
    if template is None:
        return None
    try:
        return render_text(template, context, location)
    except RenderError as exc:  # the trigger's data cannot scope it: refused, like data the schema refuses
        raise InvalidRequest(str(exc)) from exc


async def _lock_throttle_scope(conn: AsyncConnection, trigger: Trigger) -> None:
    scope = [trigger.tenant_id, trigger.definition.key, trigger.recipient, trigger.throttle_key]
    await store.execute(conn, q.LOCK_THROTTLE_SCOPE, scope=json.dumps(scope))


async def _throttle_count(conn: AsyncConnection, trigger: Trigger, *, lock: bool) -> int:
    """How many runs the throttle scope let through in the period before `now` (SPEC 11.4); 0 unthrottled.

    With `lock`, the scope's advisory lock is taken first; it is held to the end of the transaction, after the
    new run is written: concurrent triggers of one scope count one after the other, so no more than `limit` pass.
    """
    throttle = trigger.definition.throttle
    if throttle is None:
        return 0
    if lock:
        await _lock_throttle_scope(conn, trigger)
    count: int = await store.scalar(
        conn,
        q.THROTTLE_COUNT_UNKEYED if trigger.throttle_key is None else q.THROTTLE_COUNT_KEYED,
        tenant_id=trigger.tenant_id,
        workflow_key=trigger.definition.key,
        recipient=trigger.recipient,
        throttle_key=trigger.throttle_key,
        since=trigger.now - timedelta(seconds=throttle.period_seconds),
        now=trigger.now,
    )
    return count


def check_run_request(
    *,
    tenant_id: str,
    workflow_key: str,
    recipient: str,
    idempotency_key: str,
    data: dict[str, Any] | None = None,
    version: int | None = None,
) -> None:
    """InvalidRequest for arguments no run can have (tocsin.core.limits), before anything is read or written:
    `create_run` checks them, and callers that want to refuse bad input before connecting (the CLI) too."""
    check_identifier("tenant_id", tenant_id)
    check_identifier("workflow_key", workflow_key)
    check_identifier("recipient", recipient)
    check_identifier("idempotency_key", idempotency_key)
    # type(...) is int: True is an int to Python, not a version to anyone.
    if version is not None and (type(version) is not int or not 1 <= version <= INT4_MAX):
        raise InvalidRequest(f"version must be a whole number from 1 to {INT4_MAX}, not {version!r}")
    if data is not None:
        check_data("data", data)


async def _run_by_key(conn: AsyncConnection, tenant_id: str, idempotency_key: str) -> StartedRun | None:
    return await store.run_by_trigger_key(conn, tenant_id, idempotency_key)


async def _find_definition(
    db: Database, conn: AsyncConnection, key: str, version: int | None
) -> tuple[uuid.UUID, WorkflowDefinition]:
    if version is None:
        definition_id = await store.scalar(conn, q.LATEST_DEFINITION_ID, key=key)
    else:
        definition_id = await store.scalar(conn, q.DEFINITION_ID_OF_VERSION, key=key, version=version)
    if definition_id is None:
        which = f"{key!r} version {version}" if version is not None else repr(key)
        raise DefinitionNotFound(f"no workflow definition {which} is registered")
    return definition_id, await db.definition(definition_id, conn)


async def progress_run(db: Database, run_id: uuid.UUID, *, now: datetime) -> Progress:
    """Evaluate the run's active step against its canonical delivery row and persist the decision."""
    async with db.transaction() as conn:
        run = await store.lock_run(conn, run_id)
        return await _progress_locked(db, conn, run, now=now)


async def mark_workflow_started(db: Database, run_id: uuid.UUID) -> None:
    """Record that the run's Temporal workflow was started (the reconcile sweep starts the others)."""
    async with db.transaction() as conn:
        await store.execute(conn, q.MARK_WORKFLOW_STARTED, run_id=run_id)


async def cancel_run(db: Database, run_id: uuid.UUID, *, tenant_id: str, reason: str, now: datetime) -> Run:
    """Stop an active, waiting or collecting run on request (SPEC 4.8); a finished run is returned as it is. A
    cancelled batch keeps its items and sends nothing; the scope's next trigger opens a new one."""
    check_identifier("tenant_id", tenant_id)
    check_identifier("a cancel reason", reason, max_length=MAX_REASON_LENGTH)
    async with db.transaction() as conn:
        run = await store.lock_run(conn, run_id, tenant_id=tenant_id)
        if run.finished:
            return run
        plan = plan_finish(
            run,
            state="stopped",
            status_reason="stopped_by_request",
            transition_reason="workflow_cancelled",
            context={"reason": reason},
            terminal_reason=reason,
        )
        stopped = (await write_plan(conn, plan, now=now)).run
        for delivery in await store.fetch_all(conn, Delivery, q.OPEN_DELIVERIES_FOR_UPDATE, run_id=run.id):
            await move(conn, delivery, "cancelled", now=now, suppression_reason="run_cancelled")
        return stopped


# --- one decision, inside the caller's transaction, with the run locked ---------------------------------


async def _progress_locked(db: Database, conn: AsyncConnection, run: Run, *, now: datetime) -> Progress:
    if run.state in DUE_RUN_STATES:
        definition = await db.definition(run.definition_id, conn)
        plan = plan_due(run, definition, await batches.items_of(conn, run, definition), now=now)
        return await write_plan(conn, plan, now=now)
    if run.finished:
        return Progress(kind="noop", run=run, reason="run_not_active")

    definition = await db.definition(run.definition_id, conn)
    step = definition.step(run.current_step)
    found = await store.lock_step_delivery_with_latest_attempt(conn, run.id, run.step_activation)
    if found is None:
        return Progress(kind="noop", run=run, reason="no_active_step_delivery")
    delivery, latest = found
    outcome = outcome_of(delivery, latest)
    context = run_context(run, await batches.items_of(conn, run, definition))
    match decide(step, outcome, context):
        case Hold(reason):
            return Progress(kind="noop", run=run, reason=reason)
        case Advance(rule, branch):
            return await _outcome_advance(conn, run, definition, delivery, rule, branch, context, now=now)
        case RuleFailed(rule):
            await _retire_if_failed(conn, delivery, now=now)
            plan = plan_finish(
                run,
                state="stopped",
                status_reason="rule_failed",
                transition_reason="rule_failed",
                # Never the data, nor an error text that could quote it (SPEC 11.1).
                context={"rule_kind": rule.kind, "when": rule.when, "error": "evaluation_failed"},
                terminal_reason="error:invalid_condition",
                delivery_id=delivery.id,
            )
            return await write_plan(conn, plan, now=now)
        case Halt(rule, branch):
            await _retire_if_failed(conn, delivery, now=now)
            context = _terminal_context("stop", branch, delivery) | _when(rule)
            plan = plan_finish(
                run,
                state="stopped",
                status_reason="workflow_stopped",
                transition_reason="workflow_stopped",
                context=context,
                terminal_reason=f"rule:{rule.outcome}",
                delivery_id=delivery.id,
            )
            return await write_plan(conn, plan, now=now)
        case EnterWait(rule, branch):
            return await _enter_wait(conn, run, delivery, rule, context, now=now)
        case Complete(branch):
            context = _terminal_context("implicit_completion", branch, delivery)
            plan = plan_finish(
                run,
                state="completed",
                status_reason="workflow_completed",
                transition_reason="workflow_completed",
                context=context,
                delivery_id=delivery.id,
            )
            return await write_plan(conn, plan, now=now)


def _when(rule: OnOutcomeRule | StopRule | WaitUntilRule) -> dict[str, Any]:
    """What a fired rule adds to its transition and the run's status_context: its condition, if it has one."""
    return {"when": rule.when} if rule.when is not None else {}


def _terminal_context(rule_kind: str, branch: Branchable, delivery: Delivery) -> dict[str, Any]:
    return {
        "rule_kind": rule_kind,
        "workflow_outcome": branch.outcome,
        "anchor_delivery_id": str(delivery.id),
        **branch.evidence,
    }


async def _enter_wait(
    conn: AsyncConnection,
    run: Run,
    delivery: Delivery,
    rule: WaitUntilRule,
    context: dict[str, Any],
    *,
    now: datetime,
) -> Progress:
    raced = await earliest_cancelling_signal(conn, run, rule.cancel_signals)
    if raced is not None:
        return await stop_by_signal(conn, run, raced, now=now)
    wait: dict[str, Any] = {"rule_kind": "wait_until"}
    if rule.until is not None:
        moment = until_moment(rule.until, context)
        if isinstance(moment, str):
            return await _wait_failed(conn, run, delivery, rule, moment, now=now)
        rendered, anchor_at = moment
        due_at = anchor_at + timedelta(seconds=rule.offset_seconds)
        wait |= {"anchor": "until", "anchor_delivery_id": str(delivery.id), "anchor_delivery_status": delivery.status}
        wait |= {"anchor_timestamp": store.iso(anchor_at), "until": rendered, "offset_seconds": rule.offset_seconds}
    else:
        delay = rule.delay_seconds
        found = delivery.terminal_at if rule.anchor == "prior_delivery_terminal_at" else run.step_activated_at
        if found is None or delay is None:  # a terminal delivery always has terminal_at: corrupt data otherwise
            raise RuntimeError(f"delivery {delivery.id} is {delivery.status!r} but has no terminal_at")
        anchor_at, due_at = found, found + timedelta(seconds=delay)
        wait |= {
            "anchor": rule.anchor,
            "anchor_delivery_id": str(delivery.id),
            "anchor_delivery_status": delivery.status,
        }
        wait |= {"anchor_timestamp": store.iso(anchor_at)}
    wait |= {"due_at": store.iso(due_at), "to_step": rule.to_step} | _when(rule)
    waiting = await store.fetch_one(
        conn,
        Run,
        q.ENTER_WAIT,
        run_id=run.id,
        now=now,
        status_context=wait,
        due_at=due_at,
        pending_signals=list(rule.cancel_signals),
    )
    await store.append_transition(
        conn,
        run,
        now=now,
        reason="waiting_for_step_progression",
        from_state="active",
        to_state="waiting",
        step_key=run.current_step,
        delivery_id=delivery.id,
        context=wait,
    )
    return Progress(kind="waiting", run=waiting)


async def _wait_failed(
    conn: AsyncConnection, run: Run, delivery: Delivery, rule: WaitUntilRule, error: str, *, now: datetime
) -> Progress:
    plan = plan_finish(
        run,
        state="stopped",
        status_reason="wait_failed",
        transition_reason="wait_failed",
        # No data and no rendered value: the error says which check failed.
        context={"rule_kind": "wait_until", "to_step": rule.to_step, "error": error},
        terminal_reason="error:invalid_until",
        delivery_id=delivery.id,
    )
    return await write_plan(conn, plan, now=now)


async def _outcome_advance(
    conn: AsyncConnection,
    run: Run,
    definition: WorkflowDefinition,
    delivery: Delivery,
    rule: OnOutcomeRule,
    branch: Branchable,
    context: dict[str, Any],
    *,
    now: datetime,
) -> Progress:
    # The run leaves this step either way: a failed delivery must never be retried behind its back.
    await _retire_if_failed(conn, delivery, now=now)
    plan = plan_outcome_advance(run, definition, context, delivery, rule.to_step, rule.when, branch)
    return await write_plan(conn, plan, now=now)


async def _retire_if_failed(conn: AsyncConnection, delivery: Delivery, *, now: datetime) -> None:
    """A `failed` delivery (temporary_failure) whose run leaves the step is cancelled as superseded."""
    if delivery.status == "failed":
        await move(conn, delivery, "cancelled", now=now, suppression_reason="superseded")
