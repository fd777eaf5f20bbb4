"""The due sweep's keyset lookup when many waiting runs share one `due_at`: the index of 0005 against 0006's.

    .venv/bin/python -m bench.due_index [--database-url URL] [--tied N] [--others N] [--lookups N] [--full]

`--tied` waiting runs (default 10 000) get one and the same `due_at`, beside `--others` finished runs
(default 100 000; `--full`: 1 000 000). The sweep's statement (`queries.DUE_RUNS_FOR_UPDATE` with a batch of 1,
the per-run sweep's `NEXT_DUE_RUN` as it was: the next waiting run past (after_due_at, after_id) in (due_at, id)
order, FOR UPDATE SKIP LOCKED, LIMIT 1) is then
- explained with EXPLAIN (ANALYZE, BUFFERS) at the start of the tie group and in its middle;
- run as a sweep runs it: once per run, each in its own transaction, each starting past the run before, timed
  over the first `--lookups` tied runs (default 1 000; `--full`: all of them).
First at revision 0005 (index `(state, due_at) WHERE state = 'waiting'`), then, on the same rows, after
`migrate()` to 0006 (`(due_at, id) WHERE state = 'waiting'`). The summary's ratio: lookups per second after /
before.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from bench.common import bench_database, loadavg, machine_facts
from tocsin.db import Database
from tocsin.db import queries as q
from tocsin.engine.registry import register_definition
from tocsin.examples import example

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DUE = T0 + timedelta(hours=2)
DEFINITION = example("mention_escalation", key="bench_due_index")
BEFORE_ALL = (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))

# Rows as the engine leaves them; only state, due_at and id matter to the statement.
INSERT_RUNS = """
INSERT INTO tocsin.workflow_runs (id, tenant_id, definition_id, workflow_key, workflow_version, recipient, data,
    idempotency_key, state, current_step, step_activation, step_activated_at, status_reason, status_context,
    due_at, pending_signals, workflow_started, started_at, last_transition_at, created_at, updated_at)
SELECT gen_random_uuid(), 'bench', $1, 'bench_due_index', 1, 'user:' || i, '{}', $2 || i, $3, 'in_app', 1, $4,
    $5, '{}', $6, '{}', true, $4, $4, $4, $4
FROM generate_series(1, $7) AS i
"""


def next_due_sql() -> tuple[str, list[tuple[str, Any]]]:
    """The statement as tocsin sends it, and its parameters in order (with the values written in it)."""
    compiled = q.DUE_RUNS_FOR_UPDATE.compile(dialect=asyncpg_dialect())
    values = compiled.construct_params(_check=False)
    return compiled.string, [(name, values.get(name)) for name in compiled.positiontup or ()]


async def fill(conn: asyncpg.Connection, definition_id: uuid.UUID, *, tied: int, others: int) -> None:
    if others:
        await conn.execute(INSERT_RUNS, definition_id, "done-", "completed", T0, "workflow_completed", None, others)
    await conn.execute(INSERT_RUNS, definition_id, "tied-", "waiting", T0, "waiting_for_step_progression", DUE, tied)
    await conn.execute("VACUUM ANALYZE tocsin.workflow_runs")


async def explain(conn: asyncpg.Connection, sql: str, args: list[Any]) -> str:
    async with conn.transaction():
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    return "\n".join(row[0] for row in rows)


def arguments(names: list[tuple[str, Any]], after: tuple[datetime, uuid.UUID]) -> list[Any]:
    given = {"due_by": DUE, "after_due_at": after[0], "after_id": after[1], "batch": 1}
    return [given.get(name, written) for name, written in names]


async def sweep_lookups(conn: asyncpg.Connection, sql: str, names: list[tuple[str, Any]], lookups: int) -> float:
    """Seconds to take `lookups` tied runs in order, one lookup and one transaction each, as progress_due_runs
    does (a run taken is left waiting: each lookup starts past the one before, not past a changed row)."""
    statement = await conn.prepare(sql)
    after = BEFORE_ALL
    began = time.perf_counter()
    for _ in range(lookups):
        async with conn.transaction():
            row = await statement.fetchrow(*arguments(names, after))
        assert row is not None
        after = (row["due_at"], row["id"])
    return time.perf_counter() - began


async def measure(conn: asyncpg.Connection, label: str, tied: int, lookups: int) -> float:
    sql, names = next_due_sql()
    index = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'tocsin' AND indexname = 'workflow_runs_waiting_due'"
    )
    middle = await conn.fetchval(
        "SELECT id FROM tocsin.workflow_runs WHERE state = 'waiting' ORDER BY id OFFSET $1 LIMIT 1", tied // 2
    )
    print(f"\n## {label}\n\n`{index}`\n")
    for where, after in (("at the start of the tie group", BEFORE_ALL), ("in its middle", (DUE, middle))):
        print(
            f"EXPLAIN (ANALYZE, BUFFERS), {where}:\n\n```\n{await explain(conn, sql, arguments(names, after))}\n```\n"
        )
    elapsed = await sweep_lookups(conn, sql, names, lookups)
    print(
        f"sweep: the first {lookups} of the {tied} tied runs, one lookup and one transaction each, in {elapsed:.2f} s:"
        f" {lookups / elapsed:.0f} lookups/s, {elapsed / lookups * 1000:.3f} ms each"
    )
    return lookups / elapsed


async def run(args: argparse.Namespace) -> None:
    async with bench_database(args.database_url) as target:
        print(f"# due_index: {machine_facts(target)}")
        print(f"# command: {shlex.join(['.venv/bin/python', '-m', 'bench.due_index', *sys.argv[1:]])}")
        print(
            f"# tied={args.tied} waiting runs sharing one due_at, others={args.others} finished runs, "
            f"lookups={args.lookups}"
        )
        db = await Database.connect(target.url)
        try:
            definition_id = (await register_definition(db, DEFINITION, now=T0)).id
            await db.downgrade("0005")
            conn = await asyncpg.connect(target.url)
            try:
                await fill(conn, definition_id, tied=args.tied, others=args.others)
                before = await measure(conn, "Before: revision 0005", args.tied, args.lookups)
                began = time.perf_counter()
                await db.migrate()
                built = time.perf_counter() - began
                await conn.execute("ANALYZE tocsin.workflow_runs")
                print(f"\n(migrate() to 0006, which rebuilds the index: {built:.2f} s)")
                after = await measure(conn, "After: revision 0006", args.tied, args.lookups)
            finally:
                await conn.close()
        finally:
            await db.close()
        print(f"\n# load average at the end: {loadavg()}")
        print(
            f"due_index: {args.tied} runs sharing one due_at (beside {args.others}), {args.lookups} lookups: "
            f"{before:.0f}/s with (state, due_at), {after:.0f}/s with (due_at, id): ratio {after / before:.1f}x"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a superuser URL of a Postgres server (default: an embedded one)")
    parser.add_argument("--tied", type=int, default=10_000, help="waiting runs sharing one due_at (default 10 000)")
    parser.add_argument("--others", type=int, default=100_000, help="finished runs beside them (default 100 000)")
    parser.add_argument("--lookups", type=int, default=1000, help="sweep lookups timed (default 1 000)")
    parser.add_argument("--full", action="store_true", help="--others 1000000 --lookups <all the tied runs>")
    args = parser.parse_args(argv)
    if args.full:
        args.others, args.lookups = 1_000_000, args.tied
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
