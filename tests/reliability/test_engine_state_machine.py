"""A hypothesis state machine over the engine, on a real Postgres (SPEC 2, 4, 5).

Rules: create runs (and replay their idempotency keys), progress one run or sweep the due ones, dispatch with a
scripted provider answer (or "crash" mid-send: a send begun and never answered), provider feedback, signals,
read/seen receipts, cancels, exhausting retries, illegal status moves, and clock jumps, over four definitions
(the mention example, a dunning journey with waits and cancel signals, a retried webhook, a cycle bounded by
max_step_activations). After every step the rows must hold the invariants below; every call that decides
nothing must write nothing (whole-database snapshots compared). Each example ends by driving every unfinished
run to its end the way the workflow would: nothing hangs.

Hypothesis runs the machine synchronously, so it runs in a thread and hands each engine call to the test's event
loop (where the `db` fixture's pool lives).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from journeys import ESCALATION, journey, on, rows, snapshot, step, stop, wait
from scripted import AFTER_SEND, ANSWERS, Answer, ScriptedChannel

from tocsin.core.errors import InvalidDeliveryTransition
from tocsin.core.vocabulary import DELIVERY_MOVES, DELIVERY_STATUSES, TERMINAL_DELIVERY_STATUSES, is_finished
from tocsin.db import Database, store
from tocsin.db import tables as t
from tocsin.engine.deliveries import exhaust_delivery, mark_dispatched, move
from tocsin.engine.dispatch import dispatch_delivery
from tocsin.engine.feedback import record_delivery_outcome
from tocsin.engine.inbox import RECEIPT_SIGNALS, stamp_receipt
from tocsin.engine.registry import register_definition
from tocsin.engine.runs import cancel_run, create_run, progress_due_runs, progress_run
from tocsin.engine.signals import route_signal

T = TypeVar("T")
Row = dict[str, Any]
Receipt = Literal["read_at", "seen_at"]
RECEIPTS: tuple[Receipt, ...] = ("read_at", "seen_at")

PAID = "invoice.paid"
DUNNING = journey(
    "dunning",
    step("first", "email", stop("bounced"), wait("second", 3 * 86400, cancel_signals=[PAID, "delivery.bounced"])),
    step(
        "second",
        "email",
        on("permanent_failure", "sms"),
        wait("final", 4 * 86400, anchor="step_activated_at", cancel_signals=[PAID]),
    ),
    step("sms", "sms"),
    step("final", "email"),
)
RETRIED = journey(
    "retried_webhook",
    step(
        "hook",
        "webhook",
        on("retries_exhausted", "email"),
        on("bounced", "email"),
        stop("permanent_failure"),
        retry={"max_attempts": 3, "initial_interval": "PT30S", "backoff_coefficient": 2},
    ),
    step("email", "email", on("temporary_failure", "hook"), retry={"max_attempts": 2}),
)
CYCLE = journey(
    "reminder_cycle",
    step("remind", "in_app", wait("remind", 60, cancel_signals=["notification.read"])),
    max_step_activations=3,
)
DEFINITIONS = (ESCALATION, DUNNING, RETRIED, CYCLE)
CHANNELS = ("in_app", "email", "sms", "webhook")
RECIPIENTS = ("user:1", "user:2")
SIGNALS = ("notification.read", "notification.seen", PAID, "delivery.bounced", "unrelated")
FEEDBACK = {
    "delivered": ("succeeded", None),
    "bounced": ("cancelled", "bounced"),
    "permanent_failure": ("cancelled", "permanent_failure"),
    "temporary_failure": ("failed", None),
}
JUMPS = (timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=2, seconds=1), timedelta(days=3, hours=1))
START = datetime.fromisoformat("2026-02-02T08:00:00+00:00")


def reachable(status: str) -> set[str]:
    """Every status a delivery may reach from `status` by legal moves (one call may make two, e.g. a send)."""
    found: set[str] = set()
    todo = [status]
    while todo:
        for nxt in DELIVERY_MOVES.get(todo.pop(), frozenset()):
            if nxt not in found:
                found.add(nxt)
                todo.append(nxt)
    return found


@dataclass
class Rows:
    runs: dict[uuid.UUID, Row]
    trails: dict[uuid.UUID, list[Row]]
    deliveries: dict[uuid.UUID, list[Row]]  # per run, in activation order
    signals: list[Row]

    def delivery(self, delivery_id: uuid.UUID) -> Row:
        (found,) = [d for ds in self.deliveries.values() for d in ds if d["id"] == delivery_id]
        return found

    def all_deliveries(self) -> list[Row]:
        return [d for run_id in self.runs for d in self.deliveries.get(run_id, [])]

    def current(self, run_id: uuid.UUID) -> Row:
        return self.deliveries[run_id][self.runs[run_id]["step_activation"] - 1]

    def listening(self, name: str, recipient: str, run_id: uuid.UUID | None) -> set[uuid.UUID]:
        """The runs a signal `name` to this recipient (and run) must stop."""
        return {
            r["id"]
            for r in self.runs.values()
            if r["recipient"] == recipient
            and (run_id is None or r["id"] == run_id)
            and r["state"] == "waiting"
            and name in r["pending_signals"]
        }


class EngineMachine(RuleBasedStateMachine):
    # Set by the test before the machine runs: the database and the loop that owns its pool.
    db: Database
    loop: asyncio.AbstractEventLoop
    examples = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        # A tenant of its own per example: signals and sweeps of one example never reach another's runs
        # (each example ends with all of its runs finished).
        self.tenant = f"sm-{next(self.examples)}"
        self.now = START
        self.keys: dict[uuid.UUID, str] = {}
        self.finished: dict[uuid.UUID, tuple[Row, list[Row]]] = {}
        self.seen: dict[uuid.UUID, tuple[str, datetime | None]] = {}
        self.crashed: set[uuid.UUID] = set()  # dispatched by a send that never got its answer
        self.channel = ScriptedChannel()
        for spec in DEFINITIONS:
            self.call(register_definition(self.db, spec, now=START))

    # --- plumbing ----------------------------------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def read(self) -> Rows:
        async def load() -> Rows:
            runs = await rows(self.db, t.workflow_runs, t.workflow_runs.c.tenant_id == self.tenant)
            trail = await rows(self.db, t.workflow_transitions, t.workflow_transitions.c.run_id.in_(list(self.keys)))
            found = await rows(self.db, t.deliveries, t.deliveries.c.tenant_id == self.tenant)
            signals = await rows(self.db, t.signals, t.signals.c.tenant_id == self.tenant)
            result = Rows({r["id"]: r for r in runs}, {r["id"]: [] for r in runs}, {r["id"]: [] for r in runs}, signals)
            for row in sorted(trail, key=lambda row: row["seq"]):
                result.trails[row["run_id"]].append(row)
            for row in sorted(found, key=lambda row: row["activation"]):
                result.deliveries[row["run_id"]].append(row)
            return result

        return self.call(load())

    def unchanged(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a call that must decide nothing, and prove it wrote nothing."""
        before = self.call(snapshot(self.db))
        result = self.call(coro)
        assert self.call(snapshot(self.db)) == before
        return result

    def pick(self, items: list[T], index: int) -> T:
        return items[index % len(items)]

    @property
    def channels(self) -> dict[str, ScriptedChannel]:
        return dict.fromkeys(CHANNELS, self.channel)

    # --- rules -------------------------------------------------------------------------------------------

    @initialize(
        recipients=st.lists(st.sampled_from(RECIPIENTS), min_size=len(DEFINITIONS), max_size=len(DEFINITIONS)),
        rounds=st.lists(st.integers(0, 3), min_size=len(DEFINITIONS), max_size=len(DEFINITIONS)),
    )
    def one_run_of_each(self, recipients: list[str], rounds: list[int]) -> None:
        """A run of every definition, each taken a few workflow rounds along (into its wait, often)."""
        for spec, recipient, count in zip(DEFINITIONS, recipients, rounds, strict=True):
            self.create(spec, recipient, replay=99)
            run_id = list(self.keys)[-1]
            for _ in range(count):
                self.drive(self.read(), self.read().runs[run_id])

    @rule(spec=st.sampled_from(DEFINITIONS), recipient=st.sampled_from(RECIPIENTS), replay=st.integers(0, 99))
    def create(self, spec: dict[str, Any], recipient: str, replay: int) -> None:
        if replay < 20:
            # The same idempotency key again: the existing run comes back and nothing is written.
            run_id, key = self.pick(list(self.keys.items()), replay)
            run, created = self.unchanged(
                create_run(
                    self.db,
                    tenant_id=self.tenant,
                    workflow_key=spec["key"],
                    recipient=recipient,
                    idempotency_key=key,
                    now=self.now,
                )
            )
            assert (run.id, created) == (run_id, False)
            return
        key = f"k-{len(self.keys)}"
        run, created = self.call(
            create_run(
                self.db,
                tenant_id=self.tenant,
                workflow_key=spec["key"],
                recipient=recipient,
                idempotency_key=key,
                data={"actor": "Ada", "excerpt": "x"},
                now=self.now,
            )
        )
        assert created
        self.keys[run.id] = key

    @rule(index=st.integers(0, 999))
    def progress(self, index: int) -> None:
        before = self.read()
        run = before.runs[self.pick(list(self.keys), index)]
        current = before.current(run["id"])
        definition = self.call(self.db.definition(run["definition_id"]))
        if is_finished(run["state"]):
            expect_noop = True
        elif run["state"] == "waiting":
            expect_noop = self.now < run["due_at"]
        elif current["status"] in TERMINAL_DELIVERY_STATUSES:
            expect_noop = False  # every terminal outcome is decided on: advance, stop, wait or complete
        elif current["status"] == "failed":
            expect_noop = definition.step(run["current_step"]).rule_for("temporary_failure") is None
        else:
            expect_noop = True  # pending or dispatched: nothing to decide yet
        if expect_noop:
            progress = self.unchanged(progress_run(self.db, run["id"], now=self.now))
            assert progress.kind == "noop"
            return
        progress = self.call(progress_run(self.db, run["id"], now=self.now))
        after = self.read()
        state = {"advanced": "active", "waiting": "waiting", "completed": "completed", "stopped": "stopped"}
        assert state[progress.kind] == after.runs[run["id"]]["state"]
        assert len(after.trails[run["id"]]) > len(before.trails[run["id"]])

    @rule()
    def sweep(self) -> None:
        before = self.read()
        due = {r["id"] for r in before.runs.values() if r["state"] == "waiting" and r["due_at"] <= self.now}
        if not due:
            assert self.unchanged(progress_due_runs(self.db, now=self.now)) == []
            return
        results = self.call(progress_due_runs(self.db, now=self.now))
        assert sorted(p.run.id for p in results) == sorted(due)
        assert {p.kind for p in results} <= {"advanced", "stopped"}

    @rule(index=st.integers(0, 999), answer=st.sampled_from(ANSWERS))
    def dispatch(self, index: int, answer: Answer) -> None:
        before = self.read()
        delivery = self.pick(before.all_deliveries(), index)
        run = before.runs[delivery["run_id"]]
        self.channel.answer = answer
        sends = len(self.channel.sent)
        dispatch = dispatch_delivery(self.db, delivery["id"], channels=self.channels, now=self.now)
        awaiting = delivery["status"] == "dispatched" and delivery["id"] not in self.crashed
        # SPEC 11.3: a retry (or a send window) not due yet is refused.
        due = delivery["scheduled_for"]
        early = delivery["status"] == "failed" and due is not None and self.now < due
        if delivery["status"] in TERMINAL_DELIVERY_STATUSES or awaiting or early:
            self.unchanged(dispatch)  # idempotent: already settled, accepted and awaiting the provider, or early
            assert len(self.channel.sent) == sends
            return
        settled = self.call(dispatch)
        resend = delivery["status"] == "dispatched"
        assert settled.attempt_count == delivery["attempt_count"] + (0 if resend else 1)
        if is_finished(run["state"]):
            # Only a send begun before the run finished can get here: it is never sent afterwards.
            assert (settled.status, settled.suppression_reason) == ("suppressed", "run_stopped")
            assert len(self.channel.sent) == sends
        else:
            assert (settled.status, settled.suppression_reason) == AFTER_SEND[answer]
            assert len(self.channel.sent) == sends + 1
        if settled.status == "failed":  # its retry's time is a column, after the backoff
            assert settled.scheduled_for is not None and settled.scheduled_for > self.now
        self.crashed.discard(delivery["id"])

    @rule(index=st.integers(0, 999))
    def crash_mid_send(self, index: int) -> None:
        """A worker begins a send and dies before the provider answers: the delivery stays `dispatched`."""
        before = self.read()
        open_ = [
            d
            for d in before.all_deliveries()
            if d["status"] in ("pending", "failed") and not is_finished(before.runs[d["run_id"]]["state"])
        ]
        if open_:
            delivery = self.pick(open_, index)
            self.call(mark_dispatched(self.db, delivery["id"], now=self.now))
            self.crashed.add(delivery["id"])

    @rule(index=st.integers(0, 999), outcome=st.sampled_from(sorted(FEEDBACK)))
    def feedback(self, index: int, outcome: str) -> None:
        before = self.read()
        sent = [d for d in before.all_deliveries() if d["attempt_count"] >= 1]
        if not sent:
            return
        delivery = self.pick(sent, index)
        settled = self.call(
            record_delivery_outcome(self.db, delivery["id"], tenant_id=self.tenant, outcome=outcome, now=self.now)
        )
        after = self.read()
        if delivery["status"] == "dispatched":
            expected = FEEDBACK[outcome]
            if expected[0] == "failed" and is_finished(before.runs[delivery["run_id"]]["state"]):
                expected = ("cancelled", "run_cancelled")  # never retried for a run that has finished
            assert (settled.status, settled.suppression_reason) == expected
            self.crashed.discard(delivery["id"])
            assert after.runs == before.runs
        else:
            # Evidence only: the status stays, and the run hears of it as a signal.
            assert (settled.status, settled.suppression_reason) == (
                delivery["status"],
                delivery["suppression_reason"],
            )
            self.assert_stopped(
                before, after, before.listening(f"delivery.{outcome}", delivery["recipient"], delivery["run_id"])
            )

    @rule(
        name=st.sampled_from(SIGNALS),
        recipient=st.sampled_from(RECIPIENTS),
        targeted=st.booleans(),
        heard=st.booleans(),
        index=st.integers(0, 999),
    )
    def signal(self, name: str, recipient: str, targeted: bool, heard: bool, index: int) -> None:
        before = self.read()
        waiting = [r for r in before.runs.values() if r["pending_signals"]]
        if heard and waiting:
            # Most signals in a random walk reach no waiting run: half of them name one that a waiting run hears.
            listener = self.pick(waiting, index)
            name, recipient = self.pick(listener["pending_signals"], index), listener["recipient"]
        target = self.pick(list(before.runs.values()), index) if targeted and before.runs else None
        if target is not None:
            recipient = target["recipient"]
        run_id = target["id"] if target is not None else None
        expected = before.listening(name, recipient, run_id)
        stopped = self.call(route_signal(self.db, self.tenant, recipient, name, now=self.now, run_id=run_id))
        assert sorted(stopped) == sorted(expected)
        self.assert_stopped(before, self.read(), expected)

    @rule(index=st.integers(0, 999), receipt=st.sampled_from(RECEIPTS))
    def receipt(self, index: int, receipt: Receipt) -> None:
        before = self.read()
        delivery = self.pick(before.all_deliveries(), index)
        stamp = stamp_receipt(self.db, delivery["id"], tenant_id=self.tenant, receipt=receipt, now=self.now)
        if delivery[receipt] is not None:
            assert self.unchanged(stamp)[1] == []  # stamped once: a repeat changes nothing
            return
        stamped, stopped = self.call(stamp)
        assert getattr(stamped, receipt) == self.now
        expected = before.listening(RECEIPT_SIGNALS[receipt], delivery["recipient"], delivery["run_id"])
        assert sorted(stopped) == sorted(expected)
        self.assert_stopped(before, self.read(), expected)

    @rule(index=st.integers(0, 999))
    def cancel(self, index: int) -> None:
        before = self.read()
        run = before.runs[self.pick(list(self.keys), index)]
        call = cancel_run(self.db, run["id"], tenant_id=self.tenant, reason="user asked", now=self.now)
        if is_finished(run["state"]):
            self.unchanged(call)
            return
        stopped = self.call(call)
        assert (stopped.state, stopped.status_reason, stopped.terminal_reason) == (
            "stopped",
            "stopped_by_request",
            "user asked",
        )
        for old, new in zip(before.deliveries[run["id"]], self.read().deliveries[run["id"]], strict=True):
            if old["status"] in ("pending", "failed"):
                assert (new["status"], new["suppression_reason"]) == ("cancelled", "run_cancelled")
            else:
                assert new["status"] == old["status"]

    @rule(index=st.integers(0, 999))
    def exhaust(self, index: int) -> None:
        before = self.read()
        delivery = self.pick(before.all_deliveries(), index)
        call = exhaust_delivery(self.db, delivery["id"], now=self.now)
        if delivery["status"] == "failed":
            exhausted = self.call(call)
            assert (exhausted.status, exhausted.suppression_reason) == ("cancelled", "retries_exhausted")
        elif delivery["status"] in TERMINAL_DELIVERY_STATUSES:
            self.unchanged(call)
        else:
            with pytest.raises(InvalidDeliveryTransition):
                self.unchanged(call)

    @rule(index=st.integers(0, 999), to=st.sampled_from(DELIVERY_STATUSES))
    def illegal_move(self, index: int, to: str) -> None:
        before = self.read()
        illegal = [d for d in before.all_deliveries() if to not in DELIVERY_MOVES.get(d["status"], frozenset())]
        if not illegal:
            return
        delivery = self.pick(illegal, index)

        async def attempt() -> None:
            async with self.db.transaction() as conn:
                await move(conn, await store.lock_delivery(conn, delivery["id"]), to, now=self.now)

        with pytest.raises(InvalidDeliveryTransition):
            self.unchanged(attempt())

    @rule(index=st.integers(0, 999))
    def workflow_round(self, index: int) -> None:
        """One round of what the workflow does for a run: send, settle, wait out its timer, or decide."""
        before = self.read()
        self.drive(before, before.runs[self.pick(list(self.keys), index)])

    @rule(jump=st.sampled_from(JUMPS))
    def tick(self, jump: timedelta) -> None:
        self.now += jump

    # --- invariants --------------------------------------------------------------------------------------

    def assert_stopped(self, before: Rows, after: Rows, expected: set[uuid.UUID]) -> None:
        """Exactly the `expected` runs were stopped by a signal; no other run changed."""
        for run_id, run in after.runs.items():
            if run_id in expected:
                assert (run["state"], run["status_reason"], run["due_at"]) == ("stopped", "stopped_by_signal", None)
                assert after.trails[run_id][-1]["reason"] == "signal_received"
            else:
                assert run == before.runs[run_id]

    @invariant()
    def rows_hold(self) -> None:
        self.check(self.read())

    def check(self, now: Rows) -> None:
        assert set(now.runs) == set(self.keys)
        for run_id, run in now.runs.items():
            trail = now.trails[run_id]
            # seq is 1..n, and the trail is one chain of states ending in the run's state.
            assert [row["seq"] for row in trail] == list(range(1, len(trail) + 1))
            assert [row["from_state"] for row in trail] == [None] + [row["to_state"] for row in trail[:-1]]
            assert trail[-1]["to_state"] == run["state"]
            # due_at is set iff the run waits.
            assert (run["due_at"] is not None) == (run["state"] == "waiting")
            # One delivery per activation, each named by the step_activated transition that planned it.
            found = now.deliveries[run_id]
            assert [d["activation"] for d in found] == list(range(1, run["step_activation"] + 1))
            planned = [row["delivery_id"] for row in trail if row["reason"] == "step_activated"]
            assert planned == [d["id"] for d in found]
            # The run left every earlier activation with its delivery settled.
            assert all(d["status"] in TERMINAL_DELIVERY_STATUSES for d in found[:-1])
            if run["state"] == "waiting":
                assert found[-1]["status"] in TERMINAL_DELIVERY_STATUSES
                # No signal is lost to a race: one the wait listens for, recorded since its step was activated
                # (before the wait began, or after), has stopped the run (SPEC 4.3, 4.7).
                missed = [
                    s["id"]
                    for s in now.signals
                    if s["name"] in run["pending_signals"]
                    and s["recipient"] == run["recipient"]
                    and s["run_id"] in (None, run_id)
                    and s["created_at"] >= run["step_activated_at"]
                ]
                assert missed == [], f"run {run_id} waits although signals {missed} cancel its wait"
            if is_finished(run["state"]):
                assert all(d["status"] != "pending" for d in found)
                # A finished run never changes afterwards: its row and its trail stay as they were.
                frozen = self.finished.setdefault(run_id, (run, trail))
                assert (run, trail) == frozen
        for delivery in now.all_deliveries():
            status, terminal_at = delivery["status"], delivery["terminal_at"]
            assert (terminal_at is not None) == (status in TERMINAL_DELIVERY_STATUSES)
            previous = self.seen.get(delivery["id"])
            if previous is not None:
                old_status, old_terminal_at = previous
                assert status == old_status or status in reachable(old_status), (old_status, status)
                if old_terminal_at is not None:
                    assert terminal_at == old_terminal_at  # terminal_at never moves once set
            self.seen[delivery["id"]] = (status, terminal_at)
        # Never sent twice: a delivery is sent under its own id as the key, and never again once delivered.
        per_delivery: dict[uuid.UUID, list[Answer]] = {}
        for message, answer in self.channel.sent:
            assert message.idempotency_key == str(message.delivery_id)
            per_delivery.setdefault(message.delivery_id, []).append(answer)
        for delivery_id, answers in per_delivery.items():
            assert "ok" not in answers[:-1], answers
            assert len(answers) <= now.delivery(delivery_id)["attempt_count"]

    def teardown(self) -> None:
        """Nothing hangs: driven as the workflow drives it (send, settle, wait, decide), every run finishes."""
        for _ in range(60):
            now = self.read()
            unfinished = [r for r in now.runs.values() if not is_finished(r["state"])]
            if not unfinished:
                break
            for run in unfinished:
                self.drive(now, run)
            self.check(self.read())
        now = self.read()
        assert all(is_finished(r["state"]) for r in now.runs.values()), [r["state"] for r in now.runs.values()]

    def drive(self, now: Rows, run: Row) -> None:
        if is_finished(run["state"]):
            return
        if run["state"] == "waiting":
            self.now = max(self.now, run["due_at"])
            self.call(progress_run(self.db, run["id"], now=self.now))
            return
        delivery = now.current(run["id"])
        retry = self.call(self.db.definition(run["definition_id"])).step(run["current_step"]).retry
        self.channel.answer = "ok"
        if delivery["status"] == "failed" and delivery["attempt_count"] >= retry.max_attempts:
            self.call(exhaust_delivery(self.db, delivery["id"], now=self.now))
        elif delivery["status"] in ("pending", "failed") or delivery["id"] in self.crashed:
            self.call(dispatch_delivery(self.db, delivery["id"], channels=self.channels, now=self.now))
            self.crashed.discard(delivery["id"])
        elif delivery["status"] == "dispatched":
            self.call(
                record_delivery_outcome(
                    self.db, delivery["id"], tenant_id=self.tenant, outcome="delivered", now=self.now
                )
            )
        else:
            self.call(progress_run(self.db, run["id"], now=self.now))


# Sized for CI (2 shared cores); raise max_examples locally when changing the engine.
MACHINE_SETTINGS = settings(
    max_examples=12,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


async def test_the_engine_keeps_its_invariants_under_any_sequence_of_calls(db: Database) -> None:
    EngineMachine.db = db
    EngineMachine.loop = asyncio.get_running_loop()
    await asyncio.to_thread(run_state_machine_as_test, EngineMachine, settings=MACHINE_SETTINGS)
