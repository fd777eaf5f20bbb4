"""The due sweep (SPEC 4.9, issue 14 goal 2): `progress_due_runs` over N due waiting runs among M runs, set-based
in 1 and 2 processes, against the per-run sweep it replaced (one transaction per run) measured in the same run.

    .venv/bin/python -m bench.due_sweep [--database-url URL] [--runs N] [--total M] [--rounds R]
        [--batch-size B] [--old-runs N] [--layouts distinct,tied] [--profile]

Quick by default (1 000 due among 20 000); the issue's sizes: `--runs 10000 --total 1000000`.

The M runs are cloned in SQL from one run the engine made (created, its in-app delivery succeeded, waiting two
hours for its email step), each with its own ids, recipient, delivery, attempt and three transitions: N are
due, the others wait for a day far away. Two layouts: `distinct` (every due run its own due_at, a millisecond
apart) and `tied` (all N share one due_at). Every sweep runs on its own copy of the layout's template
database (CREATE DATABASE ... TEMPLATE), each sweeper in a process of its own, timed from a barrier once all
are connected and warm. The sweeps are checked: every due run advanced exactly once, nothing else touched.

`old`: the per-run sweep as it was before the set-based one (one `SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED`
keyset step and one progress_run decision per transaction), over the first `--old-runs` due runs.
The EXPLAIN of the batch lock query (first and a middle batch) is printed for each layout, and of the old one-run
step half way (bench/due_index.py compares the index of revision 0005 with 0006's on ties). `CPU us/run`: the
sweepers' own CPU time per run swept; `--profile` adds one profiled 1-process sweep (cProfile, the functions with
the most time of their own per run, and the garbage collector's collections).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gc
import multiprocessing
import multiprocessing.synchronize
import os
import pstats
import shlex
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import ClauseElement, bindparam, select, tuple_
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.compiler import SQLCompiler

from bench.common import (
    Target,
    bench_database,
    database_name,
    libpq_url,
    loadavg,
    machine_facts,
    scratch_database,
    table,
)
from tocsin.core.cursors import BEFORE_ALL
from tocsin.core.models import Progress, Run
from tocsin.db import Database, store
from tocsin.db import queries as q
from tocsin.db import tables as t
from tocsin.engine.deliveries import SendResult, mark_dispatched, record_attempt
from tocsin.engine.registry import register_definition
from tocsin.engine.runs import _progress_locked, create_run, progress_run
from tocsin.engine.sweep import SWEEP_BATCH, progress_due_runs
from tocsin.examples import example

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
WAIT = timedelta(hours=2)
NOW = T0 + WAIT + timedelta(hours=1)  # every due run is due by then
FAR = T0 + timedelta(days=3650)  # the other runs' due_at
ESCALATION = example("mention_escalation", key="bench_due_sweep")
R = t.workflow_runs

# The per-run sweep's step, as tocsin.db.queries had it: the next due run past the keyset, locked, one at a time.
OLD_NEXT_DUE_RUN = (
    select(R)
    .where(
        R.c.state == "waiting",
        R.c.due_at <= bindparam("due_by"),
        tuple_(R.c.due_at, R.c.id) > tuple_(bindparam("after_due_at"), bindparam("after_id")),
    )
    .order_by(R.c.due_at, R.c.id)
    .limit(1)
    .with_for_update(skip_locked=True)
)


async def old_sweep(db: Database, *, now: datetime, limit: int) -> list[Progress]:
    """progress_due_runs as it was: one transaction per run, the run's decision made by progress_run's code."""
    results: list[Progress] = []
    after = BEFORE_ALL
    while len(results) < limit:
        async with db.transaction() as conn:
            run = await store.fetch_first(
                conn, Run, OLD_NEXT_DUE_RUN, due_by=now, after_due_at=after[0], after_id=after[1]
            )
            if run is None or run.due_at is None:
                break
            after = (run.due_at, run.id)
            results.append(await _progress_locked(db, conn, run, now=now))
    return results


# --- the runs --------------------------------------------------------------------------------------------------

CLONE = [
    # One row per run to make: its ids, recipient and due_at (the first `due` are due, the others far away).
    """CREATE UNLOGGED TABLE public.bench_ids AS
       SELECT n, gen_random_uuid() AS run_id, gen_random_uuid() AS delivery_id,
              CASE WHEN n <= $2 THEN $3::timestamptz + n * interval '1 millisecond'
                   ELSE $4::timestamptz + n * interval '1 millisecond' END AS due_at
       FROM generate_series(1, $1::int) AS n""",
    """INSERT INTO tocsin.workflow_runs (id, tenant_id, definition_id, workflow_key, workflow_version, recipient, data,
              idempotency_key, state, current_step, step_activation, step_activated_at, status_reason,
              status_context, due_at, pending_signals, terminal_reason, throttle_key, workflow_started, started_at,
              last_transition_at, created_at, updated_at)
       SELECT i.run_id, r.tenant_id, r.definition_id, r.workflow_key, r.workflow_version, 'user:' || i.n, r.data,
              'bench-' || i.n, r.state, r.current_step, r.step_activation, r.step_activated_at, r.status_reason,
              r.status_context || jsonb_build_object('anchor_delivery_id', i.delivery_id::text, 'due_at', i.due_at),
              i.due_at, r.pending_signals, r.terminal_reason, r.throttle_key, true, r.started_at,
              r.last_transition_at, r.created_at, r.updated_at
       FROM public.bench_ids i, tocsin.workflow_runs r WHERE r.id = $1""",
    """INSERT INTO tocsin.deliveries (id, run_id, tenant_id, step_key, activation, channel, recipient, status,
              suppression_reason, content, attempt_count, terminal_at, provider_message_id, created_at, updated_at)
       SELECT i.delivery_id, i.run_id, d.tenant_id, d.step_key, d.activation, d.channel, 'user:' || i.n, d.status,
              d.suppression_reason, d.content, d.attempt_count, d.terminal_at, d.provider_message_id, d.created_at,
              d.updated_at
       FROM public.bench_ids i, tocsin.deliveries d WHERE d.run_id = $1""",
    """INSERT INTO tocsin.delivery_attempts (delivery_id, attempt_number, send_number, outcome, error_class, error,
              provider_message_id, provider_response, created_at)
       SELECT i.delivery_id, a.attempt_number, a.send_number, a.outcome, a.error_class, a.error,
              a.provider_message_id, a.provider_response, a.created_at
       FROM public.bench_ids i, tocsin.delivery_attempts a JOIN tocsin.deliveries d ON d.id = a.delivery_id
       WHERE d.run_id = $1""",
    """INSERT INTO tocsin.workflow_transitions (run_id, seq, step_key, delivery_id, from_state, to_state, reason,
              context, created_at)
       SELECT i.run_id, x.seq, x.step_key, CASE WHEN x.delivery_id IS NOT NULL THEN i.delivery_id END,
              x.from_state, x.to_state, x.reason,
              CASE WHEN x.context ? 'anchor_delivery_id'
                   THEN x.context || jsonb_build_object('anchor_delivery_id', i.delivery_id::text, 'due_at', i.due_at)
                   ELSE x.context END,
              x.created_at
       FROM public.bench_ids i, tocsin.workflow_transitions x WHERE x.run_id = $1 ORDER BY i.n, x.seq""",
]
CLONE_PARAMS = [("total", "due", "due_base", "far"), ("exemplar",), ("exemplar",), ("exemplar",), ("exemplar",)]


async def exemplar(db: Database) -> uuid.UUID:
    """One run made by the engine: its delivery succeeded at T0, it waits until T0 + 2 h."""
    run, _ = await create_run(
        db,
        tenant_id="bench",
        workflow_key=ESCALATION["key"],
        recipient="user:0",
        idempotency_key="bench-exemplar",
        data={"actor": "Ada", "excerpt": "see the draft"},
        now=T0,
    )
    async with db.transaction() as conn:
        delivery_id: uuid.UUID = (
            await conn.execute(select(t.deliveries.c.id).where(t.deliveries.c.run_id == run.id))
        ).scalar_one()
    await mark_dispatched(db, delivery_id, now=T0)
    await record_attempt(db, delivery_id, SendResult("succeeded"), now=T0)
    progress = await progress_run(db, run.id, now=T0)
    assert progress.kind == "waiting" and progress.run.due_at == T0 + WAIT, progress
    return run.id


async def build(url: str, *, total: int, due: int) -> None:
    """The `distinct` layout's runs: the exemplar (due last) and `total - 1` clones of it (the audit trail is
    append-only: the exemplar stays, one of the due runs)."""
    db = await Database.connect(url)
    try:
        await register_definition(db, ESCALATION, now=T0)
        run_id = await exemplar(db)
    finally:
        await db.close()
    conn = await asyncpg.connect(url)
    try:
        values = {"total": total - 1, "due": due - 1, "due_base": T0 + WAIT - timedelta(milliseconds=due), "far": FAR}
        values["exemplar"] = run_id
        async with conn.transaction():
            for sql, names in zip(CLONE, CLONE_PARAMS, strict=True):
                await conn.execute(sql, *(values[name] for name in names))
            await conn.execute("DROP TABLE public.bench_ids")
        await conn.execute("VACUUM (ANALYZE) ")
    finally:
        await conn.close()


async def tie(url: str) -> None:
    """The `tied` layout: every due run due at one moment."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE tocsin.workflow_runs SET due_at = $1 WHERE state = 'waiting' AND due_at <= $2", T0 + WAIT, NOW
        )
        await conn.execute("VACUUM (ANALYZE) tocsin.workflow_runs")
    finally:
        await conn.close()


@asynccontextmanager
async def copy_of(server_url: str, template: str) -> AsyncIterator[str]:
    """A copy of the template database; FILE_COPY (Postgres 15+) copies the files instead of WAL-logging them."""
    name = f"tocsin_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    try:
        major = int(str(await admin.fetchval("SHOW server_version_num"))) // 10000
        strategy = " STRATEGY FILE_COPY" if major >= 15 else ""
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
        yield libpq_url(server_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# --- the sweepers ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    label: str
    sweeper: str  # "old" or "new"
    processes: int


def _sweeper(
    url: str,
    sweeper: str,
    limit: int,
    batch_size: int,
    barrier: multiprocessing.synchronize.Barrier,
    out: Any,
    profile: bool = False,
) -> None:
    profiler = cProfile.Profile() if profile else None
    collections: dict[int, list[float]] = {}  # generation -> [collections, seconds]
    if profile:
        gc.callbacks.append(functools.partial(_count_collection, collections, [0.0]))

    async def main() -> None:
        db = await Database.connect(url, pool_size=2, max_overflow=0)
        try:
            async with db.transaction() as conn:  # warm: the definition parsed, a connection open
                definition_id: uuid.UUID = (await conn.execute(select(t.workflow_definitions.c.id))).scalar_one()
                await db.definition(definition_id, conn)
            barrier.wait()
            began, cpu = time.perf_counter(), time.process_time()
            with profiler or contextlib.nullcontext():
                if sweeper == "old":
                    done = await old_sweep(db, now=NOW, limit=limit)
                else:
                    done = await progress_due_runs(db, now=NOW, limit=limit, batch_size=batch_size)
            ended, cpu = time.perf_counter(), time.process_time() - cpu
        finally:
            await db.close()
        shown = _profile_text(profiler, collections, len(done)) if profiler is not None else ""
        out.put((began, ended, cpu, [(str(p.run.id), p.kind) for p in done], shown))

    asyncio.run(main())


def _count_collection(
    collections: dict[int, list[float]], began: list[float], phase: str, info: dict[str, Any]
) -> None:
    if phase == "start":
        began[0] = time.perf_counter()
    else:
        counted = collections.setdefault(info["generation"], [0, 0.0])
        counted[0] += 1
        counted[1] += time.perf_counter() - began[0]


def _profile_text(profiler: cProfile.Profile, collections: dict[int, list[float]], runs: int) -> str:
    """The functions with the most time of their own, in us per run swept (cProfile's overhead included), and
    the cyclic garbage collector's work (gc.callbacks)."""
    stats = pstats.Stats(profiler)
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    lines = []
    for (filename, line, name), (_, calls, own, cumulative, _) in entries[:PROFILE_TOP]:
        where = f"{os.path.relpath(filename) if filename.startswith('/') else filename}:{line}({name})"
        lines.append(
            f"    {own / runs * 1e6:7.1f} us/run own {cumulative / runs * 1e6:7.1f} cumulative {calls / runs:6.1f} "
            f"calls/run  {where}"
        )
    gcs = ", ".join(f"gen{g} {n:.0f}x {s * 1e3:.0f} ms" for g, (n, s) in sorted(collections.items())) or "none"
    lines.append(f"    gc collections during the sweep: {gcs}")
    return "\n".join(lines)


PROFILE_TOP = 25


def sweep(
    url: str, config: Config, *, limit: int, batch_size: int, profile: bool = False
) -> tuple[float, float, list[list[tuple[str, str]]], str]:
    """Wall time from the barrier to the last sweeper's end, the sweepers' CPU time in all, what each swept,
    and the profile of the first (with `profile`)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(config.processes)
    out = ctx.Queue()
    # Each process sweeps until nothing is due (or its limit): its share of the runs.
    args = (url, config.sweeper, limit, batch_size, barrier, out, profile)
    procs = [ctx.Process(target=_sweeper, args=args) for _ in range(config.processes)]
    for p in procs:
        p.start()
    reports = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    # perf_counter is CLOCK_MONOTONIC on Linux: comparable across processes.
    wall = max(r[1] for r in reports) - min(r[0] for r in reports)
    return wall, sum(r[2] for r in reports), [r[3] for r in reports], reports[0][4]


async def check(url: str, swept: Sequence[str], *, expected: int) -> None:
    """Every swept run advanced once: one reactivation, one email delivery; no other run changed."""
    conn = await asyncpg.connect(url)
    try:
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM tocsin.workflow_transitions WHERE reason = 'reactivated_from_wait') AS woke,
                      (SELECT count(DISTINCT run_id) FROM tocsin.workflow_transitions
                        WHERE reason = 'reactivated_from_wait') AS runs,
                      (SELECT count(*) FROM tocsin.deliveries WHERE activation = 2) AS planned,
                      (SELECT count(*) FROM tocsin.workflow_runs WHERE state = 'active') AS active"""
        )
    finally:
        await conn.close()
    assert len(swept) == len(set(swept)) == expected, (len(swept), len(set(swept)), expected)
    assert tuple(counts.values()) == (expected,) * 4, (dict(counts), expected)


# --- EXPLAIN ---------------------------------------------------------------------------------------------------


def _sql(statement: ClauseElement, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """The statement as asyncpg gets it ($n placeholders) and its arguments in order."""
    compiled = statement.compile(dialect=postgresql.asyncpg.dialect())  # type: ignore[no-untyped-call]
    assert isinstance(compiled, SQLCompiler)
    values = compiled.construct_params(params)
    return compiled.string, [values[name] for name in compiled.positiontup or ()]


async def explain(url: str, statement: ClauseElement, params: dict[str, Any]) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement, in a transaction rolled back (it locks what it reads)."""
    sql, args = _sql(statement, params)
    conn = await asyncpg.connect(url)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) {sql}", *args)
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    return "\n".join(f"    {row[0]}" for row in rows)


async def middle_of(url: str) -> tuple[datetime, uuid.UUID]:
    """The keyset position half way through the due runs: where a middle batch starts."""
    conn = await asyncpg.connect(url)
    try:
        due = await conn.fetchval(
            "SELECT count(*) FROM tocsin.workflow_runs WHERE state = 'waiting' AND due_at <= $1", NOW
        )
        row = await conn.fetchrow(
            "SELECT due_at, id FROM tocsin.workflow_runs WHERE state = 'waiting' AND due_at <= $1 "
            "ORDER BY due_at, id OFFSET $2 LIMIT 1",
            NOW,
            due // 2,
        )
    finally:
        await conn.close()
    return row["due_at"], row["id"]


async def explains(url: str, layout: str, batch_size: int) -> None:
    after = await middle_of(url)
    batch = {"due_by": NOW, "batch": batch_size}
    shown = [
        (
            "the batch lock, first batch",
            q.DUE_RUNS_FOR_UPDATE,
            {**batch, "after_due_at": BEFORE_ALL[0], "after_id": BEFORE_ALL[1]},
        ),
        (
            "the batch lock, a batch half way",
            q.DUE_RUNS_FOR_UPDATE,
            {**batch, "after_due_at": after[0], "after_id": after[1]},
        ),
        (
            "the old one-run step, half way",
            OLD_NEXT_DUE_RUN,
            {"due_by": NOW, "after_due_at": after[0], "after_id": after[1]},
        ),
    ]
    for label, statement, params in shown:
        print(f"\nEXPLAIN ({layout}) {label}:\n")
        print(await explain(url, statement, params))


# --- the benchmark ---------------------------------------------------------------------------------------------

CONFIGS = [
    Config("old per-run sweep, 1 process", "old", 1),
    Config("set-based, 1 process", "new", 1),
    Config("set-based, 2 processes", "new", 2),
]


async def run(args: argparse.Namespace) -> None:
    async with bench_database(args.database_url) as target:
        print(f"# due_sweep: {machine_facts(target)}")
        print(f"# command: {shlex.join(['.venv/bin/python', '-m', 'bench.due_sweep', *sys.argv[1:]])}")
        print(
            f"# runs={args.runs} due among total={args.total}; rounds={args.rounds}; batch_size={args.batch_size}; "
            f"old sweep over {args.old_runs}; layouts={','.join(args.layouts)}"
        )
        await body(target, args)
        print(f"\n# load average at the end: {loadavg()}")


async def body(target: Target, args: argparse.Namespace) -> None:
    walls: dict[tuple[str, Config], list[float]] = {}
    shares: dict[tuple[str, Config], list[str]] = {}
    cpus: dict[tuple[str, Config], list[float]] = {}  # the sweepers' CPU seconds per run
    async with scratch_database(target.server_url) as distinct_url:
        began = time.perf_counter()
        await build(distinct_url, total=args.total, due=args.runs)
        print(f"# built {args.total} runs in {time.perf_counter() - began:.0f} s")
        templates = {"distinct": distinct_url}
        async with copy_of(target.server_url, _name(distinct_url)) as tied_url:
            await tie(tied_url)
            templates["tied"] = tied_url
            for layout in args.layouts:
                await explains(templates[layout], layout, args.batch_size)
            for number in range(args.rounds):
                for layout in args.layouts:
                    for config in CONFIGS if number % 2 == 0 else CONFIGS[::-1]:
                        limit = args.old_runs if config.sweeper == "old" else args.runs
                        async with copy_of(target.server_url, _name(templates[layout])) as url:
                            wall, cpu, done, _ = await asyncio.to_thread(
                                sweep, url, config, limit=limit, batch_size=args.batch_size
                            )
                            swept = [run_id for share in done for run_id, _ in share]
                            assert Counter(kind for share in done for _, kind in share) == {"advanced": limit}
                            await check(url, swept, expected=limit)
                        walls.setdefault((layout, config), []).append(limit / wall)
                        shares.setdefault((layout, config), []).append("/".join(str(len(s)) for s in done))
                        cpus.setdefault((layout, config), []).append(cpu / limit)
            if args.profile:
                await profile(templates[args.layouts[0]], target.server_url, args)
    report(walls, shares, cpus, args)


async def profile(template_url: str, server_url: str, args: argparse.Namespace) -> None:
    """One more set-based sweep in 1 process, under cProfile, on a fresh copy of the first layout."""
    async with copy_of(server_url, _name(template_url)) as url:
        config = Config("set-based, 1 process, profiled", "new", 1)
        wall, cpu, done, shown = await asyncio.to_thread(
            sweep, url, config, limit=args.runs, batch_size=args.batch_size, profile=True
        )
        assert Counter(kind for share in done for _, kind in share) == {"advanced": args.runs}
    print(
        f"\nProfile ({args.layouts[0]}) of progress_due_runs, 1 process, {args.runs} runs: "
        f"{args.runs / wall:.0f} runs/s and {cpu / args.runs * 1e6:.0f} us of CPU per run with the profiler on; "
        f"the top {PROFILE_TOP} by own time:\n"
    )
    print(shown)


def _name(url: str) -> str:
    return database_name(url)


def report(
    rates: dict[tuple[str, Config], list[float]],
    shares: dict[tuple[str, Config], list[str]],
    cpus: dict[tuple[str, Config], list[float]],
    args: Any,
) -> None:
    print(f"\n## progress_due_runs: {args.runs} due among {args.total} runs, runs/s (mean of {args.rounds} rounds)\n")
    lines = []
    summary = []
    for layout in args.layouts:
        old = statistics.fmean(rates[(layout, CONFIGS[0])])
        one = statistics.fmean(rates[(layout, CONFIGS[1])])
        for config in CONFIGS:
            rate = statistics.fmean(rates[(layout, config)])
            lines.append(
                [
                    layout,
                    config.label,
                    str(args.old_runs if config.sweeper == "old" else args.runs),
                    f"{rate:.0f}",
                    " ".join(f"{r:.0f}" for r in rates[(layout, config)]),
                    " ".join(shares[(layout, config)]) if config.processes > 1 else "",
                    f"{statistics.fmean(cpus[(layout, config)]) * 1e6:.0f}",
                    f"{rate / old:.1f}x",
                    f"{rate / one:.2f}x" if config.sweeper == "new" else "",
                ]
            )
        two = statistics.fmean(rates[(layout, CONFIGS[2])])
        summary.append(
            f"{layout}: {one:.0f} runs/s in 1 process, {two:.0f} in 2 ({two / one:.2f}x), "
            f"{one / old:.1f}x the per-run sweep"
        )
    headers = ["due_at", "sweep", "runs", "runs/s", "runs/s by round", "runs per process", "CPU us/run"]
    headers += ["x old", "x 1 process"]
    print(table(headers, lines))
    print(f"\ndue_sweep summary: {'; '.join(summary)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a superuser URL of a Postgres server (default: an embedded one)")
    parser.add_argument("--runs", type=int, default=1000, help="due runs (default 1000)")
    parser.add_argument(
        "--total", type=int, default=20_000, help="runs in the table, the due ones included (default 20000)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="sweeps of each configuration and layout (default 1)")
    parser.add_argument(
        "--batch-size", type=int, default=SWEEP_BATCH, help=f"runs per transaction (default {SWEEP_BATCH})"
    )
    parser.add_argument("--old-runs", type=int, help="due runs the old per-run sweep takes (default: --runs)")
    parser.add_argument("--layouts", default="distinct,tied", help="distinct, tied or both (default both)")
    parser.add_argument(
        "--profile", action="store_true", help="then profile one more 1-process sweep of the first layout (cProfile)"
    )
    args = parser.parse_args(argv)
    args.old_runs = min(args.old_runs or args.runs, args.runs)
    args.layouts = [layout.strip() for layout in args.layouts.split(",") if layout.strip()]
    if not set(args.layouts) <= {"distinct", "tied"} or not args.layouts or args.runs > args.total:
        parser.error("--layouts takes distinct and/or tied; --runs must not exceed --total")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
