"""Whole journeys end to end: Postgres + a time-skipping Temporal server + a tocsin worker, in one process.

    .venv/bin/python -m bench.journey_bench [--database-url URL] [--runs N] [--rounds R] [--quick]

Measured: N runs of a 2-step journey (in_app, then a 2 h wait, then log; SPEC 3's mention journey with
the log channel standing in for email), started through `Tocsin.start_run` and awaited to completion.
Baseline, in the same run: N runs of a 1-step in_app journey with no wait. Reference: the 1-step journey
again on a worker without Temporal's workflow sandbox, to show what the sandbox costs. Each measurement
gets a fresh time-skipping server and worker (warmed up with a few runs first); rounds alternate the order
(ABC, CBA, ...) so that a change of machine load shifts all of them alike.

The 2 h wait costs no wall time (the test server skips it), so the ratio is the cost of the second step:
the extra rounds of activities, the timer and the workflow tasks around them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import shlex
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from unittest import mock

from sqlalchemy import func, select
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

import tocsin.temporal.worker
from bench.common import StatementCounter, bench_database, loadavg, machine_facts, ms, ratio, table
from tocsin.channels import Channel, InAppChannel, LogChannel
from tocsin.cli.binaries import wheel_binary
from tocsin.client import Tocsin
from tocsin.core.contracts import RunView
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine.registry import register_definition
from tocsin.examples import example
from tocsin.temporal.connect import declare_search_attributes
from tocsin.temporal.worker import build_worker
from tocsin.testing.time_skipping import StartedWorkflows, skipping_client

TENANT = "bench"
DATA = {"actor": "Grace", "excerpt": "see PR 12"}
WARMUP = 5
START_CONCURRENCY = 10

ONE_STEP: dict[str, Any] = {
    "key": "bench_in_app_only",
    "version": 1,
    "steps": [{"key": "in_app", "channel": "in_app", "content": {"title": "{{ actor }} mentioned you"}}],
}

TWO_STEP = example("mention_escalation", key="bench_mention")


@dataclass(frozen=True)
class Journey:
    label: str
    spec: dict[str, Any]
    sandboxed: bool = True  # build_worker's workflow sandbox; off only for the reference row


BASELINE = Journey("baseline: 1-step in_app, no wait", ONE_STEP)
JOURNEYS = [
    BASELINE,
    Journey("2-step in_app -> 2 h wait -> log", TWO_STEP),
    # What Temporal's workflow sandbox costs (build_worker's default, which tocsin keeps for safety).
    Journey("ref: 1-step, workflow sandbox off", ONE_STEP, sandboxed=False),
]


@dataclass
class Measurement:
    label: str
    runs: int
    start: float  # all runs started (Postgres rows committed, workflows started)
    total: float  # from the first start to the last result
    cpu: float  # this process's CPU time (client + worker, every thread) over `total`
    statements: int  # SQL statements sent by the client and the worker over `total`
    transactions: int


async def bounded(calls: list[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def journeys(
    workflows: StartedWorkflows, tocsin: Tocsin, spec: dict[str, Any], n: int, counter: StatementCounter, label: str
) -> Measurement:
    """Start n runs, then let time skip until every workflow returned."""

    async def start() -> uuid.UUID:
        run = await tocsin.start_run(
            workflow_key=spec["key"],
            tenant_id=TENANT,
            recipient=f"user:{uuid.uuid4()}",
            data=DATA,
            idempotency_key=str(uuid.uuid4()),
        )
        return run.id

    statements, transactions = counter.count, counter.transactions
    began = time.perf_counter()
    cpu = time.process_time()
    run_ids: list[uuid.UUID] = await bounded([start] * n, START_CONCURRENCY)
    started = time.perf_counter()
    # One at a time (see StartedWorkflows.result); every workflow moves on while any one is awaited.
    results = [await workflows.result(workflow_id(r)) for r in run_ids]
    done = time.perf_counter()
    cpu = time.process_time() - cpu
    states = {RunView.model_validate(result).state for result in results}
    assert states == {"completed"}, states
    return Measurement(
        label,
        n,
        start=started - began,
        total=done - began,
        cpu=cpu,
        statements=counter.count - statements,
        transactions=counter.transactions - transactions,
    )


def worker_runner(journey: Journey) -> contextlib.AbstractContextManager[object]:
    """build_worker reads SANDBOX when called: the reference row swaps in the unsandboxed runner."""
    if journey.sandboxed:
        return contextlib.nullcontext()
    return mock.patch.object(tocsin.temporal.worker, "SANDBOX", UnsandboxedWorkflowRunner())


async def measure(db: Database, counter: StatementCounter, journey: Journey, n: int) -> Measurement:
    """A fresh time-skipping server and worker, a short warm-up, then n journeys."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=wheel_binary("temporal-test-server"),
    )
    try:
        await declare_search_attributes(env.client)
        channels: dict[str, Channel] = {"in_app": InAppChannel(), "log": LogChannel(stream=io.StringIO())}
        task_queue = f"tocsin-bench-{uuid.uuid4()}"
        client, started = skipping_client(env)
        tocsin = Tocsin(db, client, task_queue=task_queue)
        with worker_runner(journey):
            worker = build_worker(env.client, db, task_queue=task_queue, channels=channels)
        async with worker:
            await journeys(started, tocsin, journey.spec, WARMUP, counter, journey.label)
            return await journeys(started, tocsin, journey.spec, n, counter, journey.label)
    finally:
        await env.shutdown()


async def completed_runs(db: Database) -> int:
    R = t.workflow_runs
    async with db.transaction() as conn:
        return int(await conn.scalar(select(func.count()).select_from(R).where(R.c.state == "completed")) or 0)


async def run(args: argparse.Namespace) -> None:
    async with bench_database(args.database_url) as target:
        print(f"# journey_bench: {machine_facts(target)}")
        print(f"# command: {shlex.join(['.venv/bin/python', '-m', 'bench.journey_bench', *sys.argv[1:]])}")
        print(f"# runs={args.runs} per measurement, rounds={args.rounds}, warm-up {WARMUP} runs per server")
        db = await Database.connect(target.url)  # the library's defaults: pool 10 + overflow 10
        counter = StatementCounter(db)
        try:
            for spec in {j.spec["key"]: j.spec for j in JOURNEYS}.values():
                await register_definition(db, spec, now=datetime.now(UTC))
            found: dict[str, list[Measurement]] = {j.label: [] for j in JOURNEYS}
            for number in range(args.rounds):
                order = JOURNEYS if number % 2 == 0 else JOURNEYS[::-1]
                for journey in order:
                    found[journey.label].append(await measure(db, counter, journey, args.runs))
            expected = (args.runs + WARMUP) * args.rounds * len(JOURNEYS)
            assert await completed_runs(db) == expected, "a journey did not complete"
        finally:
            await db.close()
    report(found, BASELINE.label)
    print(f"\n# load average at the end: {loadavg()}")


def report(found: dict[str, list[Measurement]], baseline_label: str) -> None:
    base_runs = sum(m.runs for m in found[baseline_label])
    base_per_journey = sum(m.total for m in found[baseline_label]) / base_runs
    rows = []
    for label, measurements in found.items():
        runs = sum(m.runs for m in measurements)
        total = sum(m.total for m in measurements)
        start = sum(m.start for m in measurements)
        cpu = sum(m.cpu for m in measurements)
        statements = sum(m.statements for m in measurements)
        transactions = sum(m.transactions for m in measurements)
        rows.append(
            [
                label,
                str(runs),
                f"{start:.2f}",
                f"{total:.2f}",
                f"{runs / total:.1f}",
                ms(total / runs),
                ratio(total / runs, base_per_journey),
                ms(cpu / runs),
                f"{cpu / total:.2f}",
                f"{transactions / runs:.1f}",
                f"{statements / runs:.1f}",
                "  ".join(f"{m.runs / m.total:.1f}" for m in measurements),
            ]
        )
    print("\n## Journeys end to end (time-skipping Temporal test server, one worker, in-process)\n")
    headers = [
        "journey",
        "runs",
        "start s",
        "total s",
        "journeys/s",
        "ms/journey",
        "x baseline",
        "py CPU ms/journey",
        "py CPU / wall",
        "txns/journey",
        "stmts/journey",
        "journeys/s by round",
    ]
    print(table(headers, rows))
    print("\n`start s`: the start_run calls (Postgres commit + StartWorkflowExecution), 10 at a time; `total s`: until")
    print("the last workflow returned. `x baseline`: wall time per journey against the 1-step journey.")
    print("`py CPU`: this process's CPU time (client, worker, SDK threads); near 1.0 of wall (or above: the SDK's")
    print("core runs threads of its own), the one Python process is the limit. `txns`, `stmts`: database")
    print("transactions and SQL statements sent by the client and the worker (BEGIN/COMMIT, pre-ping not counted).")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a superuser URL of a Postgres server (default: an embedded one)")
    parser.add_argument("--runs", type=int, default=200, help="journeys per measurement (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each journey, alternating (default 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes: --runs 40 --rounds 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.rounds = 40, 2
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
