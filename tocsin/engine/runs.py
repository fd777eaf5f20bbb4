"""The progression engine (SPEC 4): every decision is one transaction over canonical rows.

`now` is the only clock the engine reads; it never asks the database or the host for the time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.definitions import OnOutcomeRule, WaitUntilRule, WorkflowDefinition
from tocsin.core.errors import DefinitionNotFound, InvalidRequest
from tocsin.core.limits import INT4_MAX, check_data, check_identifier
from tocsin.core.models import Delivery, Progress, Run
from tocsin.core.outcome import Branchable, outcome_of
from tocsin.core.rules import Advance, Complete, EnterWait, Halt, Hold, decide
from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.engine.deliveries import move
from tocsin.engine.planning import plan_next_step_delivery
from tocsin.engine.signals import earliest_cancelling_signal, stop_by_signal

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

# The keyset start of a sweep: before every run.
_BEFORE_ALL_RUNS = (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))


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
) -> tuple[Run, bool]:
    """Create a run with its first planned delivery (SPEC 4.0). Returns (run, created).

    The same (tenant_id, idempotency_key) again returns the existing run and writes nothing.
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
        first = definition.first_step
        run = await store.fetch_first(
            conn,
            Run,
            q.INSERT_RUN,
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            definition_id=definition_id,
            workflow_key=definition.key,
            workflow_version=definition.version,
            recipient=recipient,
            data=data or {},
            idempotency_key=idempotency_key,
            current_step=first.key,
            now=now,
        )
        if run is None:
            # A twin with the same key committed first (ON CONFLICT waited for it): that run is the answer.
            twin = await _run_by_key(conn, tenant_id, idempotency_key)
            if twin is None:
                raise RuntimeError(f"run with idempotency key {idempotency_key!r} conflicts but is gone")
            return twin, False
        await store.append_transition(
            conn,
            run,
            now=now,
            reason="workflow_started",
            from_state=None,
            to_state="active",
            context={"source": "start_run"},
        )
        planned = await plan_next_step_delivery(conn, run, first, now=now)
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


async def _run_by_key(conn: AsyncConnection, tenant_id: str, idempotency_key: str) -> Run | None:
    return await store.fetch_first(conn, Run, q.RUN_BY_KEY, tenant_id=tenant_id, idempotency_key=idempotency_key)


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


async def progress_due_runs(
    db: Database, *, now: datetime, limit: int = 1000, overdue_by: timedelta = timedelta(0)
) -> list[Progress]:
    """Progress waiting runs whose gate is due, oldest first, one transaction each (SPEC 4.9).

    FOR UPDATE SKIP LOCKED: concurrent sweepers (and a workflow progressing the same run) never collide,
    and a run that another transaction holds is simply left to it. `overdue_by` leaves alone the runs whose
    own workflow timer is about to fire (the reconcile sweep only rescues lost timers).
    """
    results: list[Progress] = []
    after = _BEFORE_ALL_RUNS
    while len(results) < limit:
        async with db.transaction() as conn:
            params = {"due_by": now - overdue_by, "after_due_at": after[0], "after_id": after[1]}
            row = (await conn.execute(q.NEXT_DUE_RUN, params)).mappings().first()
            if row is None:
                break
            after = (row["due_at"], row["id"])
            results.append(await _progress_locked(db, conn, Run.of(row), now=now))
    return results


async def mark_workflow_started(db: Database, run_id: uuid.UUID) -> None:
    """Record that the run's Temporal workflow was started (the reconcile sweep starts the others)."""
    async with db.transaction() as conn:
        await store.execute(conn, q.MARK_WORKFLOW_STARTED, run_id=run_id)


async def cancel_run(db: Database, run_id: uuid.UUID, *, tenant_id: str, reason: str, now: datetime) -> Run:
    """Stop an active or waiting run on request (SPEC 4.8); a finished run is returned as it is."""
    check_identifier("tenant_id", tenant_id)
    check_identifier("a cancel reason", reason, max_length=MAX_REASON_LENGTH)
    async with db.transaction() as conn:
        run = await store.lock_run(conn, run_id, tenant_id=tenant_id)
        if run.finished:
            return run
        stopped = await store.finish_run(
            conn,
            run,
            now=now,
            state="stopped",
            status_reason="stopped_by_request",
            transition_reason="workflow_cancelled",
            context={"reason": reason},
            terminal_reason=reason,
        )
        for delivery in await store.fetch_all(conn, Delivery, q.OPEN_DELIVERIES_FOR_UPDATE, run_id=run.id):
            await move(conn, delivery, "cancelled", now=now, suppression_reason="run_cancelled")
        return stopped


# --- one decision, inside the caller's transaction, with the run locked ---------------------------------


async def _progress_locked(db: Database, conn: AsyncConnection, run: Run, *, now: datetime) -> Progress:
    if run.state == "waiting":
        if run.due_at is None:
            return Progress(kind="noop", run=run, reason="wait_missing_due_at")
        if now < run.due_at:
            return Progress(kind="noop", run=run, reason="wait_not_due")
        return await _timed_advance(db, conn, run, now=now)
    if run.finished:
        return Progress(kind="noop", run=run, reason="run_not_active")

    definition = await db.definition(run.definition_id, conn)
    step = definition.step(run.current_step)
    delivery = await store.step_delivery(conn, run.id, run.step_activation, lock=True)
    if delivery is None:
        return Progress(kind="noop", run=run, reason="no_active_step_delivery")
    outcome = outcome_of(delivery, await store.latest_attempt(conn, delivery.id))
    match decide(step, outcome):
        case Hold(reason):
            return Progress(kind="noop", run=run, reason=reason)
        case Advance(rule, branch):
            return await _outcome_advance(conn, run, definition, delivery, rule, branch, now=now)
        case Halt(rule, branch):
            await _retire_if_failed(conn, delivery, now=now)
            context = _terminal_context("stop", branch, delivery)
            stopped = await store.finish_run(
                conn,
                run,
                now=now,
                state="stopped",
                status_reason="workflow_stopped",
                transition_reason="workflow_stopped",
                context=context,
                terminal_reason=f"rule:{rule.outcome}",
                delivery_id=delivery.id,
            )
            return Progress(kind="stopped", run=stopped)
        case EnterWait(rule, branch):
            return await _enter_wait(conn, run, delivery, rule, now=now)
        case Complete(branch):
            context = _terminal_context("implicit_completion", branch, delivery)
            completed = await store.finish_run(
                conn,
                run,
                now=now,
                state="completed",
                status_reason="workflow_completed",
                transition_reason="workflow_completed",
                context=context,
                delivery_id=delivery.id,
            )
            return Progress(kind="completed", run=completed)


def _terminal_context(rule_kind: str, branch: Branchable, delivery: Delivery) -> dict[str, Any]:
    return {
        "rule_kind": rule_kind,
        "workflow_outcome": branch.outcome,
        "anchor_delivery_id": str(delivery.id),
        **branch.evidence,
    }


async def _enter_wait(
    conn: AsyncConnection, run: Run, delivery: Delivery, rule: WaitUntilRule, *, now: datetime
) -> Progress:
    anchor_at = delivery.terminal_at if rule.anchor == "prior_delivery_terminal_at" else run.step_activated_at
    if anchor_at is None:  # a terminal delivery always has terminal_at; anything else is corrupt data
        raise RuntimeError(f"delivery {delivery.id} is {delivery.status!r} but has no terminal_at")
    raced = await earliest_cancelling_signal(conn, run, rule.cancel_signals)
    if raced is not None:
        return Progress(kind="stopped", run=await stop_by_signal(conn, run, raced, now=now))
    due_at = anchor_at + timedelta(seconds=rule.delay_seconds)
    context = {
        "rule_kind": "wait_until",
        "anchor": rule.anchor,
        "anchor_delivery_id": str(delivery.id),
        "anchor_delivery_status": delivery.status,
        "anchor_timestamp": store.iso(anchor_at),
        "due_at": store.iso(due_at),
        "to_step": rule.to_step,
    }
    waiting = await store.fetch_one(
        conn,
        Run,
        q.ENTER_WAIT,
        run_id=run.id,
        now=now,
        status_context=context,
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
        context=context,
    )
    return Progress(kind="waiting", run=waiting)


async def _outcome_advance(
    conn: AsyncConnection,
    run: Run,
    definition: WorkflowDefinition,
    delivery: Delivery,
    rule: OnOutcomeRule,
    branch: Branchable,
    *,
    now: datetime,
) -> Progress:
    # The run leaves this step either way: a failed delivery must never be retried behind its back.
    await _retire_if_failed(conn, delivery, now=now)
    if _over_limit(run, definition):
        return await _stop_at_limit(conn, run, definition, "on_outcome", rule.to_step, delivery.id, now=now)
    context = {
        "rule_kind": "on_outcome",
        "workflow_outcome": branch.outcome,
        "anchor_delivery_id": str(delivery.id),
        "from_step": run.current_step,
        "to_step": rule.to_step,
        **branch.evidence,
    }
    await store.append_transition(
        conn,
        run,
        now=now,
        reason="progressed_on_delivery_outcome",
        from_state="active",
        to_state="active",
        step_key=run.current_step,
        delivery_id=delivery.id,
        context=context,
    )
    return await _activate(
        conn,
        run,
        definition,
        rule_kind="on_outcome",
        workflow_outcome=branch.outcome,
        anchor_delivery_id=str(delivery.id),
        to_step=rule.to_step,
        now=now,
    )


async def _timed_advance(db: Database, conn: AsyncConnection, run: Run, *, now: datetime) -> Progress:
    definition = await db.definition(run.definition_id, conn)
    wait = run.status_context
    to_step = str(wait["to_step"])
    anchor_delivery_id = wait.get("anchor_delivery_id")
    delivery_id = uuid.UUID(anchor_delivery_id) if anchor_delivery_id else None
    if _over_limit(run, definition):
        return await _stop_at_limit(conn, run, definition, "wait_until", to_step, delivery_id, now=now)
    await store.append_transition(
        conn,
        run,
        now=now,
        reason="reactivated_from_wait",
        from_state="waiting",
        to_state="active",
        step_key=run.current_step,
        delivery_id=delivery_id,
        context={**wait, "reactivated_at": store.iso(now)},
    )
    return await _activate(
        conn,
        run,
        definition,
        rule_kind="wait_until",
        workflow_outcome="wait_elapsed",
        anchor_delivery_id=anchor_delivery_id,
        to_step=to_step,
        now=now,
    )


async def _activate(
    conn: AsyncConnection,
    run: Run,
    definition: WorkflowDefinition,
    *,
    rule_kind: str,
    workflow_outcome: str,
    anchor_delivery_id: str | None,
    to_step: str,
    now: datetime,
) -> Progress:
    """Move the cursor to `to_step` and plan that activation's delivery (SPEC 4.4, both cases)."""
    advanced = await store.fetch_one(
        conn,
        Run,
        q.ACTIVATE_STEP,
        run_id=run.id,
        now=now,
        current_step=to_step,
        status_context={
            "rule_kind": rule_kind,
            "workflow_outcome": workflow_outcome,
            "anchor_delivery_id": anchor_delivery_id,
            "from_step": run.current_step,
            "to_step": to_step,
        },
    )
    planned = await plan_next_step_delivery(conn, advanced, definition.step(to_step), now=now)
    await store.append_transition(
        conn,
        advanced,
        now=now,
        reason="step_activated",
        from_state="active",
        to_state="active",
        step_key=to_step,
        delivery_id=planned.id,
        context={"step_key": to_step, "source": "progression"},
    )
    return Progress(kind="advanced", run=advanced, deliveries=[planned])


async def _retire_if_failed(conn: AsyncConnection, delivery: Delivery, *, now: datetime) -> None:
    """A `failed` delivery (temporary_failure) whose run leaves the step is cancelled as superseded."""
    if delivery.status == "failed":
        await move(conn, delivery, "cancelled", now=now, suppression_reason="superseded")


def _over_limit(run: Run, definition: WorkflowDefinition) -> bool:
    return run.step_activation + 1 > definition.max_step_activations


async def _stop_at_limit(
    conn: AsyncConnection,
    run: Run,
    definition: WorkflowDefinition,
    rule_kind: str,
    to_step: str,
    delivery_id: uuid.UUID | None,
    *,
    now: datetime,
) -> Progress:
    context = {
        "rule_kind": rule_kind,
        "from_step": run.current_step,
        "to_step": to_step,
        "step_activation": run.step_activation,
        "max_step_activations": definition.max_step_activations,
    }
    stopped = await store.finish_run(
        conn,
        run,
        now=now,
        state="stopped",
        status_reason="step_limit_exceeded",
        transition_reason="step_limit_exceeded",
        context=context,
        terminal_reason="limit:max_step_activations",
        delivery_id=delivery_id,
    )
    return Progress(kind="stopped", run=stopped)
