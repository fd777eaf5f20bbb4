"""Journeys against bare Temporal (issue 14, goal 3): a 3-step journey vs a bare workflow running as many no-op
activities, on the dev server, each kind on a worker process of its own.

    .venv/bin/python -m bench.journey_floor [--sizes 50] [--rounds 2] [--database-url URL]
    .venv/bin/python -m bench.journey_floor --sizes 50,500 --rounds 3        # the issue's sizes

First one journey (three in_app steps, each moving on when its message is delivered; no waits) is run alone and
its history read: its activities, their payload sizes, its search-attribute upserts. That history is the plan of
the floor and of the breakdown, all bench/bare.py's BenchActivitiesWorkflow on a `python -m bench.workers bare`
worker (the same client, runtime, data converter and sandbox as tocsin's), each a change of one thing:

- floor (the goal's): the journey's number of no-op activities, all activity tasks (the journey's local ones
  counted too), tiny payloads, no upserts; and the same no-ops all local activities;
- + the journey's upserts; + its payload sizes; both, all activity tasks (the journey's shape before its decisions
  and instant sends ran locally); both, local where the journey's are (its shape now, without its database work);
- the floor without the workflow sandbox; and tocsin's journey on a worker without it (bench.workers tocsin).

Batches of B runs are started at once (50 starts in flight; a journey's start is `Tocsin.start_run`: its
Postgres commit, then the workflow's start) and awaited to the last result; each round measures every row once,
in alternating order. Then, for one batch of each row, its histories say where a run's time went (activity
execution, activity and workflow-task queueing, workflow-task processing), and /proc says the worker's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.bare import ACTIVITIES_WORKFLOW
from bench.common import bench_database, loadavg, machine_facts, ms, table
from bench.noop import Noop, Plan, Step
from bench.workers import (
    WorkerProcess,
    bench_worker,
    cpu_seconds,
    dev_server,
    dev_server_pid,
    parent_pid,
    tocsin_worker,
    tree_cpu_seconds,
    worker_process,
)
from tocsin.client import Tocsin
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.engine.registry import register_definition

TENANT = "bench"
START_CONCURRENCY = 50
WARMUP = 10
JOURNEY: dict[str, Any] = {
    "key": "bench_three_steps",
    "version": 1,
    "steps": [
        {
            "key": "first",
            "channel": "in_app",
            "content": {"title": "{{ actor }} mentioned you", "body": "{{ excerpt }}"},
            "progress": [{"kind": "on_outcome", "outcome": "delivered", "to_step": "second"}],
        },
        {
            "key": "second",
            "channel": "in_app",
            "content": {"title": "{{ actor }} is waiting", "body": "{{ excerpt }}"},
            "progress": [{"kind": "on_outcome", "outcome": "delivered", "to_step": "third"}],
        },
        {"key": "third", "channel": "in_app", "content": {"title": "Last call from {{ actor }}"}},
    ],
}
DATA = {"actor": "Grace", "excerpt": "see PR 12"}
E = EventType


# --- the journey's history, and plans made from it ---------------------------------------------------------


@dataclass(frozen=True)
class Activity:
    type: str
    input_bytes: int
    result_bytes: int
    upsert: bool  # a search-attribute upsert between its completion and the next activity
    local: bool = False  # a local activity: its marker in the history, no activity task (its input not recorded)


@dataclass(frozen=True)
class Shape:
    activities: list[Activity]
    workflow_tasks: int
    events: int
    history_bytes: int
    upserts: int


def payloads_size(payloads: Any) -> int:
    return sum(p.ByteSize() for p in payloads.payloads)


def shape_of(history: WorkflowHistory) -> Shape:
    activities: list[Activity] = []
    inputs: dict[int, tuple[str, int]] = {}
    upserts = 0
    for event in history.events:
        if event.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            inputs[event.event_id] = (scheduled.activity_type.name, payloads_size(scheduled.input))
        elif event.event_type == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = event.activity_task_completed_event_attributes
            name, size = inputs[completed.scheduled_event_id]
            activities.append(Activity(name, size, payloads_size(completed.result), upsert=False))
        elif event.event_type == E.EVENT_TYPE_MARKER_RECORDED and (local := local_activity(event)) is not None:
            activities.append(local)
        elif event.event_type == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            upserts += 1
            if activities:
                activities[-1] = dataclasses.replace(activities[-1], upsert=True)
    return Shape(
        activities,
        workflow_tasks=sum(e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events),
        events=len(history.events),
        history_bytes=sum(e.ByteSize() for e in history.events),
        upserts=upserts,
    )


def local_activity(event: HistoryEvent) -> Activity | None:
    """A local activity's completed attempt, from its marker (the SDK's `core_local_activity`)."""
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != "core_local_activity" or marker.HasField("failure"):
        return None
    (data,) = marker.details["data"].payloads
    result = payloads_size(marker.details["result"]) if "result" in marker.details else 0
    return Activity(json.loads(data.data)["activity_type"], 0, result, upsert=False, local=True)


def overheads() -> tuple[int, int]:
    """The bytes of a no-op's input payload with no pad and of its result with no characters."""
    converter = pydantic_data_converter.payload_converter
    return converter.to_payloads([Noop()])[0].ByteSize(), converter.to_payloads([""])[0].ByteSize()


def step(activity: Activity, *, sized: bool, upsert: bool, local: bool = False) -> Step:
    empty_input, empty_result = overheads()
    return Step(
        pad=max(0, activity.input_bytes - empty_input) if sized else 0,
        result_chars=max(0, activity.result_bytes - empty_result) if sized else 0,
        local=local,
        upsert=upsert and activity.upsert,
    )


def plans(shape: Shape) -> dict[str, Plan]:
    """The bare rows: each the journey's plan with one thing changed. `local`: which no-ops run as local activities
    (none, those the journey runs locally, every one)."""
    acts = shape.activities

    def plan(*, sized: bool, upsert: bool, local: Literal["none", "as run", "all"]) -> Plan:
        return Plan(
            steps=[
                step(a, sized=sized, upsert=upsert, local=local == "all" or (local == "as run" and a.local))
                for a in acts
            ]
        )

    return {
        "floor": plan(sized=False, upsert=False, local="none"),
        "local floor": plan(sized=False, upsert=False, local="all"),
        "upserts": plan(sized=False, upsert=True, local="none"),
        "payloads": plan(sized=True, upsert=False, local="none"),
        "tasks shape": plan(sized=True, upsert=True, local="none"),
        "shape": plan(sized=True, upsert=True, local="as run"),
    }


# --- rows, batches ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    worker: str  # a key of the worker processes
    plan: Plan | None = None  # None: tocsin's journey


CPU = ("worker", "Temporal", "Postgres", "driver")


@dataclass
class Batch:
    total: float  # from the first start to the last result
    start: float  # all started
    cpu: dict[str, float]  # CPU seconds over the batch: the row's worker, the dev server, Postgres, this process
    ids: list[str] = field(default_factory=list)


class Runner:
    def __init__(
        self, client: Client, db: Database, workers: dict[str, WorkerProcess], *, server_pid: int, postgres_pid: int
    ) -> None:
        self.client, self.db, self.workers = client, db, workers
        self.server_pid, self.postgres_pid = server_pid, postgres_pid

    def cpu(self, worker: WorkerProcess) -> dict[str, float]:
        return {
            "worker": cpu_seconds(worker.pid),
            "Temporal": cpu_seconds(self.server_pid),
            "Postgres": tree_cpu_seconds(self.postgres_pid),
            "driver": time.process_time(),
        }

    async def batch(self, row: Row, n: int) -> Batch:
        worker = self.workers[row.worker]
        tocsin = Tocsin(self.db, self.client, task_queue=worker.task_queue)
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def journey() -> str:
            async with gate:
                run = await tocsin.start_run(
                    workflow_key=JOURNEY["key"],
                    tenant_id=TENANT,
                    recipient=f"user:{uuid.uuid4()}",
                    data=DATA,
                    idempotency_key=str(uuid.uuid4()),
                )
                return workflow_id(run.id)

        async def bare() -> str:
            async with gate:
                wid = f"bench-floor-{uuid.uuid4()}"
                await self.client.start_workflow(ACTIVITIES_WORKFLOW, row.plan, id=wid, task_queue=worker.task_queue)
                return wid

        start: Callable[[], Awaitable[str]] = journey if row.plan is None else bare
        cpu, began = self.cpu(worker), time.perf_counter()
        ids = list(await asyncio.gather(*(start() for _ in range(n))))
        started = time.perf_counter()
        await asyncio.gather(*(self.client.get_workflow_handle(wid).result() for wid in ids))
        done = time.perf_counter()
        used = {k: v - cpu[k] for k, v in self.cpu(worker).items()}
        return Batch(done - began, started - began, used, ids)


# --- where a run's time went, from its history ---------------------------------------------------------------


def at(event: HistoryEvent) -> float:
    return event.event_time.ToNanoseconds() / 1e9


PARTS = ("activity run", "activity queued", "task run", "task queued")


def time_parts(history: WorkflowHistory) -> tuple[float, dict[str, float]]:
    """(the run's wall time, start to close; seconds spent in each of PARTS), by the server's timestamps."""
    events = history.events
    by_id = {e.event_id: e for e in events}
    parts = dict.fromkeys(PARTS, 0.0)
    for e in events:
        if e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            parts["activity queued"] += at(e) - at(by_id[e.activity_task_started_event_attributes.scheduled_event_id])
        elif e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            parts["activity run"] += at(e) - at(by_id[e.activity_task_completed_event_attributes.started_event_id])
        elif e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            parts["task queued"] += at(e) - at(by_id[e.workflow_task_started_event_attributes.scheduled_event_id])
        elif e.event_type == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            parts["task run"] += at(e) - at(by_id[e.workflow_task_completed_event_attributes.started_event_id])
    return at(events[-1]) - at(events[0]), parts


async def breakdown(client: Client, ids: list[str]) -> tuple[float, dict[str, float]]:
    """Mean wall time per run and mean seconds per part, over the runs' histories."""
    found = [time_parts(await client.get_workflow_handle(wid).fetch_history()) for wid in ids]
    return statistics.fmean(w for w, _ in found), {p: statistics.fmean(parts[p] for _, parts in found) for p in PARTS}


# --- the benchmark -------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def all_workers(address: str, database_url: str, logs: Path) -> AsyncIterator[dict[str, WorkerProcess]]:
    commands = {
        "tocsin": tocsin_worker(),
        "tocsin unsandboxed": bench_worker("tocsin", sandboxed=False),
        "bare": bench_worker("bare"),
        "bare unsandboxed": bench_worker("bare", sandboxed=False),
    }
    settings = {"TOCSIN_DATABASE_URL": database_url}
    async with contextlib.AsyncExitStack() as stack:
        workers = {}
        for name, command in commands.items():
            workers[name] = await stack.enter_async_context(
                worker_process(command, address=address, logs=logs, name=name.replace(" ", "-"), settings=settings)
            )
        yield workers


def rows_for(shape: Shape) -> list[Row]:
    bare = plans(shape)
    n = len(shape.activities)
    local = sum(a.local for a in shape.activities)
    return [
        Row("tocsin: 3-step journey", "tocsin"),
        Row(f"floor: bare, {n} no-op activities", "bare", bare["floor"]),
        Row(f"bare, {n} no-op local activities", "bare", bare["local floor"]),
        Row(f"bare + the journey's {shape.upserts} upserts", "bare", bare["upserts"]),
        Row("bare + the journey's payload sizes", "bare", bare["payloads"]),
        Row("bare + upserts + payloads, all activity tasks", "bare", bare["tasks shape"]),
        Row(f"bare, the journey's shape ({local} of {n} local)", "bare", bare["shape"]),
        Row("ref: floor, sandbox off", "bare unsandboxed", bare["floor"]),
        Row("ref: tocsin journey, sandbox off", "tocsin unsandboxed"),
    ]


def describe(shape: Shape) -> None:
    print(f"\n## The journey's history (one run alone): {len(shape.activities)} activities\n")
    rows = [
        [
            str(i + 1),
            a.type,
            "local" if a.local else "task",
            str(a.input_bytes),
            str(a.result_bytes),
            "yes" if a.upsert else "",
        ]
        for i, a in enumerate(shape.activities)
    ]
    print(table(["#", "activity", "kind", "input B", "result B", "then upsert"], rows))
    kinds = Counter(a.type for a in shape.activities)
    print(
        f"\n{', '.join(f'{n} {k}' for k, n in kinds.items())}; {shape.upserts} upserts; {shape.workflow_tasks} "
        f"workflow tasks; {shape.events} events, {shape.history_bytes} B of history."
    )


async def run(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    async with bench_database(args.database_url) as target:
        print(f"# journey_floor: {machine_facts(target)}")
        print(f"# command: {shlex.join(['.venv/bin/python', '-m', 'bench.journey_floor', *sys.argv[1:]])}")
        print(f"# sizes={sizes} rounds={args.rounds}; {START_CONCURRENCY} starts in flight", flush=True)
        db = await Database.connect(target.url, pool_size=START_CONCURRENCY)
        try:
            await register_definition(db, JOURNEY, now=datetime.now(UTC))
            with tempfile.TemporaryDirectory(prefix="tocsin-floor-") as tmp:
                async with dev_server() as (client, address), all_workers(address, target.url, Path(tmp)) as workers:
                    async with db.transaction() as conn:
                        backend = int(await conn.scalar(text("SELECT pg_backend_pid()")))
                    # The backend's parent: the postmaster, whose children are every backend.
                    postgres = parent_pid(backend)
                    runner = Runner(client, db, workers, server_pid=dev_server_pid(address), postgres_pid=postgres)
                    await measure(
                        runner, client, sizes, args.rounds, [int(i) for i in args.only.split(",")] if args.only else []
                    )
        finally:
            await db.close()
    print(f"\n# load average at the end: {loadavg()}")


async def idle(runner: Runner, *, seconds: float) -> None:
    """What the processes use with nothing to do (the workers' pollers held open): a background to the CPU table."""
    before = {name: runner.cpu(worker) for name, worker in runner.workers.items()}
    await asyncio.sleep(seconds)
    after = {name: runner.cpu(worker) for name, worker in runner.workers.items()}
    workers = sum(after[name]["worker"] - before[name]["worker"] for name in runner.workers)
    first = next(iter(runner.workers))
    server, postgres = (after[first][k] - before[first][k] for k in ("Temporal", "Postgres"))
    print(
        f"\nIdle, {len(runner.workers)} workers polling: CPU ms per second: Temporal {ms(server / seconds)}, "
        f"Postgres {ms(postgres / seconds)}, the workers {ms(workers / seconds)}"
    )


async def measure(runner: Runner, client: Client, sizes: list[int], rounds: int, only: list[int]) -> None:
    probe = await runner.batch(Row("probe", "tocsin"), 1)
    shape = shape_of(await client.get_workflow_handle(probe.ids[0]).fetch_history())
    describe(shape)
    rows = rows_for(shape)
    if any(i >= len(rows) for i in only):
        raise SystemExit(f"--only: the rows are 0-{len(rows) - 1}")
    rows = rows[:2] + [rows[i] for i in only if i >= 2] if only else rows
    for row in rows:
        await runner.batch(row, WARMUP)
    await idle(runner, seconds=5)
    found: dict[tuple[int, str], list[Batch]] = {}
    for size in sizes:
        for number in range(rounds):
            for row in rows if number % 2 == 0 else rows[::-1]:
                found.setdefault((size, row.label), []).append(await runner.batch(row, size))
            print(f"# size {size}: round {number + 1} of {rounds} done (load {loadavg()})", flush=True)
    summaries = []
    for size in sizes:
        summaries.append(await report(client, size, rows, {r.label: found[size, r.label] for r in rows}))
    print()
    for line in summaries:
        print(line)


async def report(client: Client, size: int, rows: list[Row], found: dict[str, list[Batch]]) -> str:
    journey, floor = rows[0].label, rows[1].label

    def per_run(label: str) -> float:
        return sum(b.total for b in found[label]) / sum(len(b.ids) for b in found[label])

    def cpu(label: str) -> dict[str, float]:
        batches = found[label]
        runs = sum(len(b.ids) for b in batches)
        return {k: sum(b.cpu[k] for b in batches) / runs for k in CPU}

    base, base_cpu = per_run(floor), sum(cpu(floor).values())
    table_rows = []
    cpu_rows = []
    parts_rows = []
    for row in rows:
        batches = found[row.label]
        runs = sum(len(b.ids) for b in batches)
        wall, parts = await breakdown(client, batches[-1].ids)
        used = cpu(row.label)
        table_rows.append(
            [
                row.label,
                str(runs),
                f"{sum(b.start for b in batches) / len(batches):.2f}",
                f"{sum(b.total for b in batches) / len(batches):.2f}",
                f"{runs / sum(b.total for b in batches):.1f}",
                f"{base / per_run(row.label):.2f}",
                "  ".join(f"{len(b.ids) / b.total:.1f}" for b in batches),
            ]
        )
        total = sum(used.values())
        cpu_rows.append([row.label, *(ms(used[k]) for k in CPU), ms(total), f"{base_cpu / total:.2f}"])
        parts_rows.append([row.label, ms(wall), *(ms(parts[p]) for p in PARTS)])
    print(f"\n## {size} runs started at once, to the last result ({len(found[journey])} rounds)\n")
    headers = ["row", "runs", "start s", "total s", "runs/s", "floor / row", "runs/s by round"]
    print(table(headers, table_rows))
    print("\n`start s`, `total s`: per batch (mean); `floor / row`: the floor's time per run over this row's (the")
    print("journey's is the goal's ratio, >= 0.8).")
    print(f"\n## CPU time per run ({size} at once; ms, all rounds)\n")
    print(table(["row", *CPU, "all", "floor / row"], cpu_rows))
    print("\n`worker`: the row's worker process; `Temporal`: the dev server; `Postgres`: the server and its backends")
    print("(a server of its own unless --database-url); `driver`: this process (the starts, Tocsin.start_run's")
    print("create_run, the results). On 2 cores the batch's wall time follows the sum.")
    print(f"\n## Where a run's time went ({size} at once; the last batch's histories, mean per run, ms)\n")
    print(table(["row", "start -> close", *PARTS], parts_rows))
    print("\n`activity run`: started -> completed, summed over the run's activities; `queued`: scheduled -> started;")
    print("`task`: workflow tasks, likewise. Under a batch the queues are the worker's backlog.")
    ratio = base / per_run(journey)
    return f"journey_floor: {size} at once: journey / bare floor (same activity count) = {ratio:.2f} (goal >= 0.8)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a superuser URL of a Postgres server (default: an embedded one)")
    parser.add_argument("--sizes", default="50", help="comma-separated batch sizes (default 50)")
    parser.add_argument("--rounds", type=int, default=2, help="batches of each row per size, alternating (default 2)")
    parser.add_argument(
        "--only", help="comma-separated indexes of further rows (2-11) beside the journey and the floor"
    )
    args = parser.parse_args(argv)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
