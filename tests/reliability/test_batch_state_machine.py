"""A hypothesis state machine over batching (SPEC 11.5), on a real Postgres.

Rules: triggers of a few scopes (two recipients and two posts of a keyed digest that fills up at three items; the
two recipients of an unkeyed digest throttled to two batches an hour), retried triggers, bursts of concurrent
triggers racing the close of their scope's batch, closes by `progress_run` and by the sweep, cancels, and clock
jumps. After every step the rows must hold: every trigger's item is in exactly one batch, the one its call
returned; a scope has at most one open batch; each batch closes once, with every item it holds and none added
after; a closed batch has one first delivery, an open one none; the throttle let no more batches through than its
limit; a finished run never changes. A call that decides nothing writes nothing.

Hypothesis runs the machine synchronously, so it runs in a thread and hands each engine call to the test's event
loop (as tests/reliability/test_engine_state_machine.py does).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from journeys import journey, rows, snapshot, step

from tocsin.core.models import StartedRun
from tocsin.core.vocabulary import is_finished
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine import cancel_run, create_run, progress_due_runs, progress_run
from tocsin.engine.registry import register_definition

T = TypeVar("T")
Row = dict[str, Any]

CONTENT = {"body": "{% for item in items %}{{ item.n }},{% endfor %}"}
KEYED = journey(
    "keyed_digest",
    step("email", "email", content=CONTENT),
    batch={"window": "PT10M", "key": "{{ post }}", "max_items": 3},
)
THROTTLED = journey(
    "throttled_digest",
    step("email", "email", content=CONTENT),
    batch={"window": "PT5M"},
    throttle={"limit": 2, "period": "PT1H"},
)
SPECS = {spec["key"]: spec for spec in (KEYED, THROTTLED)}
RECIPIENTS = ("user:1", "user:2")
POSTS = ("p1", "p2")
JUMPS = (timedelta(seconds=30), timedelta(minutes=4), timedelta(minutes=11), timedelta(minutes=61))
START = datetime.fromisoformat("2026-03-02T08:00:00+00:00")
MAX_ITEMS = {"keyed_digest": 3, "throttled_digest": 100}


class BatchMachine(RuleBasedStateMachine):
    db: Database
    loop: asyncio.AbstractEventLoop
    examples = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.tenant = f"bm-{next(self.examples)}"
        self.now = START
        self.keys: dict[str, uuid.UUID] = {}  # each trigger's key -> the run its call returned
        self.numbers = itertools.count(1)
        self.kept_items: dict[uuid.UUID, list[Row]] = {}
        self.finished: dict[uuid.UUID, tuple[Row, list[Row]]] = {}
        for spec in SPECS.values():
            self.call(register_definition(self.db, spec, now=START))

    # --- plumbing ----------------------------------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def read(self) -> dict[str, list[Row]]:
        async def load() -> dict[str, list[Row]]:
            runs = await rows(self.db, t.workflow_runs, t.workflow_runs.c.tenant_id == self.tenant)
            ids = [run["id"] for run in runs]
            return {
                "runs": runs,
                "items": await rows(self.db, t.run_items, t.run_items.c.tenant_id == self.tenant),
                "transitions": await rows(
                    self.db, t.workflow_transitions, t.workflow_transitions.c.run_id.in_(ids), order_by="seq"
                ),
                "deliveries": await rows(self.db, t.deliveries, t.deliveries.c.tenant_id == self.tenant),
            }

        return self.call(load())

    def unchanged(self, coro: Coroutine[Any, Any, T]) -> T:
        before = self.call(snapshot(self.db))
        result = self.call(coro)
        assert self.call(snapshot(self.db)) == before
        return result

    def trigger(
        self, workflow: str, recipient: str, post: str, key: str
    ) -> Coroutine[Any, Any, tuple[StartedRun, bool]]:
        return create_run(
            self.db,
            tenant_id=self.tenant,
            workflow_key=workflow,
            recipient=recipient,
            idempotency_key=key,
            data={"post": post, "n": next(self.numbers)},
            now=self.now,
        )

    @staticmethod
    def scope_of(run: Row) -> tuple[str, str, str | None]:
        return (run["workflow_key"], run["recipient"], run["batch_key"])

    @staticmethod
    def batch_key(workflow: str, post: str) -> str | None:
        return post if workflow == "keyed_digest" else None

    def open_batch(self, found: dict[str, list[Row]], workflow: str, recipient: str, post: str) -> Row | None:
        scope = (workflow, recipient, self.batch_key(workflow, post))
        batches = [r for r in found["runs"] if self.scope_of(r) == scope and r["state"] == "collecting"]
        return batches[0] if batches else None

    def let_through(self, found: dict[str, list[Row]], recipient: str) -> int:
        """The throttled digest's batches of `recipient` in the hour before now (SPEC 11.4's count)."""
        return sum(
            r["workflow_key"] == "throttled_digest"
            and r["recipient"] == recipient
            and r["status_reason"] != "throttled"
            and self.now - timedelta(hours=1) < r["created_at"] <= self.now
            for r in found["runs"]
        )

    # --- rules -------------------------------------------------------------------------------------------

    @rule(workflow=st.sampled_from(sorted(SPECS)), recipient=st.sampled_from(RECIPIENTS), post=st.sampled_from(POSTS))
    def new_trigger(self, workflow: str, recipient: str, post: str) -> None:
        before = self.read()
        batch = self.open_batch(before, workflow, recipient, post)
        key = f"k{len(self.keys)}"
        run, created = self.call(self.trigger(workflow, recipient, post, key))
        self.keys[key] = run.id
        assert created
        if batch is not None:
            assert (run.id, run.joined) == (batch["id"], True)
        elif workflow == "throttled_digest" and self.let_through(before, recipient) >= 2:
            assert (run.state, run.status_reason, run.joined) == ("stopped", "throttled", False)
        else:
            assert (run.state, run.joined, run.batch_key) == ("collecting", False, self.batch_key(workflow, post))

    @rule(index=st.integers(0, 999), workflow=st.sampled_from(sorted(SPECS)), post=st.sampled_from(POSTS))
    def retry(self, index: int, workflow: str, post: str) -> None:
        """A trigger's key again (for any workflow, with any data): its run, nothing written."""
        if not self.keys:
            return
        key = list(self.keys)[index % len(self.keys)]
        (item,) = [i for i in self.read()["items"] if i["idempotency_key"] == key]
        run, created = self.unchanged(self.trigger(workflow, RECIPIENTS[index % 2], post, key))
        assert (run.id, created, run.joined) == (self.keys[key], False, item["position"] > 1)

    @rule(
        workflow=st.sampled_from(sorted(SPECS)),
        recipient=st.sampled_from(RECIPIENTS),
        post=st.sampled_from(POSTS),
        size=st.integers(2, 6),
        close_at=st.integers(0, 6),
        retried=st.booleans(),
    )
    def burst(self, workflow: str, recipient: str, post: str, size: int, close_at: int, retried: bool) -> None:
        """Concurrent triggers of one scope (one of them twice), with the close of its open batch among them."""
        batch = self.open_batch(self.read(), workflow, recipient, post)
        keys = [f"k{len(self.keys) + n}" for n in range(size)]
        calls: list[Coroutine[Any, Any, Any]] = [self.trigger(workflow, recipient, post, key) for key in keys]
        if retried:
            calls.append(self.trigger(workflow, recipient, post, keys[0]))
        if batch is not None:
            calls.insert(min(close_at, len(calls)), progress_run(self.db, batch["id"], now=self.now))

        async def together() -> list[Any]:
            return list(await asyncio.gather(*calls))

        results = [r for r in self.call(together()) if isinstance(r, tuple)]
        for key, (run, _) in zip(keys, results, strict=False):
            self.keys[key] = run.id
        assert sorted(created for _, created in results) == [False] * retried + [True] * size
        if retried:
            assert results[-1][0].id == self.keys[keys[0]]

    @rule(index=st.integers(0, 999))
    def close(self, index: int) -> None:
        found = self.read()
        if not found["runs"]:
            return
        run = found["runs"][index % len(found["runs"])]
        if run["state"] == "collecting" and self.now < run["due_at"]:
            assert self.unchanged(progress_run(self.db, run["id"], now=self.now)).reason == "batch_not_due"
            return
        if run["state"] != "collecting":  # its first delivery pending, or finished: nothing to decide
            assert self.unchanged(progress_run(self.db, run["id"], now=self.now)).kind == "noop"
            return
        progress = self.call(progress_run(self.db, run["id"], now=self.now))
        assert (progress.kind, progress.run.state, len(progress.deliveries)) == ("advanced", "active", 1)

    @rule()
    def sweep(self) -> None:
        due = {r["id"] for r in self.read()["runs"] if r["state"] == "collecting" and r["due_at"] <= self.now}
        results = self.call(progress_due_runs(self.db, now=self.now))
        assert {p.run.id for p in results if p.run.tenant_id == self.tenant} == due
        assert {p.kind for p in results} <= {"advanced"}

    @rule(index=st.integers(0, 999))
    def cancel(self, index: int) -> None:
        found = self.read()
        if found["runs"]:
            run = found["runs"][index % len(found["runs"])]
            self.call(cancel_run(self.db, run["id"], tenant_id=self.tenant, reason="post deleted", now=self.now))

    @rule(jump=st.sampled_from(JUMPS))
    def tick(self, jump: timedelta) -> None:
        self.now += jump

    # --- invariants --------------------------------------------------------------------------------------

    @invariant()
    def rows_hold(self) -> None:
        found = self.read()
        # Every trigger is an item, exactly once, in the run its call returned; no item comes from elsewhere.
        assert sorted(i["idempotency_key"] for i in found["items"]) == sorted(self.keys)
        assert all(self.keys[i["idempotency_key"]] == i["run_id"] for i in found["items"])
        open_scopes = [self.scope_of(r) for r in found["runs"] if r["state"] == "collecting"]
        assert len(open_scopes) == len(set(open_scopes))  # at most one open batch per scope
        for run in found["runs"]:
            self.check_run(run, found)
        for run in found["runs"]:
            if run["workflow_key"] == "throttled_digest" and run["status_reason"] != "throttled":
                since = run["created_at"] - timedelta(hours=1)
                through = [
                    r
                    for r in found["runs"]
                    if self.scope_of(r) == self.scope_of(run)
                    and r["status_reason"] != "throttled"
                    and since < r["created_at"] <= run["created_at"]
                ]
                assert len(through) <= 2  # the throttle counted batches

    def check_run(self, run: Row, found: dict[str, list[Row]]) -> None:
        items = sorted((i for i in found["items"] if i["run_id"] == run["id"]), key=lambda i: i["position"])
        trail = [tr for tr in found["transitions"] if tr["run_id"] == run["id"]]
        firsts = [d for d in found["deliveries"] if d["run_id"] == run["id"] and d["activation"] == 1]
        assert [i["position"] for i in items] == list(range(1, len(items) + 1))
        assert 1 <= len(items) <= MAX_ITEMS[run["workflow_key"]]
        assert [tr["seq"] for tr in trail] == list(range(1, len(trail) + 1))
        assert [tr["from_state"] for tr in trail] == [None] + [tr["to_state"] for tr in trail[:-1]]
        assert trail[-1]["to_state"] == run["state"]
        assert (run["due_at"] is not None) == (run["state"] == "collecting")
        added = [tr["context"]["position"] for tr in trail if tr["reason"] == "batch_item_added"]
        closes = [tr for tr in trail if tr["reason"] == "batch_closed"]
        if run["status_reason"] == "throttled":
            assert (len(items), added, closes, firsts) == (1, [], [], [])
        else:
            assert added == [i["position"] for i in items]
        if closes:
            (close,) = closes  # closed once, with every item it holds, none added after
            assert close["context"] == {"items": len(items)}
            assert all(tr["seq"] < close["seq"] for tr in trail if tr["reason"] == "batch_item_added")
            (first,) = firsts  # one first delivery
            assert first["content"] == {"body": "".join(f"{i['data']['n']}," for i in items)}
        else:
            assert firsts == []
        if is_finished(run["state"]) or closes:
            assert items == self.kept_items.setdefault(run["id"], items)  # a closed batch takes no more items
        if is_finished(run["state"]):
            assert (run, trail) == self.finished.setdefault(run["id"], (run, trail))  # and a finished run is done


MACHINE_SETTINGS = settings(
    max_examples=10,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


async def test_batches_keep_their_invariants_under_any_interleaving(db: Database) -> None:
    BatchMachine.db = db
    BatchMachine.loop = asyncio.get_running_loop()
    await asyncio.to_thread(run_state_machine_as_test, BatchMachine, settings=MACHINE_SETTINGS)
