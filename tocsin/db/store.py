"""Running the statements of `tocsin.db.queries`: rows into models, and the row operations every decision shares
(locking a run, then its delivery; moving them; appending to the audit trail and the attempt log).

Every function takes the open transaction's connection; none commits.

Inside `Database.transaction()` a statement goes to asyncpg directly: compiled by SQLAlchemy once (per
statement and set of parameter names, exactly as its own execute would compile it), prepared once per
connection (an asyncpg PreparedStatement kept for it), its parameters bound and its rows read with the same
type processing as SQLAlchemy's. SQLAlchemy's execute costs ~110 us of Python per statement on top of
asyncpg's ~65 us, about half of a decision's client time (bench/RESULTS.md, issue 14). Errors are raised as
SQLAlchemy would (`tocsin.db.database.driver_failed`). A connection outside such a transaction, or a statement
with an IN list that SQLAlchemy expands per call, goes through SQLAlchemy's execute as before.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from asyncpg.prepared_stmt import PreparedStatement
from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import Pool

from tocsin.core.errors import DeliveryNotFound, RunNotFound
from tocsin.core.models import Delivery, Row, Run, StartedRun
from tocsin.db import queries as q
from tocsin.db.database import driver_failed, driver_of

M = TypeVar("M", bound=Row)
StatementListener = Callable[[str, Sequence[Any]], None]

# (tenant-scoped, locked) -> the statement that reads one run by id.
_RUN_BY_ID = {
    (False, False): q.RUN,
    (True, False): q.RUN_OF_TENANT,
    (False, True): q.RUN_FOR_UPDATE,
    (True, True): q.RUN_OF_TENANT_FOR_UPDATE,
}
_STAMPS = {"read_at": q.STAMP_READ, "seen_at": q.STAMP_SEEN}


@dataclass(frozen=True)
class AttemptOutcome:
    """What outcome_of needs from a delivery's latest attempt row."""

    outcome: str
    error_class: str | None


@dataclass(frozen=True)
class SignalRef:
    id: uuid.UUID
    name: str


# --- sending a statement ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bind:
    name: str
    required: bool  # a named parameter the caller passes; else a value written in the statement itself
    value: Any
    process: Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    """A statement as SQLAlchemy's asyncpg dialect compiles it: the text, its $n parameters, its columns."""

    statement: Executable  # kept alive: the cache is keyed by its id
    sql: str
    binds: tuple[_Bind, ...]
    columns: tuple[str, ...]
    processed: tuple[tuple[str, Callable[[Any], Any]], ...]  # the columns whose values SQLAlchemy converts


_COMPILED: dict[tuple[int, frozenset[str]], _Compiled | None] = {}
_PREPARED_KEY = "tocsin.db.store.prepared"
_LISTENERS: weakref.WeakKeyDictionary[Pool, list[StatementListener]] = weakref.WeakKeyDictionary()


def listen_statements(engine: AsyncEngine, listener: StatementListener) -> None:
    """Call `listener(sql, parameters)` for every statement this module sends to asyncpg on `engine`'s pool
    (SQLAlchemy's `before_cursor_execute` event sees the statements sent through SQLAlchemy)."""
    _LISTENERS.setdefault(engine.sync_engine.pool, []).append(listener)


def _prepared(conn: AsyncConnection) -> dict[str, PreparedStatement]:
    """The statements prepared on `conn`'s driver connection, by text: each is prepared once per connection, as
    the floor of bench/engine_floor.py does (asyncpg's PreparedStatement skips Connection.fetch's statement-cache
    lookup). Kept in the pool's info of that connection, which SQLAlchemy drops with it (and clears when it
    reconnects), so no statement outlives the connection it was prepared on."""
    info = conn.sync_connection.connection.info  # type: ignore[union-attr]  # valid: the caller checked driver_of
    prepared: dict[str, PreparedStatement] | None = info.get(_PREPARED_KEY)
    if prepared is None:
        prepared = info[_PREPARED_KEY] = {}
    return prepared


def _compiled(conn: AsyncConnection, statement: Executable, params: dict[str, Any]) -> _Compiled | None:
    # SQLAlchemy compiles an INSERT or UPDATE for the parameter names it is given: so does this cache.
    key = (id(statement), frozenset(params))
    if key in _COMPILED:
        return _COMPILED[key]
    dialect = conn.dialect
    compiled = statement.compile(dialect=dialect, column_keys=sorted(params))  # type: ignore[attr-defined]
    found: _Compiled | None = None
    if not any(bind.expanding for bind in compiled.binds.values()):
        values = compiled.construct_params(_check=False)
        result_columns = compiled._result_columns
        columns = tuple(column[0] for column in result_columns)
        process = (column[3].dialect_impl(dialect).result_processor(dialect, None) for column in result_columns)
        found = _Compiled(
            statement,
            compiled.string,
            tuple(
                _Bind(
                    name,
                    compiled.binds[name].required,
                    values.get(name),
                    compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
                )
                for name in compiled.positiontup or ()
            ),
            columns,
            tuple((name, p) for name, p in zip(columns, process, strict=True) if p is not None),
        )
    _COMPILED[key] = found
    return found


async def _rows(conn: AsyncConnection, statement: Executable, params: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The statement's rows, sent to asyncpg directly; None where SQLAlchemy must send it (see the module doc)."""
    compiled = _compiled(conn, statement, params)
    if compiled is None:
        return None
    driver = driver_of(conn)
    if driver is None or not driver.is_in_transaction():
        return None
    args = []
    for bind in compiled.binds:
        value = params[bind.name] if bind.required else params.get(bind.name, bind.value)
        args.append(bind.process(value) if bind.process is not None else value)
    for listener in _LISTENERS.get(conn.sync_engine.pool, ()):
        listener(compiled.sql, args)
    prepared = _prepared(conn)
    try:
        statement_on_driver = prepared.get(compiled.sql)
        if statement_on_driver is None:
            statement_on_driver = prepared[compiled.sql] = await driver.prepare(compiled.sql)
        records = await statement_on_driver.fetch(*args)
    except BaseException as error:
        # Prepared again next time: a statement the server no longer accepts (a schema change) is not kept.
        prepared.pop(compiled.sql, None)
        failure = await driver_failed(conn, error, compiled.sql, args)
        if failure is error:
            raise
        raise failure from error
    columns = compiled.columns
    if not columns:  # a textual statement: its columns are what the server named them
        return [dict(record.items()) for record in records]
    rows = [dict(zip(columns, record, strict=True)) for record in records]
    for name, process in compiled.processed:
        for row in rows:
            row[name] = process(row[name])
    return rows


async def fetch_one(conn: AsyncConnection, model: type[M], statement: Executable, **params: Any) -> M:
    """The one row a statement returns (an INSERT or UPDATE ... RETURNING), as a model."""
    rows = await _rows(conn, statement, params)
    if rows is None:
        return model.of((await conn.execute(statement, params)).mappings().one())
    if len(rows) != 1:
        raise RuntimeError(f"expected one row, got {len(rows)}")
    return model.of(rows[0])


async def fetch_first(conn: AsyncConnection, model: type[M], statement: Executable, **params: Any) -> M | None:
    rows = await _rows(conn, statement, params)
    if rows is None:
        row = (await conn.execute(statement, params)).mappings().first()
        return model.of(row) if row is not None else None
    return model.of(rows[0]) if rows else None


async def fetch_all(conn: AsyncConnection, model: type[M], statement: Executable, **params: Any) -> list[M]:
    rows = await _rows(conn, statement, params)
    if rows is None:
        return [model.of(row) for row in (await conn.execute(statement, params)).mappings().all()]
    return [model.of(row) for row in rows]


async def first_row(conn: AsyncConnection, statement: Executable, **params: Any) -> dict[str, Any] | None:
    """The first row a statement returns, by column name; None if it returns none."""
    rows = await _rows(conn, statement, params)
    if rows is None:
        row = (await conn.execute(statement, params)).mappings().first()
        return dict(row) if row is not None else None
    return rows[0] if rows else None


async def fetch_rows(conn: AsyncConnection, statement: Executable, **params: Any) -> list[dict[str, Any]]:
    """The rows a statement returns, by column name (for a statement that returns part of a row)."""
    rows = await _rows(conn, statement, params)
    if rows is None:
        return [dict(row) for row in (await conn.execute(statement, params)).mappings().all()]
    return rows


async def execute(conn: AsyncConnection, statement: Executable, **params: Any) -> None:
    if await _rows(conn, statement, params) is None:
        await conn.execute(statement, params)


async def scalar(conn: AsyncConnection, statement: Executable, **params: Any) -> Any:
    """The first column of the first row; None if there is no row."""
    row = await first_row(conn, statement, **params)
    return next(iter(row.values())) if row is not None else None


# --- runs ----------------------------------------------------------------------------------------------------


async def get_run(conn: AsyncConnection, run_id: uuid.UUID, *, tenant_id: str | None = None, lock: bool = False) -> Run:
    """The run row; with `tenant_id`, another tenant's run looks like no run at all (RunNotFound)."""
    statement = _RUN_BY_ID[(tenant_id is not None, lock)]
    params: dict[str, Any] = {"run_id": run_id} if tenant_id is None else {"run_id": run_id, "tenant_id": tenant_id}
    run = await fetch_first(conn, Run, statement, **params)
    if run is None:
        raise RunNotFound(f"run {run_id} not found" + (f" for tenant {tenant_id!r}" if tenant_id else ""))
    return run


async def run_by_trigger_key(conn: AsyncConnection, tenant_id: str, idempotency_key: str) -> StartedRun | None:
    """The run a trigger's key names (SPEC 4.0, 11.5): by the run's own key, or an item's of a batched run;
    `joined` when that item is not its batch's first."""
    row = await first_row(conn, q.RUN_BY_TRIGGER_KEY, tenant_id=tenant_id, idempotency_key=idempotency_key)
    return StartedRun.of({**row, "joined": row["item_position"] > 1}) if row is not None else None


async def lock_run(conn: AsyncConnection, run_id: uuid.UUID, *, tenant_id: str | None = None) -> Run:
    """The run row, locked FOR UPDATE until the transaction ends."""
    return await get_run(conn, run_id, tenant_id=tenant_id, lock=True)


async def append_transition(
    conn: AsyncConnection,
    run: Run,
    *,
    now: datetime,
    reason: str,
    from_state: str | None,
    to_state: str,
    context: dict[str, Any],
    step_key: str | None = None,
    delivery_id: uuid.UUID | None = None,
) -> None:
    """Append one row to the run's audit trail with the next `seq` (the caller holds the run's lock)."""
    await execute(
        conn,
        q.APPEND_TRANSITION,
        run_id=run.id,
        step_key=step_key,
        delivery_id=delivery_id,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        context=context,
        now=now,
    )


# --- deliveries ----------------------------------------------------------------------------------------------


async def lock_delivery(conn: AsyncConnection, delivery_id: uuid.UUID) -> Delivery:
    delivery = await fetch_first(conn, Delivery, q.DELIVERY_FOR_UPDATE, delivery_id=delivery_id)
    if delivery is None:
        raise DeliveryNotFound(f"delivery {delivery_id} not found")
    return delivery


async def lock_delivery_and_run(
    conn: AsyncConnection, delivery_id: uuid.UUID, *, tenant_id: str | None = None
) -> tuple[Delivery, Run]:
    """Lock a delivery's run, then the delivery: the order every decision takes (run before delivery),
    so that a receipt or a provider report racing `progress_run` waits instead of deadlocking. Every writer of
    attempts takes it (`lock_step_delivery_with_latest_attempt` relies on it). With `tenant_id`, another
    tenant's delivery looks like no delivery at all."""
    if tenant_id is None:
        run_id = await scalar(conn, q.DELIVERY_RUN_ID, delivery_id=delivery_id)
    else:
        run_id = await scalar(conn, q.DELIVERY_RUN_ID_OF_TENANT, delivery_id=delivery_id, tenant_id=tenant_id)
    if run_id is None:
        whose = f" for tenant {tenant_id!r}" if tenant_id is not None else ""
        raise DeliveryNotFound(f"delivery {delivery_id} not found{whose}")
    run = await lock_run(conn, run_id)
    return await lock_delivery(conn, delivery_id), run


async def step_delivery(
    conn: AsyncConnection, run_id: uuid.UUID, activation: int, *, lock: bool = False
) -> Delivery | None:
    """The delivery of one step activation; with `lock`, locked FOR UPDATE until the transaction ends."""
    statement = q.STEP_DELIVERY_FOR_UPDATE if lock else q.STEP_DELIVERY
    return await fetch_first(conn, Delivery, statement, run_id=run_id, activation=activation)


async def lock_step_delivery_with_latest_attempt(
    conn: AsyncConnection, run_id: uuid.UUID, activation: int
) -> tuple[Delivery, AttemptOutcome | None] | None:
    """The delivery of one step activation, locked FOR UPDATE, and its latest attempt, in one statement. The
    caller holds the run's lock: the attempt read is then as fresh as a statement of its own after the lock."""
    row = await first_row(conn, q.STEP_DELIVERY_WITH_LATEST_ATTEMPT_FOR_UPDATE, run_id=run_id, activation=activation)
    if row is None:
        return None
    outcome, error_class = row.pop("latest_outcome"), row.pop("latest_error_class")
    return Delivery.of(row), (AttemptOutcome(outcome, error_class) if outcome is not None else None)


async def move_delivery(
    conn: AsyncConnection,
    delivery_id: uuid.UUID,
    *,
    status: str,
    now: datetime,
    terminal: bool,
    suppression_reason: str | None = None,
    provider_message_id: str | None = None,
    terminal_at: datetime | None = None,
) -> Delivery:
    """Set a locked delivery's status (the caller checked the move); `terminal` stamps terminal_at once
    (`now`, unless the caller names the moment it became final)."""
    return await fetch_one(
        conn,
        Delivery,
        q.MOVE_DELIVERY,
        delivery_id=delivery_id,
        status=status,
        now=now,
        terminal_at=(terminal_at or now) if terminal else None,
        suppression_reason=suppression_reason,
        provider_message_id=provider_message_id,
    )


async def stamp_receipt(
    conn: AsyncConnection, delivery_id: uuid.UUID, receipt: Literal["read_at", "seen_at"], *, now: datetime
) -> Delivery:
    return await fetch_one(conn, Delivery, _STAMPS[receipt], delivery_id=delivery_id, now=now)


# --- attempts --------------------------------------------------------------------------------------------------


async def insert_attempt(
    conn: AsyncConnection,
    delivery_id: uuid.UUID,
    *,
    now: datetime,
    send_number: int | None,
    outcome: str,
    error_class: str | None = None,
    error: str | None = None,
    provider_message_id: str | None = None,
    provider_response: dict[str, Any] | None = None,
) -> None:
    """Append an attempt row, numbered after the last one (the caller holds the delivery's lock)."""
    await execute(
        conn,
        q.INSERT_ATTEMPT,
        delivery_id=delivery_id,
        send_number=send_number,
        outcome=outcome,
        error_class=error_class,
        error=error,
        provider_message_id=provider_message_id,
        provider_response=provider_response or {},
        now=now,
    )


def iso(moment: datetime | None) -> str | None:
    """Timestamps inside jsonb contexts are ISO-8601 strings."""
    return moment.isoformat() if moment is not None else None
