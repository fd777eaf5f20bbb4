"""Signals (SPEC 4.7, 4.3) and cancel_run (SPEC 4.8): exact rows; other tenants and recipients untouched."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from journeys import (
    ESCALATION,
    RECIPIENT,
    TENANT,
    assert_noop,
    assert_seq_contiguous,
    deliveries,
    delivery_at,
    drive,
    escalation_waiting,
    later,
    reasons,
    rows,
    run_row,
    snapshot,
    start,
    transitions,
)

from tocsin.core.errors import InvalidRequest, RunNotFound
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine import cancel_run, progress_due_runs, progress_run, route_signal

READ = "notification.read"


async def signal_rows(db: Database) -> list[dict[str, object]]:
    return await rows(db, t.signals, order_by="created_at")


async def test_a_cancel_signal_stops_a_waiting_run(db: Database, t0: datetime) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    read_at = later(t0, minutes=30)

    stopped = await route_signal(db, TENANT, RECIPIENT, READ, {"delivery": "d-1"}, now=read_at)

    assert stopped == [run.id]
    (signal,) = await signal_rows(db)
    assert signal == {
        "id": signal["id"],
        "tenant_id": TENANT,
        "recipient": RECIPIENT,
        "run_id": None,
        "name": READ,
        "data": {"delivery": "d-1"},
        "created_at": read_at,
    }
    context = {"event_name": READ, "signal_id": str(signal["id"])}
    row = await run_row(db, run.id)
    assert {
        k: row[k]
        for k in (
            "state",
            "status_reason",
            "status_context",
            "terminal_reason",
            "due_at",
            "pending_signals",
            "updated_at",
        )
    } == {
        "state": "stopped",
        "status_reason": "stopped_by_signal",
        "status_context": context,
        "terminal_reason": f"signal:{READ}",
        "due_at": None,
        "pending_signals": [],
        "updated_at": read_at,
    }
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[3:] == [
        {
            "run_id": run.id,
            "seq": 4,
            "step_key": "in_app",
            "delivery_id": None,
            "from_state": "waiting",
            "to_state": "stopped",
            "reason": "signal_received",
            "context": context,
            "created_at": read_at,
        }
    ]
    # Its timer can no longer fire: the run is not due, and progressing it is a noop.
    assert await progress_due_runs(db, now=later(t0, days=1)) == []
    await assert_noop(db, run.id, now=later(t0, days=1), reason="run_not_active")
    assert len(await deliveries(db, run.id)) == 1
    # A second signal of the same name is recorded, and stops nothing.
    assert await route_signal(db, TENANT, RECIPIENT, READ, now=later(read_at, seconds=1)) == []
    assert len(await signal_rows(db)) == 2
    assert len(await transitions(db, run.id)) == 4


async def test_a_signal_the_wait_does_not_listen_for_only_records_the_signal(db: Database, t0: datetime) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    before = await run_row(db, run.id)
    assert await route_signal(db, TENANT, RECIPIENT, "notification.seen", now=later(t0, minutes=1)) == []
    assert await run_row(db, run.id) == before
    assert [s["name"] for s in await signal_rows(db)] == ["notification.seen"]


async def test_a_signal_recorded_before_the_wait_stops_the_run_when_it_would_wait(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    read_at, landed, checked = later(t0, seconds=30), later(t0, minutes=1), later(t0, minutes=2)
    # The user read the in-app message before its delivery was even confirmed: the run is active, not waiting.
    assert await route_signal(db, TENANT, RECIPIENT, READ, now=read_at) == []
    assert (await run_row(db, run.id))["state"] == "active"
    (signal,) = await signal_rows(db)
    d1 = await drive(db, (await delivery_at(db, run.id, 1))["id"], "succeeded", now=landed)

    progress = await progress_run(db, run.id, now=checked)

    context = {"event_name": READ, "signal_id": str(signal["id"])}
    assert (progress.kind, progress.deliveries) == ("stopped", [])
    row = await run_row(db, run.id)
    assert progress.run.model_dump() == row
    assert (row["state"], row["status_reason"], row["status_context"], row["terminal_reason"], row["due_at"]) == (
        "stopped",
        "stopped_by_signal",
        context,
        f"signal:{READ}",
        None,
    )
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[2:] == [
        {
            "run_id": run.id,
            "seq": 3,
            "step_key": "in_app",
            "delivery_id": None,
            "from_state": "active",
            "to_state": "stopped",
            "reason": "signal_received",
            "context": context,
            "created_at": checked,
        }
    ]
    assert d1.status == "succeeded"
    assert len(await deliveries(db, run.id)) == 1


async def test_a_signal_at_the_moment_the_step_was_activated_counts(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    await route_signal(db, TENANT, RECIPIENT, READ, now=t0)
    await drive(db, (await delivery_at(db, run.id, 1))["id"], "succeeded", now=t0)
    assert (await progress_run(db, run.id, now=t0)).kind == "stopped"


async def test_a_signal_older_than_the_step_does_not_stop_its_wait(db: Database, t0: datetime) -> None:
    await route_signal(db, TENANT, RECIPIENT, READ, now=t0 - timedelta(microseconds=1))
    run, _ = await escalation_waiting(db, now=t0)
    assert (await run_row(db, run.id))["state"] == "waiting"


@pytest.mark.parametrize(("tenant", "recipient"), [("globex", RECIPIENT), (TENANT, "user:43")])
async def test_a_signal_for_another_tenant_or_recipient_touches_nothing(
    db: Database, t0: datetime, tenant: str, recipient: str
) -> None:
    waiting, _ = await escalation_waiting(db, now=t0)
    active = await start(db, ESCALATION, now=t0)
    before = await snapshot(db)

    assert await route_signal(db, tenant, recipient, READ, now=later(t0, minutes=1)) == []

    after = await snapshot(db)
    (signal,) = after["signals"]
    assert (signal["tenant_id"], signal["recipient"], signal["name"]) == (tenant, recipient, READ)
    assert {**after, "signals": []} == before
    # Nor does it stop the active run later, when that run enters its wait.
    await drive(db, (await delivery_at(db, active.id, 1))["id"], "succeeded", now=later(t0, minutes=2))
    assert (await progress_run(db, active.id, now=later(t0, minutes=2))).kind == "waiting"
    assert (await run_row(db, waiting.id))["state"] == "waiting"


async def test_a_signal_with_a_run_id_targets_only_that_run(db: Database, t0: datetime) -> None:
    first, _ = await escalation_waiting(db, now=t0)
    second, _ = await escalation_waiting(db, now=t0)
    entering = await start(db, ESCALATION, now=t0)

    assert await route_signal(db, TENANT, RECIPIENT, READ, now=later(t0, minutes=1), run_id=second.id) == [second.id]

    assert (await run_row(db, first.id))["state"] == "waiting"
    assert (await run_row(db, second.id))["state"] == "stopped"
    (signal,) = await signal_rows(db)
    assert signal["run_id"] == second.id
    assert reasons(await transitions(db, first.id))[-1] == "waiting_for_step_progression"
    # A signal aimed at another run does not stop this one when it enters its wait either.
    await drive(db, (await delivery_at(db, entering.id, 1))["id"], "succeeded", now=later(t0, minutes=2))
    assert (await progress_run(db, entering.id, now=later(t0, minutes=2))).kind == "waiting"


async def test_a_signal_aimed_at_a_run_stops_it_when_it_would_wait(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0)
    await route_signal(db, TENANT, RECIPIENT, READ, now=later(t0, seconds=1), run_id=run.id)
    await drive(db, (await delivery_at(db, run.id, 1))["id"], "succeeded", now=later(t0, seconds=2))
    assert (await progress_run(db, run.id, now=later(t0, seconds=2))).kind == "stopped"


async def test_one_signal_stops_every_listening_run_of_the_recipient_in_id_order(db: Database, t0: datetime) -> None:
    runs = [(await escalation_waiting(db, now=t0))[0] for _ in range(4)]
    other, _ = await escalation_waiting(db, now=t0, recipient="user:43")
    stopped = await route_signal(db, TENANT, RECIPIENT, READ, now=later(t0, minutes=5))
    assert stopped == sorted(run.id for run in runs)
    (signal,) = await signal_rows(db)
    for run in runs:
        trail = await transitions(db, run.id)
        assert_seq_contiguous(trail)
        assert trail[-1]["context"] == {"event_name": READ, "signal_id": str(signal["id"])}
    assert (await run_row(db, other.id))["state"] == "waiting"


@pytest.mark.parametrize("blank", ["tenant_id", "recipient", "name"])
async def test_a_blank_signal_is_refused_and_writes_nothing(db: Database, t0: datetime, blank: str) -> None:
    await escalation_waiting(db, now=t0)
    before = await snapshot(db)
    fields = {"tenant_id": TENANT, "recipient": RECIPIENT, "name": READ, blank: " "}
    with pytest.raises(InvalidRequest):
        await route_signal(db, fields["tenant_id"], fields["recipient"], fields["name"], now=t0)
    assert await snapshot(db) == before


# --- cancel_run ------------------------------------------------------------------------------------------


async def test_cancel_a_waiting_run(db: Database, t0: datetime) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    at = later(t0, minutes=10)

    cancelled = await cancel_run(db, run.id, tenant_id=TENANT, reason="unsubscribed", now=at)

    row = await run_row(db, run.id)
    assert cancelled.model_dump() == row
    assert {
        k: row[k]
        for k in (
            "state",
            "status_reason",
            "status_context",
            "terminal_reason",
            "due_at",
            "pending_signals",
            "updated_at",
        )
    } == {
        "state": "stopped",
        "status_reason": "stopped_by_request",
        "status_context": {"reason": "unsubscribed"},
        "terminal_reason": "unsubscribed",
        "due_at": None,
        "pending_signals": [],
        "updated_at": at,
    }
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert trail[3:] == [
        {
            "run_id": run.id,
            "seq": 4,
            "step_key": "in_app",
            "delivery_id": None,
            "from_state": "waiting",
            "to_state": "stopped",
            "reason": "workflow_cancelled",
            "context": {"reason": "unsubscribed"},
            "created_at": at,
        }
    ]
    # The succeeded delivery is history: it stays as it was.
    (d1,) = await deliveries(db, run.id)
    assert (d1["status"], d1["terminal_at"]) == ("succeeded", t0)
    assert await progress_due_runs(db, now=later(t0, days=1)) == []


@pytest.mark.parametrize(
    ("driven", "cancelled"),
    [(None, True), ("failed", True), ("dispatched", False), ("succeeded", False)],
)
async def test_cancel_an_active_run_cancels_its_pending_and_failed_deliveries(
    db: Database, t0: datetime, driven: str | None, cancelled: bool
) -> None:
    run = await start(db, ESCALATION, now=t0)
    delivery_id = (await delivery_at(db, run.id, 1))["id"]
    if driven is not None:
        await drive(db, delivery_id, driven, now=later(t0, seconds=1))
    before = await delivery_at(db, run.id, 1)
    at = later(t0, minutes=1)

    await cancel_run(db, run.id, tenant_id=TENANT, reason="user deleted", now=at)

    after = await delivery_at(db, run.id, 1)
    if cancelled:
        assert after == {
            **before,
            "status": "cancelled",
            "suppression_reason": "run_cancelled",
            "terminal_at": at,
            "updated_at": at,
        }
    else:
        assert after == before
    trail = await transitions(db, run.id)
    assert_seq_contiguous(trail)
    assert [(r["reason"], r["from_state"], r["to_state"], r["context"]) for r in trail[2:]] == [
        ("workflow_cancelled", "active", "stopped", {"reason": "user deleted"})
    ]
    assert (await run_row(db, run.id))["terminal_reason"] == "user deleted"
    await assert_noop(db, run.id, now=later(at, minutes=1), reason="run_not_active")


@pytest.mark.parametrize("finish", ["completed", "cancelled", "signalled"])
async def test_cancel_a_finished_run_is_a_noop(db: Database, t0: datetime, finish: str) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    if finish == "completed":
        await progress_run(db, run.id, now=later(t0, hours=3))
        await drive(db, (await delivery_at(db, run.id, 2))["id"], "succeeded", now=later(t0, hours=3))
        assert (await progress_run(db, run.id, now=later(t0, hours=3))).kind == "completed"
    elif finish == "cancelled":
        await cancel_run(db, run.id, tenant_id=TENANT, reason="first", now=later(t0, hours=1))
    else:
        await route_signal(db, TENANT, RECIPIENT, READ, now=later(t0, hours=1))
    before = await snapshot(db)
    finished = await run_row(db, run.id)

    returned = await cancel_run(db, run.id, tenant_id=TENANT, reason="again", now=later(t0, hours=5))

    assert returned.model_dump() == finished
    assert await snapshot(db) == before


async def test_cancel_another_tenants_run_raises_and_writes_nothing(db: Database, t0: datetime) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    before = await snapshot(db)
    with pytest.raises(RunNotFound):
        await cancel_run(db, run.id, tenant_id="globex", reason="nope", now=t0)
    with pytest.raises(RunNotFound):
        await cancel_run(db, uuid.uuid4(), tenant_id=TENANT, reason="nope", now=t0)
    assert await snapshot(db) == before


async def test_cancel_with_a_blank_reason_is_refused_and_writes_nothing(db: Database, t0: datetime) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    before = await snapshot(db)
    with pytest.raises(InvalidRequest):
        await cancel_run(db, run.id, tenant_id=TENANT, reason="  ", now=t0)
    assert await snapshot(db) == before


# --- progress_due_runs -----------------------------------------------------------------------------------


async def test_progress_due_runs_picks_only_due_runs_oldest_due_first(db: Database, t0: datetime) -> None:
    # Waits due at t0+2h+{30, 10, 20, 40} minutes, created in that order.
    offsets = [30, 10, 20, 40]
    waiting = [(await escalation_waiting(db, now=later(t0, minutes=m)))[0] for m in offsets]
    active = await start(db, ESCALATION, now=t0)
    finished, _ = await escalation_waiting(db, now=t0)
    await cancel_run(db, finished.id, tenant_id=TENANT, reason="done", now=t0)
    sweep_at = later(t0, hours=2, minutes=30)  # the 10, 20 and 30 minute waits are due; 30 exactly now

    results = await progress_due_runs(db, now=sweep_at)

    by_offset = dict(zip(offsets, waiting, strict=True))
    assert [(p.kind, p.run.id) for p in results] == [
        ("advanced", by_offset[10].id),
        ("advanced", by_offset[20].id),
        ("advanced", by_offset[30].id),
    ]
    for progress in results:
        (delivery,) = progress.deliveries
        assert (delivery.run_id, delivery.activation, delivery.step_key) == (progress.run.id, 2, "email")
        trail = await transitions(db, progress.run.id)
        assert_seq_contiguous(trail)
        assert reasons(trail)[-2:] == ["reactivated_from_wait", "step_activated"]
    assert (await run_row(db, by_offset[40].id))["state"] == "waiting"
    assert (await run_row(db, active.id))["state"] == "active"
    assert (await run_row(db, finished.id))["state"] == "stopped"

    # A second sweep at the same moment finds nothing; a later one finds the last wait.
    before = await snapshot(db)
    assert await progress_due_runs(db, now=sweep_at) == []
    assert await snapshot(db) == before
    assert [p.run.id for p in await progress_due_runs(db, now=later(t0, days=1))] == [by_offset[40].id]


async def test_progress_due_runs_respects_its_limit(db: Database, t0: datetime) -> None:
    first, _ = await escalation_waiting(db, now=t0)
    second, _ = await escalation_waiting(db, now=later(t0, minutes=1))
    results = await progress_due_runs(db, now=later(t0, days=1), limit=1)
    assert [p.run.id for p in results] == [first.id]
    assert (await run_row(db, second.id))["state"] == "waiting"


async def test_progress_due_runs_with_a_grace_period_leaves_runs_only_just_due(db: Database, t0: datetime) -> None:
    overdue, _ = await escalation_waiting(db, now=t0)
    just_due, _ = await escalation_waiting(db, now=later(t0, minutes=9))
    sweep_at = later(t0, hours=2, minutes=10)  # the first is 10 minutes overdue, the second 1 minute
    results = await progress_due_runs(db, now=sweep_at, overdue_by=timedelta(minutes=5))
    assert [(p.kind, p.run.id) for p in results] == [("advanced", overdue.id)]
    assert (await run_row(db, just_due.id))["state"] == "waiting"


@pytest.mark.parametrize("tenant", ["acme", "globex"], ids=["unknown_run", "other_tenants_run"])
async def test_a_signal_for_an_unknown_or_foreign_run_is_refused_and_writes_nothing(
    db: Database, t0: datetime, tenant: str
) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    target = uuid.uuid4() if tenant == "acme" else run.id
    before = await snapshot(db)
    with pytest.raises(RunNotFound):
        await route_signal(db, tenant, RECIPIENT, "notification.read", now=t0, run_id=target)
    assert await snapshot(db) == before


async def test_a_signal_for_a_run_of_another_recipient_is_refused(db: Database, t0: datetime) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    before = await snapshot(db)
    with pytest.raises(InvalidRequest, match="another recipient"):
        await route_signal(db, TENANT, "user:someone-else", "notification.read", now=t0, run_id=run.id)
    assert await snapshot(db) == before
