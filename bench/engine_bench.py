"""The progression engine on a real Postgres: what one decision costs, in trivial transactions.

    .venv/bin/python -m bench.engine_bench [--database-url URL] [--runs N] [--rounds R] [--sweep-runs N]
        [--sweep-rounds R] [--contention-rounds N] [--no-processes] [--quick]

Without --database-url an embedded Postgres is started in a temporary directory and deleted afterwards;
with one, a database `tocsin_bench_*` is created on that server, migrated, and dropped at the end (the
sweeps also create and drop a few copies of a template database).

Every latency is also printed as a ratio to the baseline measured in the same run: one trivial
transaction (`SELECT 1` inside `Database.transaction()`), so "advance 6.0x" reads "an advance costs about
six trivial transactions". `stmts/op` counts the SQL statements the operation sent (BEGIN/COMMIT are not
counted); `py CPU ms` is this process's CPU time per operation (tocsin, SQLAlchemy,
asyncpg), the rest of the latency being Postgres and the round trips to it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.synchronize
import shlex
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import (
    StatementCounter,
    Stats,
    Target,
    bench_database,
    database_name,
    loadavg,
    machine_facts,
    ms,
    ratio,
    scratch_database,
    table,
    timed,
)
from tocsin.core.models import Progress, Run
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.db.database import async_url
from tocsin.engine.deliveries import SendKind, SendResult, mark_dispatched, record_attempt
from tocsin.engine.registry import register_definition
from tocsin.engine.runs import create_run, progress_due_runs, progress_run
from tocsin.examples import example

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TENANT = "bench"
DATA = {"actor": "Ada", "excerpt": "see the draft"}
CALLERS = 20

# SPEC 3's example (shipped with tocsin): in_app, then email on a bounce, or two hours after it landed.
ESCALATION = example("mention_escalation", key="bench_escalation")


@dataclass
class Row:
    label: str
    stats: Stats
    statements: float | None = None
    cpu: float | None = None  # this process's CPU time per operation (Python, SQLAlchemy, asyncpg)


# --- setup helpers (not timed unless a section says so) -----------------------------------------------------


async def new_run(db: Database, *, now: datetime) -> Run:
    run, created = await create_run(
        db,
        tenant_id=TENANT,
        workflow_key=ESCALATION["key"],
        recipient=f"user:{uuid.uuid4()}",
        idempotency_key=str(uuid.uuid4()),
        data=DATA,
        now=now,
    )
    assert created
    return run


async def first_delivery(db: Database, run_id: uuid.UUID) -> uuid.UUID:
    D = t.deliveries
    async with db.transaction() as conn:
        found = await conn.scalar(select(D.c.id).where(D.c.run_id == run_id, D.c.activation == 1))
    assert isinstance(found, uuid.UUID)
    return found


async def finish_first(db: Database, run: Run, kind: SendKind, *, now: datetime) -> None:
    """Dispatch the run's first delivery and record `kind` ("bounced", "succeeded") the way dispatch does."""
    delivery_id = await first_delivery(db, run.id)
    await mark_dispatched(db, delivery_id, now=now)
    await record_attempt(
        db, delivery_id, SendResult(kind, error="mailbox unknown" if kind == "bounced" else None), now=now
    )


async def bounded(calls: Sequence[Callable[[], Awaitable[Any]]], limit: int = 8) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def waiting_runs(db: Database, count: int, *, landed_at: datetime) -> list[Run]:
    """`count` runs whose in-app delivery succeeded at `landed_at`: waiting until `landed_at` + 2 h."""

    async def one() -> Run:
        run = await new_run(db, now=landed_at)
        await finish_first(db, run, "succeeded", now=landed_at)
        progress = await progress_run(db, run.id, now=landed_at)
        assert progress.kind == "waiting", progress
        return progress.run

    return await bounded([one] * count)


async def bounced_runs(db: Database, count: int, *, now: datetime) -> list[Run]:
    async def one() -> Run:
        run = await new_run(db, now=now)
        await finish_first(db, run, "bounced", now=now)
        return run

    return await bounded([one] * count)


# --- the sweeps ---------------------------------------------------------------------------------------------


async def sweep_all(db: Database, *, now: datetime, limit: int) -> list[Progress]:
    """Call progress_due_runs until nothing is due (one call when limit >= the runs due)."""
    done: list[Progress] = []
    while batch := await progress_due_runs(db, now=now, limit=limit):
        done.extend(batch)
    return done


async def sweeper_db(url: str, definition_id: uuid.UUID) -> Database:
    """A sweeper's own pool, connected and with the definition cached, so timing starts warm."""
    db = await Database.connect(url, pool_size=2, max_overflow=0)
    async with db.transaction() as conn:
        await db.definition(definition_id, conn)
    return db


@dataclass(frozen=True)
class SweepConfig:
    label: str
    sweepers: int
    in_processes: bool
    limit: int = 1000  # progress_due_runs' default


async def sweep_in_process(
    url: str, definition_id: uuid.UUID, config: SweepConfig, *, now: datetime
) -> tuple[float, list[list[tuple[str, str]]]]:
    dbs = [await sweeper_db(url, definition_id) for _ in range(config.sweepers)]
    try:
        began = time.perf_counter()
        shares = await asyncio.gather(*(sweep_all(db, now=now, limit=config.limit) for db in dbs))
        wall = time.perf_counter() - began
    finally:
        for db in dbs:
            await db.close()
    return wall, [[(str(p.run.id), p.kind) for p in share] for share in shares]


def _sweeper_process(
    url: str, definition_id: str, now: str, limit: int, barrier: multiprocessing.synchronize.Barrier, out: Any
) -> None:
    async def main() -> None:
        db = await sweeper_db(url, uuid.UUID(definition_id))
        try:
            barrier.wait()  # timing starts when every process is connected and warm
            began = time.perf_counter()
            done = await sweep_all(db, now=datetime.fromisoformat(now), limit=limit)
            ended = time.perf_counter()
        finally:
            await db.close()
        out.put((began, ended, [(str(p.run.id), p.kind) for p in done]))

    asyncio.run(main())


def sweep_in_processes(
    url: str, definition_id: uuid.UUID, config: SweepConfig, *, now: datetime
) -> tuple[float, list[list[tuple[str, str]]]]:
    """Each sweeper in its own process, as separate worker or `tocsin due` processes would be."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(config.sweepers)
    out = ctx.Queue()
    args = (url, str(definition_id), now.isoformat(), config.limit, barrier, out)
    procs = [ctx.Process(target=_sweeper_process, args=args) for _ in range(config.sweepers)]
    for p in procs:
        p.start()
    reports = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    # perf_counter is CLOCK_MONOTONIC on Linux: comparable across processes.
    wall = max(r[1] for r in reports) - min(r[0] for r in reports)
    return wall, [r[2] for r in reports]


# --- the benchmark ------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    async with bench_database(args.database_url) as target:
        print(f"# engine_bench: {machine_facts(target)}")
        print(f"# command: {shlex.join(['.venv/bin/python', '-m', 'bench.engine_bench', *sys.argv[1:]])}")
        print(
            f"# runs={args.runs} (in {args.rounds} interleaved rounds) sweep_runs={args.sweep_runs} "
            f"sweep_rounds={args.sweep_rounds} callers={CALLERS} contention_rounds={args.contention_rounds}"
        )
        db = await Database.connect(target.url)  # the library's defaults: pool 10 + overflow 10
        try:
            await body(db, target, args)
        finally:
            await db.close()
        print(f"\n# load average at the end: {loadavg()}")


class Op:
    """One measured operation: its samples accumulate over the interleaved rounds."""

    def __init__(self, label: str, counter: StatementCounter | None) -> None:
        self.label = label
        self.counter = counter
        self.samples: list[float] = []
        self.statements = 0
        self.cpu = 0.0

    async def measure(self, calls: Sequence[Callable[[], Awaitable[object]]]) -> None:
        before = self.counter.count if self.counter else 0
        cpu = time.process_time()
        self.samples.extend((await timed(calls)).samples)
        self.cpu += time.process_time() - cpu
        if self.counter:
            self.statements += self.counter.count - before

    def row(self) -> Row:
        per_op = self.statements / len(self.samples) if self.counter else None
        return Row(self.label, Stats(tuple(self.samples)), per_op, self.cpu / len(self.samples))


async def body(db: Database, target: Target, args: argparse.Namespace) -> None:
    counter = StatementCounter(db)
    await register_definition(db, ESCALATION, now=T0)
    async with db.transaction() as conn:
        await conn.execute(text("CREATE TABLE public.bench_scratch (id bigserial PRIMARY KEY, at timestamptz)"))
    # What SQLAlchemy's pre-ping (tocsin's liveness check before issue 14) adds to every checkout.
    pinged = Database(create_async_engine(async_url(target.url), pool_size=10, max_overflow=10, pool_pre_ping=True))
    raw = await asyncpg.connect(target.url)
    # Waiting runs for the noop, due long after everything else here.
    noop_runs = await waiting_runs(db, 20, landed_at=T0 + timedelta(days=100))
    try:
        ops = await sequential(db, pinged, raw, counter, noop_runs, runs=args.runs, rounds=args.rounds)
    finally:
        await pinged.close()
        await raw.close()
    base = ops[0].stats
    print("\n## Per-operation latency: one caller, sequential, interleaved rounds\n")
    print(table(HEADERS, [line(r, base) for r in ops]))

    await contention(db, base, rounds=args.contention_rounds)
    await sweeps(target, base, n=args.sweep_runs, rounds=args.sweep_rounds, processes=not args.no_processes)


HEADERS = ["operation", "n", "mean ms", "p50 ms", "p95 ms", "x base (mean)", "x base (p50)", "stmts/op", "py CPU ms"]


def line(row: Row, base: Stats) -> list[str]:
    s = row.stats
    return [
        row.label,
        str(s.n),
        ms(s.mean),
        ms(s.p50),
        ms(s.p95),
        ratio(s.mean, base.mean),
        ratio(s.p50, base.p50),
        f"{row.statements:.1f}" if row.statements is not None else "",
        ms(row.cpu) if row.cpu is not None else "",
    ]


async def sequential(
    db: Database,
    pinged: Database,
    raw: asyncpg.Connection,
    counter: StatementCounter,
    noop_runs: list[Run],
    *,
    runs: int,
    rounds: int,
) -> list[Row]:
    """(a)-(d) and references, in rounds: each round runs a chunk of every operation, so that a change of
    machine load during the run shifts the baseline and the operations alike instead of skewing the ratios."""

    async def trivial() -> None:
        async with db.transaction() as conn:
            await conn.execute(text("SELECT 1"))

    async def trivial_pinged() -> None:
        async with pinged.transaction() as conn:
            await conn.execute(text("SELECT 1"))

    async def trivial_raw() -> None:
        async with raw.transaction():
            await raw.fetchval("SELECT 1")

    async def ten_selects() -> None:
        async with db.transaction() as conn:
            for _ in range(10):
                await conn.execute(text("SELECT 1"))

    async def one_insert() -> None:
        async with db.transaction() as conn:
            await conn.execute(text("INSERT INTO public.bench_scratch (at) VALUES (:at)"), {"at": T0})

    baseline = Op("(a) baseline: SELECT 1 in db.transaction()", counter)
    refs = [
        (Op("ref: the same with SQLAlchemy's pool_pre_ping=True", None), trivial_pinged),
        (Op("ref: the same on raw asyncpg, one held connection", None), trivial_raw),
        (Op("ref: 10 x SELECT 1 in one db.transaction()", counter), ten_selects),
        (Op("ref: one-row INSERT in db.transaction() (commit flushes WAL)", counter), one_insert),
    ]
    create = Op("(b) create_run (run + 2 transitions + 1 delivery)", counter)
    bounce = Op("ref: record_attempt (bounced)", counter)
    advance = Op("(c) progress_run: advance on bounce (+2 transitions, next delivery)", counter)
    noop = Op("(d) progress_run: noop (wait_not_due)", counter)
    kinds: Counter[tuple[str, str | None]] = Counter()
    early = T0 + timedelta(days=100, hours=1)

    chunks = [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]
    for number, chunk in enumerate([min(20, runs), *chunks]):
        warmup = number == 0
        created: list[Run] = []

        async def create_one(created: list[Run] = created) -> None:
            created.append(await new_run(db, now=T0))

        async def progress(run_id: uuid.UUID, now: datetime) -> None:
            kinds.update([((p := await progress_run(db, run_id, now=now)).kind, p.reason)])

        measured = [(baseline, trivial), *refs, (create, create_one)]
        for op, call in measured:
            await (timed([call] * chunk) if warmup else op.measure([call] * chunk))
        delivery_ids = [await first_delivery(db, r.id) for r in created]
        for d in delivery_ids:
            await mark_dispatched(db, d, now=T0)
        bounces = [
            lambda d=d: record_attempt(db, d, SendResult("bounced", error="mailbox unknown"), now=T0)
            for d in delivery_ids
        ]
        advances = [lambda r=r: progress(r.id, T0 + timedelta(minutes=1)) for r in created]
        noops = [lambda i=i: progress(noop_runs[i % len(noop_runs)].id, early) for i in range(chunk)]
        for op, calls in ((bounce, bounces), (advance, advances), (noop, noops)):
            await (timed(calls) if warmup else op.measure(calls))
    assert kinds == {("advanced", None): runs + min(20, runs), ("noop", "wait_not_due"): runs + min(20, runs)}, kinds
    return [baseline.row(), *(op.row() for op, _ in refs), create.row(), bounce.row(), advance.row(), noop.row()]


async def contention(db: Database, base: Stats, *, rounds: int) -> None:
    """(f) 20 concurrent progress_run calls on one bounced run vs one call on another, interleaved."""
    pairs = await bounced_runs(db, 2 * rounds + 2, now=T0)
    single: list[float] = []
    batch_walls: list[float] = []
    callers: list[float] = []
    at = T0 + timedelta(minutes=1)

    async def caller(run_id: uuid.UUID) -> tuple[Progress, float]:
        began = time.perf_counter()
        progress = await progress_run(db, run_id, now=at)
        return progress, time.perf_counter() - began

    for i in range(rounds + 1):  # round 0 warms the pool up to 20 connections
        solo, contended = pairs[2 * i], pairs[2 * i + 1]
        progress, elapsed = await caller(solo.id)
        assert progress.kind == "advanced"
        began = time.perf_counter()
        results = await asyncio.gather(*(caller(contended.id) for _ in range(CALLERS)))
        wall = time.perf_counter() - began
        kinds = Counter((p.kind, p.reason) for p, _ in results)
        assert kinds == {("advanced", None): 1, ("noop", "no_progress_rules"): CALLERS - 1}, kinds
        if i > 0:
            single.append(elapsed)
            batch_walls.append(wall)
            callers.extend(elapsed for _, elapsed in results)

    print(f"\n## (f) Lock contention: {CALLERS} concurrent progress_run on one bounced run ({rounds} rounds)\n")
    rows = [
        Row("1 call (advance), interleaved with the batches", Stats(tuple(single))),
        Row(f"{CALLERS} calls: wall time of the batch", Stats(tuple(batch_walls))),
        Row(f"{CALLERS} calls: each caller's latency", Stats(tuple(callers))),
        Row(f"{CALLERS} calls: batch wall / {CALLERS}", Stats(tuple(w / CALLERS for w in batch_walls))),
    ]
    print(table(HEADERS[:-2], [line(r, base)[:-2] for r in rows]))
    print(
        f"\nbatch of {CALLERS} / 1 call (mean): {ratio(statistics.fmean(batch_walls), statistics.fmean(single))} "
        f"(1 advance + {CALLERS - 1} noops that queued on the run lock)"
    )


async def sweeps(target: Target, base: Stats, *, n: int, rounds: int, processes: bool) -> None:
    """(e) progress_due_runs over n due waiting runs: 1 sweeper vs 2.

    The n waiting runs are made once, in a template database; every sweep runs on its own copy (CREATE
    DATABASE ... TEMPLATE), so all of them start from identical tables. Rounds alternate the order of the
    configurations (ABC, CBA, ...) so that a change of machine load does not favour one of them.
    """
    configs = [
        SweepConfig("1 sweeper, in-process", 1, False),
        SweepConfig("2 sweepers, in-process (asyncio)", 2, False),
        SweepConfig("1 sweeper, in-process, limit=50 per call", 1, False, limit=50),
    ]
    if processes:
        configs += [SweepConfig("1 sweeper process", 1, True), SweepConfig("2 sweeper processes", 2, True)]
    walls: dict[SweepConfig, list[float]] = {config: [] for config in configs}
    shares_seen: dict[SweepConfig, list[str]] = {config: [] for config in configs}
    async with scratch_database(target.server_url) as template_url:
        template = await Database.connect(template_url)
        try:
            definition_id = (await register_definition(template, ESCALATION, now=T0)).id
            expected = sorted(str(r.id) for r in await waiting_runs(template, n, landed_at=T0))
        finally:
            await template.close()
        now = T0 + timedelta(hours=3)
        for number in range(rounds):
            for config in configs if number % 2 == 0 else configs[::-1]:
                async with scratch_database(target.server_url, template=database_name(template_url)) as url:
                    if config.in_processes:
                        wall, shares = await asyncio.to_thread(sweep_in_processes, url, definition_id, config, now=now)
                    else:
                        wall, shares = await sweep_in_process(url, definition_id, config, now=now)
                kinds = Counter(kind for share in shares for _, kind in share)
                assert kinds == {"advanced": n}, kinds
                swept = sorted(run_id for share in shares for run_id, _ in share)
                assert swept == expected, "a sweep missed or repeated a run"
                walls[config].append(wall)
                shares_seen[config].append("/".join(str(len(share)) for share in shares))

    print(f"\n## (e) progress_due_runs sweeping {n} due waiting runs ({rounds} rounds; each run: one advance)\n")
    lines = []
    for config in configs:
        wall = statistics.fmean(walls[config])
        one = next(c for c in configs if c.sweepers == 1 and c.in_processes == config.in_processes)
        lines.append(
            [
                config.label,
                str(n),
                f"{wall:.2f}",
                f"{n / wall:.0f}",
                ms(wall / n),
                ratio(wall / n, base.mean),
                " ".join(f"{n / w:.0f}" for w in walls[config]),
                " ".join(shares_seen[config]) if config.sweepers > 1 else "",
                f"{statistics.fmean(walls[one]) / wall:.2f}x",
            ]
        )
    headers = [
        "sweep",
        "runs",
        "mean wall s",
        "runs/s",
        "ms/run",
        "ms/run x base",
        "runs/s by round",
        "runs per sweeper",
        "speed-up vs 1",
    ]
    print(table(headers, lines))
    print("\n`speed-up vs 1`: mean wall of the first 1-sweeper row of the same kind (in-process or processes)")
    print("divided by this row's.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a superuser URL of a Postgres server (default: an embedded one)")
    parser.add_argument("--runs", type=int, default=500, help="calls per sequential operation (default 500)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the runs are split in (default 10)")
    parser.add_argument("--sweep-runs", type=int, default=600, help="due runs per sweep configuration (default 600)")
    parser.add_argument("--sweep-rounds", type=int, default=2, help="sweeps of each configuration (default 2)")
    parser.add_argument("--contention-rounds", type=int, default=30, help="runs hit by 20 callers (default 30)")
    parser.add_argument("--no-processes", action="store_true", help="skip the multi-process sweeps")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: --runs 100 --sweep-runs 100 --sweep-rounds 1 --contention-rounds 10",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.sweep_runs, args.sweep_rounds, args.contention_rounds = 100, 100, 1, 10
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
