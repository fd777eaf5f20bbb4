"""The schema (SPEC 2): migrations round-trip, agree with tables.py, and the database enforces its rules."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from journeys import ESCALATION, TENANT, counts, deliveries, drive, rows, start
from sqlalchemy import CheckConstraint, Connection, delete, insert, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.db.database import alembic_config

HEADS = ScriptDirectory.from_config(alembic_config()).get_heads()

TABLE_NAMES = {
    "alembic_version",
    "workflow_definitions",
    "workflow_runs",
    "workflow_transitions",
    "deliveries",
    "delivery_attempts",
    "signals",
    "preferences",
    "recipients",
    "run_items",
}


def schema_diff(sync_conn: Connection) -> list[Any]:
    """What autogenerate would change to make the live `tocsin` schema match tables.py (only that schema)."""

    def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
        if type_ == "schema":
            return name == t.SCHEMA
        return True

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table":
            return obj.schema == t.SCHEMA
        return True

    context = MigrationContext.configure(
        sync_conn,
        opts={
            "include_schemas": True,
            "version_table_schema": t.SCHEMA,
            "include_name": include_name,
            "include_object": include_object,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return compare_metadata(context, t.metadata)


async def live_tables(db: Database) -> set[str]:
    async with db.transaction() as conn:
        result = await conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'tocsin'")
        )
        return {r[0] for r in result}


async def test_migrated_schema_matches_tables_py(db: Database) -> None:
    async with db.transaction() as conn:
        diff = await conn.run_sync(schema_diff)
    assert diff == []
    assert await live_tables(db) == TABLE_NAMES


def test_the_migrations_form_one_line() -> None:
    """Two migrations revising the same parent would leave `migrate()` with no single head to go to."""
    assert len(HEADS) == 1


async def test_upgrade_downgrade_upgrade_round_trip(fresh_db_url: str) -> None:
    db = await Database.connect(fresh_db_url)
    try:
        assert await db.current_revision() == HEADS[0]
        await db.downgrade("base")
        assert await live_tables(db) == {"alembic_version"}
        assert await db.current_revision() is None
        async with db.transaction() as conn:
            functions = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = 'tocsin'"
                )
            )
        assert functions == 0
        await db.migrate()
        assert await db.current_revision() == HEADS[0]
        assert await live_tables(db) == TABLE_NAMES
        async with db.transaction() as conn:
            assert await conn.run_sync(schema_diff) == []
        # Migrating again is a no-op.
        await db.migrate()
        assert await db.current_revision() == HEADS[0]
    finally:
        await db.close()


async def test_the_round_tripped_schema_still_works(fresh_db_url: str, t0: datetime) -> None:
    db = await Database.connect(fresh_db_url)
    try:
        await db.downgrade("base")
        await db.migrate()
        run = await start(db, ESCALATION, now=t0)
        (delivery,) = await deliveries(db, run.id)
        await drive(db, delivery["id"], "succeeded", now=t0)
        async with db.transaction() as conn:
            with pytest.raises(DBAPIError, match="append-only"):
                await conn.execute(text("UPDATE tocsin.delivery_attempts SET error = 'x'"))
    finally:
        await db.close()


# --- the database enforces the rules itself --------------------------------------------------------------


async def seeded(db: Database, t0: datetime) -> tuple[uuid.UUID, uuid.UUID]:
    """A run with one succeeded delivery: two transitions and one attempt row exist."""
    run = await start(db, ESCALATION, now=t0)
    (delivery,) = await deliveries(db, run.id)
    await drive(db, delivery["id"], "succeeded", now=t0)
    return run.id, delivery["id"]


async def rejected(db: Database, statement: Any, match: str) -> None:
    """`statement` fails in its own transaction, which rolls back."""
    with pytest.raises(DBAPIError, match=match):
        async with db.transaction() as conn:
            await conn.execute(statement)


@pytest.mark.parametrize("table", [t.workflow_transitions, t.delivery_attempts])
async def test_append_only_tables_reject_update_delete_and_truncate(db: Database, t0: datetime, table: Any) -> None:
    await seeded(db, t0)
    before = await rows(db, table)
    assert before
    message = f"tocsin.{table.name} is append-only"
    await rejected(db, update(table).values(created_at=t0), f"{message} \\(UPDATE rejected\\)")
    await rejected(db, delete(table), f"{message} \\(DELETE rejected\\)")
    await rejected(db, text(f"TRUNCATE tocsin.{table.name} CASCADE"), f"{message} \\(TRUNCATE rejected\\)")
    assert await rows(db, table) == before


async def test_append_only_tables_accept_inserts(db: Database, t0: datetime) -> None:
    _, delivery_id = await seeded(db, t0)
    async with db.transaction() as conn:
        await conn.execute(
            insert(t.delivery_attempts).values(
                delivery_id=delivery_id,
                attempt_number=2,
                outcome="bounced",
                error_class="bounced",
                provider_response={},
                created_at=t0,
            )
        )
    assert [a["attempt_number"] for a in await rows(db, t.delivery_attempts)] == [1, 2]


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("state", "paused", "workflow_runs_state_check"),
        ("status_reason", "because", "workflow_runs_status_reason_check"),
        ("step_activation", 0, "workflow_runs_step_activation_positive"),
    ],
)
async def test_check_constraints_reject_a_bad_run(
    db: Database, t0: datetime, column: str, value: object, constraint: str
) -> None:
    run_id, _ = await seeded(db, t0)
    before = await rows(db, t.workflow_runs)
    statement = update(t.workflow_runs).where(t.workflow_runs.c.id == run_id).values({column: value})
    with pytest.raises(IntegrityError, match=constraint):
        async with db.transaction() as conn:
            await conn.execute(statement)
    assert await rows(db, t.workflow_runs) == before


async def test_due_at_is_set_exactly_while_waiting(db: Database, t0: datetime) -> None:
    run_id, _ = await seeded(db, t0)
    R = t.workflow_runs
    for values in ({"state": "waiting"}, {"due_at": t0}):
        with pytest.raises(IntegrityError, match="workflow_runs_due_at_only_waiting"):
            async with db.transaction() as conn:
                await conn.execute(update(R).where(R.c.id == run_id).values(values))


@pytest.mark.parametrize(
    ("table", "column", "value", "constraint"),
    [
        (t.deliveries, "status", "lost", "deliveries_status_check"),
        (t.workflow_definitions, "version", 0, "workflow_definitions_version_positive"),
    ],
)
async def test_check_constraints_reject_bad_values(
    db: Database, t0: datetime, table: Any, column: str, value: object, constraint: str
) -> None:
    await seeded(db, t0)
    with pytest.raises(IntegrityError, match=constraint):
        async with db.transaction() as conn:
            await conn.execute(update(table).values({column: value}))


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"outcome": "maybe"}, "delivery_attempts_outcome_check"),
        ({"outcome": "failed", "error_class": "cosmic_ray"}, "delivery_attempts_error_class_check"),
    ],
)
async def test_check_constraints_reject_a_bad_attempt(
    db: Database, t0: datetime, values: dict[str, str], constraint: str
) -> None:
    _, delivery_id = await seeded(db, t0)
    with pytest.raises(IntegrityError, match=constraint):
        async with db.transaction() as conn:
            await conn.execute(
                insert(t.delivery_attempts).values(
                    delivery_id=delivery_id, attempt_number=9, provider_response={}, created_at=t0, **values
                )
            )


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"reason": "felt_like_it"}, "workflow_transitions_reason_check"),
        ({"from_state": "paused"}, "workflow_transitions_from_state_check"),
        ({"to_state": "paused"}, "workflow_transitions_to_state_check"),
    ],
)
async def test_check_constraints_reject_a_bad_transition(
    db: Database, t0: datetime, values: dict[str, str], constraint: str
) -> None:
    run_id, _ = await seeded(db, t0)
    before = await counts(db)
    row = {
        "run_id": run_id,
        "seq": 3,
        "to_state": "active",
        "reason": "step_activated",
        "context": {},
        "created_at": t0,
    }
    with pytest.raises(IntegrityError, match=constraint):
        async with db.transaction() as conn:
            await conn.execute(insert(t.workflow_transitions).values({**row, **values}))
    assert await counts(db) == before


async def test_one_delivery_per_run_activation(db: Database, t0: datetime) -> None:
    run_id, _ = await seeded(db, t0)
    values: dict[str, Any] = {
        "run_id": run_id,
        "tenant_id": TENANT,
        "step_key": "email",
        "activation": 1,
        "channel": "email",
        "recipient": "user:42",
        "status": "pending",
        "content": {},
        "created_at": t0,
        "updated_at": t0,
    }
    with pytest.raises(IntegrityError, match="deliveries_run_activation_key"):
        async with db.transaction() as conn:
            await conn.execute(insert(t.deliveries).values(id=uuid.uuid4(), **values))
    # Another activation of the same run, on the same channel, is fine.
    async with db.transaction() as conn:
        await conn.execute(insert(t.deliveries).values(id=uuid.uuid4(), **{**values, "activation": 2}))
    assert [(d["activation"], d["channel"]) for d in await deliveries(db, run_id)] == [
        (1, "in_app"),
        (2, "email"),
    ]


async def test_one_transition_per_run_seq(db: Database, t0: datetime) -> None:
    run_id, _ = await seeded(db, t0)
    with pytest.raises(IntegrityError, match="workflow_transitions_run_seq_key"):
        async with db.transaction() as conn:
            await conn.execute(
                insert(t.workflow_transitions).values(
                    run_id=run_id, seq=2, to_state="active", reason="step_activated", context={}, created_at=t0
                )
            )


async def test_one_run_per_tenant_idempotency_key(db: Database, t0: datetime) -> None:
    await seeded(db, t0)
    (run,) = await rows(db, t.workflow_runs)
    with pytest.raises(IntegrityError, match="workflow_runs_tenant_idempotency_key"):
        async with db.transaction() as conn:
            await conn.execute(insert(t.workflow_runs).values({**run, "id": uuid.uuid4()}))
    async with db.transaction() as conn:
        await conn.execute(insert(t.workflow_runs).values({**run, "id": uuid.uuid4(), "tenant_id": "globex"}))
    assert len(await rows(db, t.workflow_runs)) == 2


async def test_the_comparison_sees_a_drifted_schema(db: Database) -> None:
    """Guards the test above: a live schema that drifted from tables.py yields a non-empty diff."""
    async with db.transaction() as conn:
        await conn.execute(text("DROP INDEX tocsin.signals_tenant_recipient_created"))
        await conn.execute(text("ALTER TABLE tocsin.deliveries ADD COLUMN extra text"))
        await conn.execute(text("ALTER TABLE tocsin.deliveries ALTER COLUMN channel DROP NOT NULL"))
        diff = await conn.run_sync(schema_diff)
    kinds = sorted(entry[0] if isinstance(entry, tuple) else entry[0][0] for entry in diff)
    assert kinds == ["add_index", "modify_nullable", "remove_column"]


async def test_check_constraints_match_tables_py(db: Database) -> None:
    """Autogenerate does not compare CHECK constraints: compare their names and tables directly."""
    expected = {
        (table.name, constraint.name)
        for table in t.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }
    async with db.transaction() as conn:
        result = await conn.execute(
            text(
                "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c "
                "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'tocsin' AND c.contype = 'c'"
            )
        )
        live = {(table.removeprefix("tocsin."), name) for table, name in result}
    assert live == expected
    assert ("delivery_attempts", "delivery_attempts_send_number_positive") in expected
