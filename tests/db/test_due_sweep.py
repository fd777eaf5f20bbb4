"""The set-based due sweep (SPEC 4.9, 11.5) writes exactly the rows that `progress_run` writes for the same
timed advance or batch close, run by run; it honours its limit, pages past runs that share one due_at, and two
sweepers never take one run twice.

Each equivalence scenario makes two identical runs with the same clock, both due at the same moment;
`progress_run` progresses the first, the sweep the second. Their rows must then be equal field by field, once
each run's own ids (its run id, its delivery and item ids, wherever they appear) are replaced by names.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from journeys import (
    DATA,
    TENANT,
    assert_seq_contiguous,
    attempts,
    deliveries,
    delivery_at,
    drive,
    journey,
    later,
    rows,
    run_row,
    start,
    step,
    transitions,
    wait,
)

from tocsin.core.models import Progress
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine import create_run, progress_due_runs, progress_run
from tocsin.engine.preferences import set_recipient
from tocsin.engine.registry import register_definition

WAIT_SECONDS = 7200


def waiting_then(
    key: str, second: dict[str, Any], *, first_wait: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A journey whose in-app step waits two hours after its delivery, then activates `second`."""
    return journey(key, step("first", "in_app", first_wait or wait("second", WAIT_SECONDS)), second, **extra)


@dataclass(frozen=True)
class Scenario:
    spec: dict[str, Any]
    data: dict[str, Any] = field(default_factory=lambda: dict(DATA))
    recipient_zone: str | None = None  # stored for the scenario's recipient (SPEC 12.1) before the runs start
    # "wait": a run waiting for its next step; "batch": a batch collecting two triggers; "batched_wait": a batch
    # of two that closed and then waits for its next step. All are due at `due` (WAIT_SECONDS after t0).
    kind: str = "wait"

    @property
    def recipient(self) -> str:
        return f"user:{self.spec['key']}"


WINDOW = {"start": "09:00", "end": "17:00"}
BATCH_CLOSED_AFTER = 60

SCENARIOS = {
    "plain_step": Scenario(waiting_then("plain", step("second", "email"))),
    "false_step_condition": Scenario(
        waiting_then("unmet", {**step("second", "email"), "when": "account.seats > 10"}),
        data={**DATA, "account": {"seats": 2}},
    ),
    "content_fails_to_render": Scenario(
        waiting_then("unrenderable", step("second", "email", content={"body": "{{ account.seats }} seats"})),
        data={**DATA, "account": {}},
    ),
    # The wait is due at 11:00 UTC on a Monday: 20:00 in Tokyo, the window opens at 00:00 UTC the next day.
    "window_in_the_recipients_zone": Scenario(
        waiting_then("windowed_recipient", {**step("second", "sms"), "send_window": WINDOW}),
        recipient_zone="Asia/Tokyo",
    ),
    # No zone stored for the recipient: the definition's default, 06:00 in New York, opens at 14:00 UTC.
    "window_in_the_default_zone": Scenario(
        waiting_then(
            "windowed_default", {**step("second", "sms"), "send_window": WINDOW}, default_timezone="America/New_York"
        )
    ),
    # The step names its zone from the data: 12:00 in Berlin, inside the window.
    "window_in_a_rendered_zone": Scenario(
        waiting_then("windowed_own", {**step("second", "sms"), "send_window": {**WINDOW, "timezone": "{{ tz }}"}}),
        data={**DATA, "tz": "Europe/Berlin"},
    ),
    "conditioned_wait_rule": Scenario(
        waiting_then(
            "conditioned",
            step("second", "email"),
            first_wait={**wait("second", WAIT_SECONDS), "when": "actor == 'Ada'"},
        )
    ),
    "step_limit_stop": Scenario(waiting_then("limited", step("second", "email"), max_step_activations=1)),
    # SPEC 11.5: a batch whose window passed closes; its first step sees the items.
    "batch_closes": Scenario(
        journey(
            "batched",
            step(
                "digest", "email", content={"body": "{{ items_count }}: {% for i in items %}{{ i.actor }} {% endfor %}"}
            ),
            batch={"window": f"PT{WAIT_SECONDS}S"},
        ),
        kind="batch",
    ),
    # ... and a batched run's timed advance renders against its items too.
    "batched_run_advances": Scenario(
        waiting_then(
            "batched_wait",
            step("second", "email", content={"body": "{{ items_count }} items, first {{ items[0].actor }}"}),
            first_wait=wait("second", WAIT_SECONDS - BATCH_CLOSED_AFTER),
            batch={"window": f"PT{BATCH_CLOSED_AFTER}S"},
        ),
        kind="batched_wait",
    ),
}


async def trigger(db: Database, scenario: Scenario, actor: str, *, now: datetime) -> uuid.UUID:
    await register_definition(db, scenario.spec, now=now)
    run, created = await create_run(
        db,
        tenant_id=TENANT,
        workflow_key=scenario.spec["key"],
        recipient=scenario.recipient,
        idempotency_key=f"key-{uuid.uuid4()}",
        data={**scenario.data, "actor": actor},
        now=now,
    )
    assert created
    return run.id


async def due_run(db: Database, scenario: Scenario, *, now: datetime) -> uuid.UUID:
    """A run of the scenario due at `now` + WAIT_SECONDS, made with the clock at `now`."""
    if scenario.kind == "wait":
        run = await start(db, scenario.spec, now=now, data=scenario.data, recipient=scenario.recipient)
        run_id, settled = run.id, now
    else:
        run_id = await trigger(db, scenario, "Ada", now=now)
        assert await trigger(db, scenario, "Bob", now=now) == run_id  # the second trigger joins the batch
        if scenario.kind == "batch":
            return run_id
        settled = later(now, seconds=BATCH_CLOSED_AFTER)
        assert (await progress_run(db, run_id, now=settled)).kind == "advanced"  # the batch closes
    await drive(db, (await delivery_at(db, run_id, 1))["id"], "succeeded", now=settled)
    assert (await progress_run(db, run_id, now=settled)).kind == "waiting"
    return run_id


async def by_hand(db: Database, scenario: Scenario, *, now: datetime) -> tuple[uuid.UUID, Progress]:
    """A due run of the scenario, progressed by progress_run at its due time. Made first: a batch's twin then
    opens a batch of its own in the same scope."""
    if scenario.recipient_zone is not None:
        await set_recipient(
            db, tenant_id=TENANT, recipient=scenario.recipient, timezone=scenario.recipient_zone, now=now
        )
    run_id = await due_run(db, scenario, now=now)
    return run_id, await progress_run(db, run_id, now=later(now, seconds=WAIT_SECONDS))


def named(value: Any, names: dict[uuid.UUID, str]) -> Any:
    """`value` with every id of `names` (as a UUID or as its text) replaced by its name."""
    if isinstance(value, uuid.UUID):
        return names.get(value, value)
    if isinstance(value, str):
        found = [name for key, name in names.items() if str(key) == value]
        return found[0] if found else value
    if isinstance(value, dict):
        return {key: named(item, names) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [named(item, names) for item in value]
    return value


def without(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in keys}


async def items(db: Database, run_id: uuid.UUID) -> list[dict[str, Any]]:
    return await rows(db, t.run_items, t.run_items.c.run_id == run_id, order_by="position")


async def names_of(db: Database, run_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """The run's own ids by name: `run`, `delivery:<activation>`, `item:<position>`."""
    return {
        run_id: "run",
        **{d["id"]: f"delivery:{d['activation']}" for d in await deliveries(db, run_id)},
        **{i["id"]: f"item:{i['position']}" for i in await items(db, run_id)},
    }


async def rows_of(db: Database, run_id: uuid.UUID) -> dict[str, Any]:
    """Everything the run wrote, its own ids named, the columns that are ids of their own left out."""
    found = await deliveries(db, run_id)
    trail = await transitions(db, run_id)
    assert_seq_contiguous(trail)
    return named(
        {
            "run": without(await run_row(db, run_id), "idempotency_key"),
            "transitions": trail,
            "deliveries": found,
            "attempts": [without(a, "id") for d in found for a in await attempts(db, d["id"])],
            "items": [without(i, "idempotency_key") for i in await items(db, run_id)],
        },
        await names_of(db, run_id),
    )


async def progress_of(db: Database, progress: Progress) -> dict[str, Any]:
    return named(
        {
            "kind": progress.kind,
            "reason": progress.reason,
            "run": without(progress.run.model_dump(), "idempotency_key"),
            "deliveries": [d.model_dump() for d in progress.deliveries],
        },
        await names_of(db, progress.run.id),
    )


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_the_sweep_writes_the_rows_progress_run_writes(db: Database, t0: datetime, name: str) -> None:
    scenario = SCENARIOS[name]
    due = later(t0, seconds=WAIT_SECONDS)
    by_hand_id, single = await by_hand(db, scenario, now=t0)
    swept = await due_run(db, scenario, now=t0)

    (batched,) = await progress_due_runs(db, now=due)

    assert batched.run.id == swept
    assert await progress_of(db, batched) == await progress_of(db, single)
    assert await rows_of(db, swept) == await rows_of(db, by_hand_id)


async def test_one_batch_of_every_scenario_writes_the_rows_progress_run_writes(db: Database, t0: datetime) -> None:
    due = later(t0, seconds=WAIT_SECONDS)
    singles = {name: await by_hand(db, scenario, now=t0) for name, scenario in SCENARIOS.items()}
    pairs = {name: (singles[name][0], await due_run(db, scenario, now=t0)) for name, scenario in SCENARIOS.items()}

    # One transaction for the due batches, one for the due waits.
    batched = await progress_due_runs(db, now=due, batch_size=len(pairs))

    assert sorted(p.run.id for p in batched) == sorted(swept for _, swept in pairs.values())
    by_run = {p.run.id: p for p in batched}
    for name, (by_hand_id, swept) in pairs.items():
        assert await progress_of(db, by_run[swept]) == await progress_of(db, singles[name][1]), name
        assert await rows_of(db, swept) == await rows_of(db, by_hand_id), name
    # What the scenarios are about, so that equal rows cannot mean equally wrong ones.
    planned = {
        name: await delivery_at(db, swept, 1 if name == "batch_closes" else 2)
        for name, (_, swept) in pairs.items()
        if name != "step_limit_stop"
    }
    assert (planned["false_step_condition"]["status"], planned["false_step_condition"]["suppression_reason"]) == (
        "suppressed",
        "condition_not_met",
    )
    assert (planned["content_fails_to_render"]["status"], planned["content_fails_to_render"]["suppression_reason"]) == (
        "suppressed",
        "render_failed",
    )
    (rejected,) = await attempts(db, planned["content_fails_to_render"]["id"])
    assert (rejected["outcome"], rejected["error_class"], rejected["send_number"]) == ("rejected", "permanent", None)
    windows = {name: (row["send_timezone"], row["scheduled_for"]) for name, row in planned.items() if "window" in name}
    assert windows == {
        "window_in_the_recipients_zone": ("Asia/Tokyo", datetime.fromisoformat("2026-01-06T00:00:00+00:00")),
        "window_in_the_default_zone": ("America/New_York", datetime.fromisoformat("2026-01-05T14:00:00+00:00")),
        "window_in_a_rendered_zone": ("Europe/Berlin", None),
    }
    assert (await run_row(db, pairs["conditioned_wait_rule"][1]))["status_context"]["when"] == "actor == 'Ada'"
    limited = await run_row(db, pairs["step_limit_stop"][1])
    assert (limited["state"], limited["status_reason"], limited["terminal_reason"]) == (
        "stopped",
        "step_limit_exceeded",
        "limit:max_step_activations",
    )
    assert len(await deliveries(db, pairs["step_limit_stop"][1])) == 1
    assert planned["batch_closes"]["content"] == {"body": "2: Ada Bob "}
    assert planned["batched_run_advances"]["content"] == {"body": "2 items, first Ada"}


PLAIN = SCENARIOS["plain_step"]


async def test_the_limit_is_honoured_across_batches(db: Database, t0: datetime) -> None:
    runs = [await due_run(db, PLAIN, now=later(t0, seconds=i)) for i in range(7)]
    at = later(t0, days=1)

    first = await progress_due_runs(db, now=at, limit=5, batch_size=2)

    assert [p.run.id for p in first] == runs[:5]
    assert [(await run_row(db, run_id))["state"] for run_id in runs] == ["active"] * 5 + ["waiting"] * 2
    assert [p.run.id for p in await progress_due_runs(db, now=at, limit=5, batch_size=2)] == runs[5:]


async def test_due_batches_close_before_due_waits_advance_within_one_limit(db: Database, t0: datetime) -> None:
    waiting = await due_run(db, PLAIN, now=later(t0, seconds=-1))  # due first, a wait
    batch = await due_run(db, SCENARIOS["batch_closes"], now=t0)
    at = later(t0, days=1)

    assert [(p.run.id, p.kind) for p in await progress_due_runs(db, now=at, limit=1)] == [(batch, "advanced")]
    assert (await run_row(db, waiting))["state"] == "waiting"
    assert [(p.run.id, p.kind) for p in await progress_due_runs(db, now=at, limit=1)] == [(waiting, "advanced")]


async def test_runs_sharing_one_due_at_are_paged_by_id_each_once(db: Database, t0: datetime) -> None:
    tied = [await due_run(db, PLAIN, now=t0) for _ in range(8)]
    earlier = await due_run(db, PLAIN, now=later(t0, seconds=-1))
    at = later(t0, days=1)

    results = await progress_due_runs(db, now=at, batch_size=3)

    assert [p.run.id for p in results] == [earlier, *sorted(tied)]
    assert {p.kind for p in results} == {"advanced"}
    for run_id in [earlier, *tied]:
        assert [d["activation"] for d in await deliveries(db, run_id)] == [1, 2]


async def test_a_noop_in_a_batch_writes_nothing_and_the_sweep_pages_past_it(db: Database, t0: datetime) -> None:
    # A negative grace reaches past `now`: those runs are locked but not yet due, noops, and left waiting.
    due = await due_run(db, PLAIN, now=t0)
    not_yet = await due_run(db, PLAIN, now=later(t0, minutes=10))
    at = later(t0, seconds=WAIT_SECONDS)

    results = await progress_due_runs(db, now=at, overdue_by=later(t0, minutes=-20) - t0, batch_size=1)

    assert [(p.run.id, p.kind, p.reason) for p in results] == [
        (due, "advanced", None),
        (not_yet, "noop", "wait_not_due"),
    ]
    row = await run_row(db, not_yet)
    assert (row["state"], row["step_activation"]) == ("waiting", 1)
    assert len(await transitions(db, not_yet)) == 3


@pytest.fixture
async def sweepers(fresh_db_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two more handles on the test's database, each with its own pool: two sweeper processes."""
    first = await Database.connect(fresh_db_url, pool_size=2, max_overflow=0)
    second = await Database.connect(fresh_db_url, pool_size=2, max_overflow=0)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_two_sweepers_in_small_batches_never_take_a_run_twice(
    db: Database, sweepers: tuple[Database, Database], t0: datetime
) -> None:
    runs = [await due_run(db, PLAIN, now=later(t0, seconds=i)) for i in range(24)]
    first, second = sweepers
    at = later(t0, days=1)

    a, b = await asyncio.gather(
        progress_due_runs(first, now=at, batch_size=3), progress_due_runs(second, now=at, batch_size=3)
    )

    taken = [p.run.id for p in a + b]
    assert sorted(taken) == sorted(runs)
    assert {p.kind for p in a + b} == {"advanced"}
    for run_id in runs:
        trail = await transitions(db, run_id)
        assert [t["reason"] for t in trail].count("reactivated_from_wait") == 1
        assert [d["activation"] for d in await deliveries(db, run_id)] == [1, 2]
