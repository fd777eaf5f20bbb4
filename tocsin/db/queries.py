"""Every SQL statement tocsin sends, built once at import (SQLAlchemy Core with named `bindparam`s).

Nothing composes a statement per call: where a query varies (a tenant filter, a lock), each variant is its
own constant below. Locks (`FOR UPDATE`, `SKIP LOCKED`) and conflict handling (`ON CONFLICT`) are written
where the statement is. The lock order every decision takes: the run, then its delivery.
`tocsin.db.store` runs these statements and turns their rows into models.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BindParameter,
    DateTime,
    Integer,
    Select,
    Text,
    any_,
    bindparam,
    cast,
    column,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID, insert
from sqlalchemy.sql.selectable import TableValuedAlias

from tocsin.core.vocabulary import UNFINISHED_RUN_STATES
from tocsin.db import tables as t

R = t.workflow_runs
D = t.deliveries
A = t.delivery_attempts
T = t.workflow_transitions
S = t.signals
W = t.workflow_definitions
I = t.run_items  # noqa: E741 (the items of batched runs, named like the other tables here)


def _p(name: str) -> BindParameter[Any]:
    """A named parameter; its type comes from the column it is compared with or assigned to."""
    return bindparam(name)


# --- the database handle ------------------------------------------------------------------------------------

PING = text("SELECT 1")
TAKE_MIGRATION_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
VERSION_TABLE_EXISTS = text("SELECT to_regclass('tocsin.alembic_version') IS NOT NULL")
CURRENT_REVISION = text("SELECT version_num FROM tocsin.alembic_version")

# --- definitions ---------------------------------------------------------------------------------------------

DEFINITION_SPEC = select(W.c.spec).where(W.c.id == _p("definition_id"))
DEFINITION_ID_OF_VERSION = select(W.c.id).where(W.c.key == _p("key"), W.c.version == _p("version"))
LATEST_DEFINITION_ID = select(W.c.id).where(W.c.key == _p("key")).order_by(W.c.version.desc()).limit(1)
INSERT_DEFINITION = (
    insert(W)
    .values(
        id=_p("id"),
        key=_p("key"),
        version=_p("version"),
        spec=_p("spec"),
        checksum=_p("checksum"),
        created_at=_p("now"),
    )
    # Definitions are immutable: the caller compares checksums with whatever row is there.
    .on_conflict_do_nothing(index_elements=[W.c.key, W.c.version])
)
DEFINITION_BY_KEY_VERSION = select(W).where(W.c.key == _p("key"), W.c.version == _p("version"))
ALL_DEFINITIONS = select(W).order_by(W.c.key, W.c.version)

# --- runs ------------------------------------------------------------------------------------------------------

RUN = select(R).where(R.c.id == _p("run_id"))
RUN_OF_TENANT = RUN.where(R.c.tenant_id == _p("tenant_id"))
RUN_FOR_UPDATE = RUN.with_for_update()
RUN_OF_TENANT_FOR_UPDATE = RUN_OF_TENANT.with_for_update()

# What every new run is made of; the state it starts in is the statement's own.
_NEW_RUN = {
    "id": _p("id"),
    "tenant_id": _p("tenant_id"),
    "definition_id": _p("definition_id"),
    "workflow_key": _p("workflow_key"),
    "workflow_version": _p("workflow_version"),
    "recipient": _p("recipient"),
    "data": _p("data"),
    "idempotency_key": _p("idempotency_key"),
    "throttle_key": _p("throttle_key"),
    "batch_key": _p("batch_key"),
    "current_step": _p("current_step"),
    "step_activation": 1,
    "step_activated_at": _p("now"),
    "started_at": _p("now"),
    "last_transition_at": _p("now"),
    "created_at": _p("now"),
    "updated_at": _p("now"),
}
INSERT_RUN = (
    insert(R)
    .values(
        **_NEW_RUN,
        state="active",
        status_reason="workflow_started",
        status_context={"source": "start_run"},
    )
    # A concurrent twin with the same key may win the race: then no row comes back and the caller reads it.
    .on_conflict_do_nothing(index_elements=[R.c.tenant_id, R.c.idempotency_key])
    .returning(*R.c)
)
# SPEC 11.5: a new batch. No conflict target: a batch another trigger opened in the scope meanwhile (the partial
# unique index workflow_runs_open_batch) and a twin with the same key both return no row, and the caller looks.
OPEN_BATCH = (
    insert(R)
    .values(
        **_NEW_RUN,
        state="collecting",
        status_reason="collecting_batch",
        status_context=_p("status_context"),
        due_at=_p("due_at"),
    )
    .on_conflict_do_nothing()
    .returning(*R.c)
)
# The run a trigger's key already names: the run's own key, or an item's of a batched run. One round trip, two
# index probes; `item_position` says where the trigger sits (1: it started the run, or opened the batch).
RUN_BY_TRIGGER_KEY = union_all(
    select(R, literal(1).label("item_position")).where(
        R.c.tenant_id == _p("tenant_id"), R.c.idempotency_key == _p("idempotency_key")
    ),
    select(R, I.c.position.label("item_position"))
    .join(I, I.c.run_id == R.c.id)
    .where(I.c.tenant_id == _p("tenant_id"), I.c.idempotency_key == _p("idempotency_key")),
).limit(1)
# SPEC 11.5: the triggers of one key take turns (a transaction-scoped advisory lock on a hash of the key), so a
# retried trigger finds what its first attempt wrote, whichever batch that went to.
LOCK_TRIGGER_KEY = text("SELECT pg_advisory_xact_lock(hashtextextended(:trigger, 0))")
# The scope's open batch, locked (an UPDATE locks its row) and touched: a join is a transition. A trigger queued
# behind the transaction that closed it re-reads the row, finds it no longer collecting, and gets none. A NULL key
# is its own statement, so that both use the partial unique index. The parameters are named scope_*: an UPDATE
# reserves its columns' names for the values it sets.
_JOIN_OPEN_BATCH = (
    update(R)
    .where(
        R.c.tenant_id == _p("scope_tenant_id"),
        R.c.workflow_key == _p("scope_workflow_key"),
        R.c.recipient == _p("scope_recipient"),
        R.c.state == "collecting",
    )
    .values(updated_at=_p("now"), last_transition_at=_p("now"))
)
JOIN_OPEN_BATCH_KEYED = _JOIN_OPEN_BATCH.where(R.c.batch_key == _p("scope_batch_key")).returning(*R.c)
JOIN_OPEN_BATCH_UNKEYED = _JOIN_OPEN_BATCH.where(R.c.batch_key.is_(None)).returning(*R.c)

# SPEC 11.4: triggers of one throttle scope queue on one transaction-scoped advisory lock (on a hash of the
# scope), so the count below and the INSERT that follows it are one decision.
LOCK_THROTTLE_SCOPE = text("SELECT pg_advisory_xact_lock(hashtextextended(:scope, 0))")
# The scope's runs created in (since, now] that were not themselves throttled. A NULL key (a throttle without
# a key template) is its own statement, so both use the scope index.
_THROTTLE_COUNT = select(func.count()).where(
    R.c.tenant_id == _p("tenant_id"),
    R.c.workflow_key == _p("workflow_key"),
    R.c.recipient == _p("recipient"),
    R.c.created_at > _p("since"),
    R.c.created_at <= _p("now"),
    R.c.status_reason != "throttled",
)
THROTTLE_COUNT_KEYED = _THROTTLE_COUNT.where(R.c.throttle_key == _p("throttle_key"))
THROTTLE_COUNT_UNKEYED = _THROTTLE_COUNT.where(R.c.throttle_key.is_(None))

# One UPDATE per kind of decision on a locked run; each is also a transition, so last_transition_at moves.
_MOVE_RUN = update(R).where(R.c.id == _p("run_id")).values(updated_at=_p("now"), last_transition_at=_p("now"))
ENTER_WAIT = _MOVE_RUN.values(
    state="waiting",
    status_reason="waiting_for_step_progression",
    status_context=_p("status_context"),
    due_at=_p("due_at"),
    pending_signals=_p("pending_signals"),
).returning(*R.c)
# What every activation and every finish sets besides its own values (the due sweep's set UPDATEs share them).
_ACTIVATED: dict[str, Any] = {
    "state": "active",
    "step_activation": R.c.step_activation + 1,
    "step_activated_at": _p("now"),
    "due_at": None,
    "pending_signals": [],
    "status_reason": "progressed_on_delivery_outcome",
}
_FINISHED: dict[str, Any] = {"due_at": None, "pending_signals": []}
ACTIVATE_STEP = _MOVE_RUN.values(
    current_step=_p("current_step"), status_context=_p("status_context"), **_ACTIVATED
).returning(*R.c)
FINISH_RUN = _MOVE_RUN.values(
    state=_p("state"),
    status_reason=_p("status_reason"),
    status_context=_p("status_context"),
    terminal_reason=_p("terminal_reason"),
    **_FINISHED,
).returning(*R.c)

# SPEC 11.5: a batch closes; its first step is activated now (activation 1 stays: the step never ran).
_CLOSED: dict[str, Any] = {
    "state": "active",
    "step_activated_at": _p("now"),
    "due_at": None,
    "status_reason": "batch_closed",
}
CLOSE_BATCH = _MOVE_RUN.values(status_context=_p("status_context"), **_CLOSED).returning(*R.c)

MARK_WORKFLOW_STARTED = (
    update(R).where(R.c.id == _p("run_id"), R.c.workflow_started.is_(False)).values(workflow_started=True)
)


def _due_for_update(state: str) -> Select[Any]:
    """Up to `batch` runs in `state` whose due_at has come, oldest due first, keyset-paged past (after_due_at,
    after_id), locked: each run is visited at most once per sweep, and one another transaction holds is left to it
    (SKIP LOCKED). One statement per state, so that each uses its own partial index."""
    return (
        select(R)
        .where(
            R.c.state == state,
            R.c.due_at <= _p("due_by"),
            tuple_(R.c.due_at, R.c.id) > tuple_(_p("after_due_at"), _p("after_id")),
        )
        .order_by(R.c.due_at, R.c.id)
        .limit(bindparam("batch", type_=Integer))
        .with_for_update(skip_locked=True)
    )


# The due sweep's batches: waits whose gate is due (SPEC 4.9), batches whose window has passed (SPEC 11.5).
DUE_RUNS_FOR_UPDATE = _due_for_update("waiting")
DUE_BATCHES_FOR_UPDATE = _due_for_update("collecting")

# A signal locks every unfinished run of the recipient (or the one run it targets), in id order.
RECIPIENT_RUNS_FOR_UPDATE = (
    select(R)
    .where(R.c.tenant_id == _p("tenant_id"), R.c.recipient == _p("recipient"), R.c.state.in_(UNFINISHED_RUN_STATES))
    .order_by(R.c.id)
    .with_for_update()
)
TARGET_RUN_FOR_UPDATE = RECIPIENT_RUNS_FOR_UPDATE.where(R.c.id == _p("run_id"))

# The runs among a list of ids that may still change (the reconcile sweep's check of closed workflows).
UNFINISHED_RUNS_BY_ID = select(R).where(
    R.c.id == any_(bindparam("run_ids", type_=ARRAY(UUID(as_uuid=True)))), R.c.state.in_(UNFINISHED_RUN_STATES)
)
# Runs committed but never handed to Temporal (the process died between the two steps of start_run).
UNSTARTED_RUNS = (
    select(R)
    .where(R.c.workflow_started.is_(False), R.c.state.in_(UNFINISHED_RUN_STATES), R.c.created_at <= _p("created_by"))
    .order_by(R.c.created_at)
    .limit(_p("limit"))
)

# The API's listing: newest first, keyset-paged before (before_created_at, before_id). A filter left out is
# passed as NULL and matches every row, so one statement serves every combination.
LIST_RUNS = (
    select(R)
    .where(
        R.c.tenant_id == _p("tenant_id"),
        R.c.state == any_(bindparam("states", type_=ARRAY(Text))),
        R.c.recipient == func.coalesce(bindparam("recipient", type_=Text), R.c.recipient),
        R.c.workflow_key == func.coalesce(bindparam("workflow_key", type_=Text), R.c.workflow_key),
        tuple_(R.c.created_at, R.c.id) < tuple_(_p("before_created_at"), _p("before_id")),
    )
    .order_by(R.c.created_at.desc(), R.c.id.desc())
    .limit(bindparam("limit", type_=Integer))
)

# --- the items of batched runs (SPEC 11.5) ------------------------------------------------------------------

# Numbered in the INSERT itself, as transitions are; the caller holds the run's lock, so max + 1 is safe.
INSERT_ITEM = (
    insert(I)
    .values(
        id=_p("id"),
        run_id=_p("run_id"),
        tenant_id=_p("tenant_id"),
        idempotency_key=_p("idempotency_key"),
        data=_p("data"),
        position=select(func.coalesce(func.max(I.c.position), 0) + 1)
        .where(I.c.run_id == _p("run_id"))
        .scalar_subquery(),
        created_at=_p("now"),
    )
    .returning(*I.c)
)
RUN_ITEMS = select(I).where(I.c.run_id == _p("run_id")).order_by(I.c.position)

# --- transitions ------------------------------------------------------------------------------------------------

# Numbered in the INSERT itself; the caller holds the run's lock, so max + 1 is safe.
APPEND_TRANSITION = insert(T).values(
    run_id=_p("run_id"),
    seq=select(func.coalesce(func.max(T.c.seq), 0) + 1).where(T.c.run_id == _p("run_id")).scalar_subquery(),
    step_key=_p("step_key"),
    delivery_id=_p("delivery_id"),
    from_state=_p("from_state"),
    to_state=_p("to_state"),
    reason=_p("reason"),
    context=_p("context"),
    created_at=_p("now"),
)
RUN_TRANSITIONS = select(T).where(T.c.run_id == _p("run_id")).order_by(T.c.seq)

# --- deliveries -------------------------------------------------------------------------------------------------

INSERT_DELIVERY = (
    insert(D)
    .values(
        id=_p("id"),
        run_id=_p("run_id"),
        tenant_id=_p("tenant_id"),
        step_key=_p("step_key"),
        activation=_p("activation"),
        channel=_p("channel"),
        recipient=_p("recipient"),
        status="pending",
        content=_p("content"),
        attempt_count=0,
        scheduled_for=_p("scheduled_for"),
        send_timezone=_p("send_timezone"),
        created_at=_p("now"),
        updated_at=_p("now"),
    )
    # One delivery per step activation: a retried or concurrent planner gets no row back and reads the winner's.
    .on_conflict_do_nothing(index_elements=[D.c.run_id, D.c.activation])
    .returning(*D.c)
)
DELIVERY_FOR_UPDATE = select(D).where(D.c.id == _p("delivery_id")).with_for_update()
DELIVERY_RUN_ID = select(D.c.run_id).where(D.c.id == _p("delivery_id"))
DELIVERY_RUN_ID_OF_TENANT = select(D.c.run_id).where(D.c.id == _p("delivery_id"), D.c.tenant_id == _p("tenant_id"))
STEP_DELIVERY = select(D).where(D.c.run_id == _p("run_id"), D.c.activation == _p("activation"))
STEP_DELIVERY_FOR_UPDATE = STEP_DELIVERY.with_for_update()
# The locked step delivery and what outcome_of reads of its latest attempt (the outcome and error class of the
# highest attempt_number), in one round trip. The lateral read sees the attempts committed when the statement
# began, not those of a transaction it waited for on the delivery's lock: that is safe because every writer of
# attempts holds the run's lock (store.lock_delivery_and_run), which the caller took before this statement.
_LATEST_ATTEMPT_OF_D = (
    select(A.c.outcome.label("latest_outcome"), A.c.error_class.label("latest_error_class"))
    .where(A.c.delivery_id == D.c.id)
    .order_by(A.c.attempt_number.desc())
    .limit(1)
    .lateral("latest_attempt")
)
STEP_DELIVERY_WITH_LATEST_ATTEMPT_FOR_UPDATE = (
    select(D, _LATEST_ATTEMPT_OF_D)
    .select_from(D.outerjoin(_LATEST_ATTEMPT_OF_D, true()))
    .where(D.c.run_id == _p("run_id"), D.c.activation == _p("activation"))
    .with_for_update(of=D)
)
OPEN_DELIVERIES_FOR_UPDATE = (
    select(D)
    .where(D.c.run_id == _p("run_id"), D.c.status.in_(("pending", "failed")))
    .order_by(D.c.activation)
    .with_for_update()
)
RUN_DELIVERIES = select(D).where(D.c.run_id == _p("run_id")).order_by(D.c.activation)

# A status move on a locked delivery (the caller checked it is legal). NULL keeps a column as it is:
# terminal_at is stamped once, provider_message_id is filled in once, suppression_reason set when given.
MOVE_DELIVERY = (
    update(D)
    .where(D.c.id == _p("delivery_id"))
    .values(
        status=_p("status"),
        suppression_reason=func.coalesce(bindparam("suppression_reason", type_=Text), D.c.suppression_reason),
        terminal_at=func.coalesce(D.c.terminal_at, _p("terminal_at")),
        provider_message_id=func.coalesce(D.c.provider_message_id, bindparam("provider_message_id", type_=Text)),
        updated_at=_p("now"),
    )
    .returning(*D.c)
)
# `pending` or `failed` -> `dispatched`: one more send begins, and attempt_count counts it.
BEGIN_SEND = (
    update(D)
    .where(D.c.id == _p("delivery_id"))
    .values(status="dispatched", attempt_count=D.c.attempt_count + 1, updated_at=_p("now"))
    .returning(*D.c)
)
# SPEC 11.3: when the next send may go out (a retry's backoff, moved into the send window) ...
SCHEDULE_NEXT_SEND = (
    update(D)
    .where(D.c.id == _p("delivery_id"))
    .values(scheduled_for=_p("scheduled_for"), updated_at=_p("now"))
    .returning(*D.c)
)
# ... and when a send the provider took settles as delivered if no report came. Stamped by the clock of the
# provider's answer, which may be behind the one that began the send: updated_at never moves back.
SET_FEEDBACK_DEADLINE = (
    update(D)
    .where(D.c.id == _p("delivery_id"))
    .values(feedback_due_at=_p("feedback_due_at"), updated_at=func.greatest(D.c.updated_at, _p("now")))
    .returning(*D.c)
)
# The next overdue feedback deadline, keyset-paged past (after_due_at, after_id). The run is locked first
# (the lock order), SKIP LOCKED: a run another transaction holds is left to it; the caller then locks the
# delivery and checks it again.
NEXT_OVERDUE_FEEDBACK = (
    select(D.c.id, D.c.feedback_due_at)
    .join(R, R.c.id == D.c.run_id)
    .where(
        D.c.status == "dispatched",
        D.c.feedback_due_at <= _p("due_by"),
        tuple_(D.c.feedback_due_at, D.c.id) > tuple_(_p("after_due_at"), _p("after_id")),
    )
    .order_by(D.c.feedback_due_at, D.c.id)
    .limit(1)
    .with_for_update(of=R, skip_locked=True)
)
# Active runs whose current delivery's next send is overdue: their workflow's timer was lost (the sweep wakes
# them, as it rescues lost waits).
OVERDUE_SENDS = (
    select(R.c.id)
    .join(D, (D.c.run_id == R.c.id) & (D.c.activation == R.c.step_activation))
    .where(
        R.c.state == "active",
        D.c.status.in_(("pending", "failed")),
        D.c.scheduled_for <= _p("due_by"),
    )
    .order_by(D.c.scheduled_for)
    .limit(bindparam("limit", type_=Integer))
)
FILL_PROVIDER_MESSAGE_ID = (
    update(D)
    .where(D.c.id == _p("delivery_id"), D.c.provider_message_id.is_(None))
    .values(provider_message_id=_p("provider_message_id"), updated_at=_p("now"))
    .returning(*D.c)
)
# In-app receipts, one statement per receipt; the caller stamps only a receipt not stamped yet.
STAMP_READ = (
    update(D).where(D.c.id == _p("delivery_id")).values(read_at=_p("now"), updated_at=_p("now")).returning(*D.c)
)
STAMP_SEEN = (
    update(D).where(D.c.id == _p("delivery_id")).values(seen_at=_p("now"), updated_at=_p("now")).returning(*D.c)
)

INBOX = (
    select(D)
    .where(
        D.c.tenant_id == _p("tenant_id"),
        D.c.recipient == _p("recipient"),
        D.c.channel == "in_app",
        D.c.status == "succeeded",
    )
    .order_by(D.c.created_at.desc(), D.c.id.desc())
    .limit(bindparam("limit", type_=Integer))
)
INBOX_UNREAD = INBOX.where(D.c.read_at.is_(None))

# --- attempts ---------------------------------------------------------------------------------------------------

# attempt_number numbers every row of a delivery (send results and provider feedback alike), in the INSERT
# itself; the caller holds the delivery's lock, so max + 1 is safe. send_number says which send the row is
# the result of (NULL: provider feedback, or a rejection before any send).
INSERT_ATTEMPT = insert(A).values(
    delivery_id=_p("delivery_id"),
    attempt_number=select(func.coalesce(func.max(A.c.attempt_number), 0) + 1)
    .where(A.c.delivery_id == _p("delivery_id"))
    .scalar_subquery(),
    send_number=_p("send_number"),
    outcome=_p("outcome"),
    error_class=_p("error_class"),
    error=_p("error"),
    provider_message_id=_p("provider_message_id"),
    provider_response=_p("provider_response"),
    created_at=_p("now"),
)
SEND_RESULT_RECORDED = select(
    exists().where(A.c.delivery_id == _p("delivery_id"), A.c.send_number == _p("send_number"))
)
RUN_ATTEMPTS = (
    select(A)
    .join(D, D.c.id == A.c.delivery_id)
    .where(D.c.run_id == _p("run_id"))
    .order_by(D.c.activation, A.c.attempt_number)
)

# --- signals ----------------------------------------------------------------------------------------------------

INSERT_SIGNAL = insert(S).values(
    id=_p("id"),
    tenant_id=_p("tenant_id"),
    recipient=_p("recipient"),
    run_id=_p("run_id"),
    name=_p("name"),
    data=_p("data"),
    created_at=_p("now"),
)
# A signal that would cancel a wait and was recorded since the step was activated (SPEC 4.3).
EARLIEST_CANCELLING_SIGNAL = (
    select(S.c.id, S.c.name)
    .where(
        S.c.tenant_id == _p("tenant_id"),
        S.c.recipient == _p("recipient"),
        or_(S.c.run_id == _p("run_id"), S.c.run_id.is_(None)),
        S.c.name == any_(bindparam("names", type_=ARRAY(Text))),
        S.c.created_at >= _p("since"),
    )
    .order_by(S.c.created_at, S.c.id)
    .limit(1)
)

# --- the due sweep: the decisions of a batch of locked runs, one set statement per kind of row ---------------
#
# Each takes one array per column, `each_<column>` (unnest() zips them into rows; the bare column names are
# SQLAlchemy's in INSERT and UPDATE), JSON as text cast to jsonb. Every statement below is the set form of a
# single-decision statement above and writes exactly what it writes.

_UUID = UUID(as_uuid=True)
_NOW = bindparam("now", type_=DateTime(timezone=True))


def _each(name: str, kind: Any) -> BindParameter[Any]:
    return bindparam(f"each_{name}", type_=ARRAY(kind))


def _rows(*columns: tuple[str, Any]) -> TableValuedAlias:
    """`unnest(:each_a, :each_b, ...) AS u(a, b, ...)`: one bound array per column."""
    arrays = [_each(name, kind) for name, kind in columns]
    return func.unnest(*arrays).table_valued(*(column(name, kind) for name, kind in columns)).render_derived(name="u")


# An UPDATE joined to its rows also names its keys as `= ANY(...)`: the planner then looks each row up by its
# key instead of hashing the whole table (it cannot see which rows an unnest() will yield). The run UPDATEs
# return the id and the columns they set but status_context: the caller holds the rest, the row it locked, and
# the context it sent (no JSON read back to decode).
_activations = _rows(("run_id", _UUID), ("current_step", Text), ("status_context", Text))
_ACTIVATIONS_SET: dict[str, Any] = {
    "current_step": _activations.c.current_step,
    "status_context": cast(_activations.c.status_context, JSONB),
    "updated_at": _NOW,
    "last_transition_at": _NOW,
    **_ACTIVATED,
}
ACTIVATE_STEPS = (
    update(R)
    .where(R.c.id == _activations.c.run_id, R.c.id == any_(_each("run_id", _UUID)))
    .values(**_ACTIVATIONS_SET)
    .returning(R.c.id, *(R.c[name] for name in _ACTIVATIONS_SET if name != "status_context"))
)
_finishes = _rows(
    ("run_id", _UUID), ("state", Text), ("status_reason", Text), ("status_context", Text), ("terminal_reason", Text)
)
_FINISHES_SET: dict[str, Any] = {
    "state": _finishes.c.state,
    "status_reason": _finishes.c.status_reason,
    "status_context": cast(_finishes.c.status_context, JSONB),
    "terminal_reason": _finishes.c.terminal_reason,
    "updated_at": _NOW,
    "last_transition_at": _NOW,
    **_FINISHED,
}
FINISH_RUNS = (
    update(R)
    .where(R.c.id == _finishes.c.run_id, R.c.id == any_(_each("run_id", _UUID)))
    .values(**_FINISHES_SET)
    .returning(R.c.id, *(R.c[name] for name in _FINISHES_SET if name != "status_context"))
)
_closes = _rows(("run_id", _UUID), ("status_context", Text))
_CLOSES_SET: dict[str, Any] = {
    "status_context": cast(_closes.c.status_context, JSONB),
    "updated_at": _NOW,
    "last_transition_at": _NOW,
    **_CLOSED,
}
CLOSE_BATCHES = (
    update(R)
    .where(R.c.id == _closes.c.run_id, R.c.id == any_(_each("run_id", _UUID)))
    .values(**_CLOSES_SET)
    .returning(R.c.id, *(R.c[name] for name in _CLOSES_SET if name != "status_context"))
)
# RUN_ITEMS of many runs: the items of the batched runs among a sweep's batch, each run's in position order.
ITEMS_OF_RUNS = select(I).where(I.c.run_id == any_(_each("run_id", _UUID))).order_by(I.c.run_id, I.c.position)

# `ordinal` numbers a run's transitions within the batch (1, 2, ...): seq = the run's highest before + ordinal,
# all computed against the rows before this statement (the runs are locked).
_transitions = _rows(
    ("run_id", _UUID),
    ("ordinal", Integer),
    ("step_key", Text),
    ("delivery_id", _UUID),
    ("from_state", Text),
    ("to_state", Text),
    ("reason", Text),
    ("context", Text),
)
APPEND_TRANSITIONS = insert(T).from_select(
    ["run_id", "seq", "step_key", "delivery_id", "from_state", "to_state", "reason", "context", "created_at"],
    select(
        _transitions.c.run_id,
        func.coalesce(select(func.max(T.c.seq)).where(T.c.run_id == _transitions.c.run_id).scalar_subquery(), 0)
        + _transitions.c.ordinal,
        _transitions.c.step_key,
        _transitions.c.delivery_id,
        _transitions.c.from_state,
        _transitions.c.to_state,
        _transitions.c.reason,
        cast(_transitions.c.context, JSONB),
        _NOW,
    ),
)

_deliveries = _rows(
    ("id", _UUID),
    ("run_id", _UUID),
    ("tenant_id", Text),
    ("step_key", Text),
    ("activation", Integer),
    ("channel", Text),
    ("recipient", Text),
    ("content", Text),
    ("scheduled_for", DateTime(timezone=True)),
    ("send_timezone", Text),
)
INSERT_DELIVERIES = (
    insert(D)
    .from_select(
        [
            "id",
            "run_id",
            "tenant_id",
            "step_key",
            "activation",
            "channel",
            "recipient",
            "status",
            "content",
            "attempt_count",
            "scheduled_for",
            "send_timezone",
            "created_at",
            "updated_at",
        ],
        select(
            _deliveries.c.id,
            _deliveries.c.run_id,
            _deliveries.c.tenant_id,
            _deliveries.c.step_key,
            _deliveries.c.activation,
            _deliveries.c.channel,
            _deliveries.c.recipient,
            literal("pending"),
            cast(_deliveries.c.content, JSONB),
            literal(0),
            _deliveries.c.scheduled_for,
            _deliveries.c.send_timezone,
            _NOW,
            _NOW,
        ),
    )
    # As INSERT_DELIVERY: a row some planner already wrote stays, and the caller reads it back.
    .on_conflict_do_nothing(index_elements=[D.c.run_id, D.c.activation])
    # All but the content, which the caller sent (no JSON read back to decode).
    .returning(*(c for c in D.c if c.name != "content"))
)
_activations_of = _rows(("run_id", _UUID), ("activation", Integer))
STEP_DELIVERIES_FOR_UPDATE = (
    select(D)
    .join(_activations_of, (D.c.run_id == _activations_of.c.run_id) & (D.c.activation == _activations_of.c.activation))
    .where(D.c.run_id == any_(_each("run_id", _UUID)))
    .with_for_update(of=D)
)
# MOVE_DELIVERY for many locked deliveries (the caller checked each move): a NULL terminal_at or
# suppression_reason keeps the column as it is.
_moves = _rows(("id", _UUID), ("status", Text), ("suppression_reason", Text), ("terminal_at", DateTime(timezone=True)))
MOVE_DELIVERIES = (
    update(D)
    .where(D.c.id == _moves.c.id, D.c.id == any_(_each("id", _UUID)))
    .values(
        status=_moves.c.status,
        suppression_reason=func.coalesce(_moves.c.suppression_reason, D.c.suppression_reason),
        terminal_at=func.coalesce(D.c.terminal_at, _moves.c.terminal_at),
        updated_at=_NOW,
    )
    .returning(*D.c)
)
# INSERT_ATTEMPT for rejections recorded before any send (no send number, no provider, nothing it answered).
_rejections = _rows(("delivery_id", _UUID), ("outcome", Text), ("error_class", Text), ("error", Text))
INSERT_REJECTIONS = insert(A).from_select(
    ["delivery_id", "attempt_number", "outcome", "error_class", "error", "provider_response", "created_at"],
    select(
        _rejections.c.delivery_id,
        func.coalesce(
            select(func.max(A.c.attempt_number)).where(A.c.delivery_id == _rejections.c.delivery_id).scalar_subquery(),
            0,
        )
        + 1,
        _rejections.c.outcome,
        _rejections.c.error_class,
        _rejections.c.error,
        cast(literal("{}"), JSONB),
        _NOW,
    ),
)
