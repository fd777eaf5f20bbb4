"""Whether a decision costs more as the tables grow: the engine_floor operations at 1k, 10k, 100k (and 1M) runs.

    .venv/bin/python -m bench.growth [--database-url URL] [--sizes 1000,10000,100000] [--ops N] [--full]

The tables are filled up to each size in turn with finished runs as the engine leaves them (a run, its
delivery, its attempt, two transitions; `INSERT ... SELECT generate_series`, then VACUUM ANALYZE); at each
size, the four operations of `bench.engine_floor` (an advance, a wait entry, a timed advance, create_run)
run `--ops` times each, one caller, tocsin and its raw-asyncpg floor (the same captured statements)
interleaved in two rounds. The summary: each operation's time at the largest size / at the smallest, for
tocsin and for the floor (1.0 is flat). `--full` adds 1 000 000 runs (about 5 million rows in all).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import time
import uuid
from collections import defaultdict

import asyncpg

from bench.common import bench_database, loadavg, machine_facts, table
from bench.engine_floor import (
    ESCALATION,
    OPERATIONS,
    T0,
    Capture,
    FloorConnection,
    Instance,
    Operation,
    Replay,
    Statement,
    batch,
    floor_connection,
    prepare,
)
from tocsin.db import Database
from tocsin.engine.registry import register_definition

BATCH = 100_000  # rows per INSERT statement while filling

# Finished runs as the engine leaves them: the run, its succeeded delivery and attempt, two transitions.
FILL = """
WITH runs AS (
    INSERT INTO tocsin.workflow_runs (id, tenant_id, definition_id, workflow_key, workflow_version, recipient, data,
        idempotency_key, state, current_step, step_activation, step_activated_at, status_reason, status_context,
        terminal_reason, workflow_started, started_at, last_transition_at, created_at, updated_at)
    SELECT gen_random_uuid(), 'filler', $1, $2, 1, 'user:' || i, '{}', 'fill-' || $3 || '-' || i, 'completed',
        'email', 1, $4, 'workflow_completed', '{}', NULL, true, $4, $4, $4, $4
    FROM generate_series(1, $5) AS i
    RETURNING id, recipient
), deliveries AS (
    INSERT INTO tocsin.deliveries (id, run_id, tenant_id, step_key, activation, channel, recipient, status, content,
        attempt_count, terminal_at, created_at, updated_at)
    SELECT gen_random_uuid(), id, 'filler', 'email', 1, 'email', recipient, 'succeeded', '{}', 1, $4, $4, $4
    FROM runs
    RETURNING id, run_id
), transitions AS (
    INSERT INTO tocsin.workflow_transitions (run_id, seq, step_key, delivery_id, from_state, to_state, reason, context,
        created_at)
    SELECT run_id, 1, NULL, NULL::uuid, NULL, 'active', 'workflow_started', '{}'::jsonb, $4 FROM deliveries
    UNION ALL
    SELECT run_id, 2, 'email', id, 'active', 'completed', 'workflow_completed', '{}'::jsonb, $4 FROM deliveries
)
INSERT INTO tocsin.delivery_attempts (delivery_id, attempt_number, send_number, outcome, provider_response,
    created_at)
SELECT id, 1, 1, 'succeeded', '{}', $4 FROM deliveries
"""


async def fill(conn: asyncpg.Connection, definition_id: uuid.UUID, count: int, label: str) -> float:
    began = time.perf_counter()
    done = 0
    while done < count:
        rows = min(BATCH, count - done)
        await conn.execute(FILL, definition_id, ESCALATION["key"], f"{label}-{done}", T0, rows)
        done += rows
    await conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - began


async def run(args: argparse.Namespace) -> None:
    async with bench_database(args.database_url) as target:
        print(f"# growth: {machine_facts(target)}")
        print(f"# command: {shlex.join(['.venv/bin/python', '-m', 'bench.growth', *sys.argv[1:]])}")
        print(f"# sizes={args.sizes} runs, ops={args.ops} per operation, side and round, 2 rounds, 1 caller")
        db = await Database.connect(target.url, pool_size=2, max_overflow=0)
        admin = await asyncpg.connect(target.url)
        floor = FloorConnection(await floor_connection(target.url))
        try:
            definition_id = (await register_definition(db, ESCALATION, now=T0)).id
            capture = Capture(db)
            replays = {}
            keep = frozenset({str(definition_id)})
            for key, operation in OPERATIONS.items():
                template = await operation.prepare(db)
                replays[key] = Replay(await capture.of(operation.call(db, template)), template, keep)
            per_op: dict[tuple[int, str, str], list[float]] = defaultdict(list)
            for size in args.sizes:
                have = await admin.fetchval("SELECT count(*) FROM tocsin.workflow_runs")
                took = await fill(admin, definition_id, size - have, str(size)) if size > have else 0.0
                print(
                    f"filled to {size:,} runs in {took:.1f} s (the measurement adds {6 * len(OPERATIONS) * args.ops:,})"
                )
                for number in range(3):  # round 0 warms the caches of this size
                    for key, operation in OPERATIONS.items():
                        mine = await prepare(db, operation, args.ops)
                        theirs = [replays[key].for_instance(i)[0] for i in await prepare(db, operation, args.ops)]

                        async def tocsin_call(_w: int, instance: Instance, operation: Operation = operation) -> None:
                            await operation.call(db, instance)

                        async def floor_call(_w: int, statements: list[Statement]) -> None:
                            await floor.replay(statements)

                        sides = [("tocsin", tocsin_call, mine), ("floor", floor_call, theirs)]
                        for side, call, items in sides if number % 2 else sides[::-1]:
                            wall, _ = await batch(1, items, call)
                            if number > 0:
                                per_op[(size, key, side)].append(wall / len(items))
        finally:
            await floor.conn.close()
            await admin.close()
            await db.close()
        report(per_op, args)
        print(f"\n# load average at the end: {loadavg()}")
        print(summary(per_op, args))


def mean(per_op: dict[tuple[int, str, str], list[float]], size: int, key: str, side: str) -> float:
    return statistics.fmean(per_op[(size, key, side)])


def report(per_op: dict[tuple[int, str, str], list[float]], args: argparse.Namespace) -> None:
    smallest = args.sizes[0]
    headers = [
        "operation",
        "runs in the tables",
        "tocsin ms/op",
        "floor ms/op",
        "tocsin x smallest",
        "floor x smallest",
    ]
    lines = []
    for key, operation in OPERATIONS.items():
        for size in args.sizes:
            lines.append(
                [
                    operation.name,
                    f"{size:,}",
                    f"{mean(per_op, size, key, 'tocsin') * 1000:.2f}",
                    f"{mean(per_op, size, key, 'floor') * 1000:.2f}",
                    f"{mean(per_op, size, key, 'tocsin') / mean(per_op, smallest, key, 'tocsin'):.2f}",
                    f"{mean(per_op, size, key, 'floor') / mean(per_op, smallest, key, 'floor'):.2f}",
                ]
            )
    print("\n## One caller, at each table size\n")
    print(table(headers, lines))


def summary(per_op: dict[tuple[int, str, str], list[float]], args: argparse.Namespace) -> str:
    small, large = args.sizes[0], args.sizes[-1]
    parts = [
        f"{operation.name} {mean(per_op, large, key, 'tocsin') / mean(per_op, small, key, 'tocsin'):.2f}"
        f" (floor {mean(per_op, large, key, 'floor') / mean(per_op, small, key, 'floor'):.2f})"
        for key, operation in OPERATIONS.items()
    ]
    return f"growth: time per operation at {large:,} runs / at {small:,} (1.0 is flat): {', '.join(parts)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a superuser URL of a Postgres server (default: an embedded one)")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[1000, 10_000, 100_000],
        help="table sizes in runs, ascending (default 1000,10000,100000)",
    )
    parser.add_argument("--ops", type=int, default=60, help="calls per operation, side and round (default 60)")
    parser.add_argument("--full", action="store_true", help="--sizes 1000,10000,100000,1000000")
    args = parser.parse_args(argv)
    if args.full:
        args.sizes = [1000, 10_000, 100_000, 1_000_000]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
