"""Which wait a signal counts for, at the moment a step is activated (SPEC 4.3).

`step_activated_at` is the `now` of the decision that activated the step: the workflow task's time, a little
earlier than the commit. A signal recorded at or after it counts for the new step's wait, also one recorded
in between (after that moment, before the commit): the previous wait was over by then, and a signal that
reaches an active run stops nothing, so counting it for the next wait is the only way it is not lost. A
signal recorded before that moment belongs to the step before: it does not stop the next one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from journeys import deliveries, drive, journey, on, reasons, start, step, transitions, wait

from tocsin.core.models import Run
from tocsin.db import Database
from tocsin.engine.runs import progress_run
from tocsin.engine.signals import route_signal

READ = "notification.read"
# `first` moves on as soon as its message is delivered; `second` waits an hour for a read, then `third`.
SPEC = journey(
    "boundary",
    step("first", "in_app", on("delivered", "second"), content={"title": "one", "body": "one"}),
    step("second", "in_app", wait("third", 3600, cancel_signals=[READ]), content={"title": "two", "body": "two"}),
    step("third", "in_app", content={"title": "three", "body": "three"}),
)
TICK = timedelta(microseconds=1)


async def activate_second(db: Database, run: Run, *, at: datetime) -> Run:
    """Deliver `first` and let the run move to `second`, the decision taken at `at`."""
    (first,) = await deliveries(db, run.id)
    await drive(db, first["id"], "succeeded", now=at)
    progress = await progress_run(db, run.id, now=at)
    assert (progress.kind, progress.run.current_step, progress.run.step_activated_at) == ("advanced", "second", at)
    return progress.run


async def enter_the_wait(db: Database, run: Run, *, at: datetime) -> Run:
    """Deliver `second`, then decide: wait for a read, or stop for one already recorded."""
    second = (await deliveries(db, run.id))[1]
    await drive(db, second["id"], "succeeded", now=at)
    return (await progress_run(db, run.id, now=at)).run


@pytest.mark.parametrize(
    ("signal_offset", "stops"),
    [(timedelta(0), True), (TICK, True), (-TICK, False)],
    ids=["at-step_activated_at", "just-after", "just-before"],
)
async def test_a_signal_recorded_while_the_step_is_activated(
    db: Database, t0: datetime, signal_offset: timedelta, stops: bool
) -> None:
    """The signal is recorded while the run is active (its wait not yet entered): it stops nothing then."""
    run = await start(db, SPEC, now=t0)
    activation = t0 + timedelta(minutes=5)
    if signal_offset < timedelta(0):
        assert await route_signal(db, run.tenant_id, run.recipient, READ, now=activation + signal_offset) == []
        run = await activate_second(db, run, at=activation)
    else:
        run = await activate_second(db, run, at=activation)
        assert await route_signal(db, run.tenant_id, run.recipient, READ, now=activation + signal_offset) == []
    waited = await enter_the_wait(db, run, at=activation + timedelta(seconds=1))
    if stops:
        assert (waited.state, waited.status_reason, waited.terminal_reason) == (
            "stopped",
            "stopped_by_signal",
            f"signal:{READ}",
        )
    else:
        assert (waited.state, waited.current_step) == ("waiting", "second")
    assert reasons(await transitions(db, run.id))[-1] == (
        "signal_received" if stops else "waiting_for_step_progression"
    )


async def test_a_signal_recorded_between_the_activation_and_its_commit_counts_for_the_new_wait(
    db: Database, t0: datetime
) -> None:
    """The window the workflow's clock opens: the signal is stamped after the task's time but reaches
    Postgres while the run is still at `first` (the advance not yet committed). `first` does not listen,
    the run is not waiting: the signal stops nothing then, and the next wait takes it."""
    run = await start(db, SPEC, now=t0)
    task_time = t0 + timedelta(minutes=5)
    assert await route_signal(db, run.tenant_id, run.recipient, READ, now=task_time + timedelta(milliseconds=40)) == []
    run = await activate_second(db, run, at=task_time)
    waited = await enter_the_wait(db, run, at=task_time + timedelta(seconds=1))
    assert (waited.state, waited.terminal_reason) == ("stopped", f"signal:{READ}")
    # Stopped at once: `second`'s wait never began, and no delivery of `third` was planned.
    assert [d["step_key"] for d in await deliveries(db, run.id)] == ["first", "second"]
