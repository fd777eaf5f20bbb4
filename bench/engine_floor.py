"""tocsin's decisions against their floor: raw asyncpg replaying exactly the statements each one sends.

    .venv/bin/python -m bench.engine_floor [--database-url URL] [--ops N] [--rounds R] [--callers 1,4,16]
        [--full] [--show-sql] [--profile N [--profile-op OP]]

Four operations: an advance on a bounce (`progress_run`), a wait entry (`progress_run` after the in-app
message landed), a timed advance (`progress_run` on a due wait) and `create_run`. One call of each is made
with a `before_cursor_execute` listener that records what tocsin sends the driver: every statement's text
and parameters, in order. The floor replays exactly those statements on raw asyncpg: each prepared once per
connection, one transaction per operation, with the json/jsonb codecs SQLAlchemy's dialect installs, on an
instance of its own (a run prepared the same way as tocsin's: its ids stand in for the captured run's, and
the ids the call generated, a new run's or delivery's, are fresh ones). Parameters are substituted before the
clock starts, so the floor's time is the driver's and Postgres'.

Both sides run with 1, 4 and 16 concurrent callers (each on a connection of its own: the floor holds one per
caller, tocsin's pool has as many), in rounds that interleave the operations and the two sides (tocsin first
in even rounds, the floor first in odd ones). Time per operation = the batch's wall time / its operations.
`ratio` = floor time / tocsin time: 1.0 would mean tocsin adds nothing to its SQL. After the rounds, the rows
of every floor instance are compared with tocsin's (state, step, activation, reasons, transitions, deliveries).
Each measured round starts with an ANALYZE of the database (what autovacuum does on a live server), so that
both sides' prepared statements are planned with the statistics of tables that have rows.

`--profile N`: cProfile of N sequential calls of one operation (default the advance), by package and by
function, instead of the rounds.

Without --database-url an embedded Postgres is started in a temporary directory and deleted afterwards;
with one, a database `tocsin_bench_*` is created on that server, migrated, and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import re
import shlex
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import event

from bench.common import bench_database, loadavg, machine_facts, table
from tocsin.core.models import Run
from tocsin.db import Database
from tocsin.db.store import listen_statements
from tocsin.engine.deliveries import SendKind, SendResult, mark_dispatched, record_attempt
from tocsin.engine.reads import get_run
from tocsin.engine.registry import register_definition
from tocsin.engine.runs import create_run, progress_run
from tocsin.examples import example

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ADVANCE_AT = T0 + timedelta(minutes=1)
DUE_AT = T0 + timedelta(hours=3)  # past the example's two-hour wait
TENANT = "bench"
DATA = {"actor": "Ada", "excerpt": "see the draft"}
# SPEC 3's example: in_app, then email on a bounce, or two hours after it landed (unless read).
ESCALATION = example("mention_escalation", key="bench_floor_escalation")
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
QUICK = {"ops": 64, "rounds": 2}
FULL = {"ops": 256, "rounds": 4}


# --- instances: a run prepared for one operation ------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """What one call works on: a prepared run and its first delivery (none for create_run)."""

    run: Run | None = None
    delivery_id: uuid.UUID | None = None

    def identifiers(self) -> list[str]:
        """The ids of this instance that its statements carry, in a fixed order (see `Replay`)."""
        if self.run is None:
            return []
        return [
            str(self.run.id),
            *UUID_PATTERN.findall(self.run.recipient),
            *UUID_PATTERN.findall(self.run.idempotency_key),
            str(self.delivery_id),
        ]


async def start(db: Database) -> Run:
    run, created = await create_run(
        db,
        tenant_id=TENANT,
        workflow_key=ESCALATION["key"],
        recipient=f"user:{uuid.uuid4()}",
        idempotency_key=str(uuid.uuid4()),
        data=DATA,
        now=T0,
    )
    assert created
    return run


async def landed(db: Database, kind: SendKind) -> Instance:
    """A run whose in-app message was sent and came back `kind`."""
    run = await start(db)
    (delivery,) = (await get_run(db, run.id, tenant_id=TENANT)).deliveries
    await mark_dispatched(db, delivery.id, now=T0)
    result = SendResult(kind, error="mailbox unknown" if kind == "bounced" else None)
    await record_attempt(db, delivery.id, result, now=T0)
    return Instance(run, delivery.id)


async def bounced(db: Database) -> Instance:
    return await landed(db, "bounced")


async def succeeded(db: Database) -> Instance:
    return await landed(db, "succeeded")


async def waiting(db: Database) -> Instance:
    instance = await landed(db, "succeeded")
    assert instance.run is not None
    progress = await progress_run(db, instance.run.id, now=T0)
    assert progress.kind == "waiting", progress
    return Instance(progress.run, instance.delivery_id)


async def nothing(db: Database) -> Instance:
    return Instance()


# Each call returns what it decided (a Progress kind, or "created") and the run it wrote.
async def advance(db: Database, instance: Instance) -> tuple[str, uuid.UUID]:
    assert instance.run is not None
    progress = await progress_run(db, instance.run.id, now=ADVANCE_AT)
    return progress.kind, progress.run.id


async def due(db: Database, instance: Instance) -> tuple[str, uuid.UUID]:
    assert instance.run is not None
    progress = await progress_run(db, instance.run.id, now=DUE_AT)
    return progress.kind, progress.run.id


async def create(db: Database, instance: Instance) -> tuple[str, uuid.UUID]:
    return "created", (await start(db)).id


@dataclass(frozen=True)
class Operation:
    name: str
    prepare: Callable[[Database], Awaitable[Instance]]
    call: Callable[[Database, Instance], Awaitable[tuple[str, uuid.UUID]]]
    result: str  # what every call must return (a Progress kind)


OPERATIONS = {
    "advance": Operation("advance", bounced, advance, "advanced"),
    "wait_entry": Operation("wait entry", succeeded, advance, "waiting"),
    "timed_advance": Operation("timed advance", waiting, due, "advanced"),
    "create_run": Operation("create_run", nothing, create, "created"),
}


async def prepare(db: Database, operation: Operation, count: int) -> list[Instance]:
    gate = asyncio.Semaphore(8)

    async def one() -> Instance:
        async with gate:
            return await operation.prepare(db)

    return list(await asyncio.gather(*(one() for _ in range(count))))


# --- capture and replay --------------------------------------------------------------------------------------


Statement = tuple[str, tuple[Any, ...]]


class Capture:
    """Records the statements (text, parameters) the Database hands the driver while `active`."""

    def __init__(self, db: Database) -> None:
        self.active = False
        self.statements: list[Statement] = []
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._sent)
        listen_statements(db.engine, self._record)  # the statements tocsin.db.store hands asyncpg itself

    def _sent(self, _conn: object, _cursor: object, statement: str, parameters: Any, *_: object) -> None:
        self._record(statement, parameters)

    def _record(self, statement: str, parameters: Sequence[Any] | None) -> None:
        if self.active:
            self.statements.append((statement, tuple(parameters or ())))

    async def of(self, call: Awaitable[object]) -> list[Statement]:
        self.statements, self.active = [], True
        try:
            await call
        finally:
            self.active = False
        return self.statements


@dataclass
class Replay:
    """The captured statements of one call, re-targeted at other instances.

    Every UUID in the parameters (a UUID value, or inside a string: a recipient, an idempotency key, a jsonb
    context) is one of: the definition's (kept), the captured instance's (replaced by the target instance's
    own, position by position), or one the call generated (replaced by a new one per replay).
    """

    statements: list[Statement]
    template: Instance
    keep: frozenset[str]

    def for_instance(self, instance: Instance) -> tuple[list[Statement], dict[str, str]]:
        mapping = {k: k for k in self.keep}
        mapping.update(zip(self.template.identifiers(), instance.identifiers(), strict=True))

        def swap(match: re.Match[str] | str) -> str:
            text = match if isinstance(match, str) else match.group()
            return mapping.setdefault(text, str(uuid.uuid4()))

        def value(v: Any) -> Any:
            if isinstance(v, uuid.UUID):
                return uuid.UUID(swap(str(v)))
            if isinstance(v, str):
                return UUID_PATTERN.sub(swap, v)
            if isinstance(v, list):
                return [value(x) for x in v]
            return v

        return [(sql, tuple(value(p) for p in params)) for sql, params in self.statements], mapping

    def run_id(self, instance: Instance, mapping: dict[str, str]) -> uuid.UUID:
        """The run a replay wrote: the instance's, or (create_run) the new id that stood in for the captured one."""
        if instance.run is not None:
            return instance.run.id
        inserted = next(
            p for sql, params in self.statements if "INSERT INTO tocsin.workflow_runs" in sql for p in params
        )
        return uuid.UUID(mapping[str(inserted)])


async def floor_connection(url: str) -> asyncpg.Connection:
    """A raw asyncpg connection with the json/jsonb codecs SQLAlchemy's asyncpg dialect installs on its own."""
    conn = await asyncpg.connect(url)
    await conn.set_type_codec(
        "json", encoder=str.encode, decoder=lambda b: json.loads(b.decode()), schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda s: b"\x01" + s.encode(),
        decoder=lambda b: json.loads(b[1:].decode()),
        schema="pg_catalog",
        format="binary",
    )
    return conn


@dataclass
class FloorConnection:
    conn: asyncpg.Connection
    prepared: dict[str, Any] = field(default_factory=dict)

    async def replay(self, statements: list[Statement]) -> None:
        async with self.conn.transaction():
            for sql, params in statements:
                prepared = self.prepared.get(sql)
                if prepared is None:
                    prepared = self.prepared[sql] = await self.conn.prepare(sql)
                await prepared.fetch(*params)


# --- measuring -------------------------------------------------------------------------------------------------


async def batch(
    callers: int, items: Sequence[Any], call: Callable[[int, Any], Awaitable[object]]
) -> tuple[float, float]:
    """`callers` concurrent workers sharing `items`; worker w calls call(w, item). (wall s, CPU s) of the batch."""
    queue = iter(items)

    async def worker(w: int) -> None:
        for item in queue:
            await call(w, item)

    cpu, began = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(callers)))
    return time.perf_counter() - began, time.process_time() - cpu


@dataclass
class Tally:
    """Wall and CPU time and operations of one (operation, side, callers) over the rounds."""

    walls: list[float] = field(default_factory=list)
    cpu: float = 0.0
    ops: int = 0

    def add(self, wall: float, cpu: float, ops: int) -> None:
        self.walls.append(wall / ops)
        self.cpu += cpu
        self.ops += ops

    @property
    def per_op(self) -> float:
        return statistics.fmean(self.walls)


SIGNATURE = """
SELECT r.id, r.state, r.current_step, r.step_activation, r.status_reason, r.due_at IS NOT NULL,
       (SELECT count(*) FROM tocsin.workflow_transitions t WHERE t.run_id = r.id),
       (SELECT string_agg(t.reason, ',' ORDER BY t.seq) FROM tocsin.workflow_transitions t WHERE t.run_id = r.id),
       (SELECT string_agg(d.status || ':' || d.activation, ',' ORDER BY d.activation)
          FROM tocsin.deliveries d WHERE d.run_id = r.id)
FROM tocsin.workflow_runs r WHERE r.id = any($1::uuid[])
"""


async def signatures(conn: asyncpg.Connection, run_ids: list[uuid.UUID]) -> Counter[tuple[Any, ...]]:
    rows = await conn.fetch(SIGNATURE, run_ids)
    assert len(rows) == len(run_ids), f"{len(run_ids) - len(rows)} runs missing"
    return Counter(tuple(row)[1:] for row in rows)


async def rounds(db: Database, target_url: str, args: argparse.Namespace) -> list[tuple[str, int, Tally, Tally]]:
    capture = Capture(db)
    definition_id = str((await register_definition(db, ESCALATION, now=T0)).id)
    replays: dict[str, Replay] = {}
    for key, operation in OPERATIONS.items():
        template = await operation.prepare(db)
        statements = await capture.of(operation.call(db, template))
        replays[key] = Replay(statements, template, frozenset({definition_id}))
    print_statements(replays, full=args.show_sql)

    tallies: dict[tuple[str, str, int], Tally] = defaultdict(Tally)
    floors = [FloorConnection(await floor_connection(target_url)) for _ in range(max(args.callers))]
    checker = await asyncpg.connect(target_url)
    try:
        for callers in args.callers:
            for number in range(-1, args.rounds):  # round -1 warms the pools and prepares the statements
                size = 2 * callers if number < 0 else args.ops
                if number >= 0:
                    # Fresh statistics before each measured round, as autovacuum keeps them on a live server. Without
                    # them a statement prepared while the tables were nearly empty keeps the generic plan it got then:
                    # RUN_BY_TRIGGER_KEY's picked an index on tenant_id alone and read every run of the tenant
                    # (create_run fell from 0.78 to 0.2 of the floor over a --full run; bench/RESULTS.md).
                    await checker.execute("ANALYZE")
                for key, operation in OPERATIONS.items():
                    mine = await prepare(db, operation, size)
                    theirs = await prepare(db, operation, size)
                    replay = replays[key]
                    planned = [replay.for_instance(i) for i in theirs]

                    written: list[uuid.UUID] = []

                    async def tocsin_call(
                        _w: int,
                        instance: Instance,
                        operation: Operation = operation,
                        written: list[uuid.UUID] = written,
                    ) -> None:
                        result, run_id = await operation.call(db, instance)
                        assert result == operation.result, (operation.name, result)
                        written.append(run_id)

                    async def floor_call(w: int, statements: list[Statement]) -> None:
                        await floors[w].replay(statements)

                    sides = [("tocsin", tocsin_call, mine), ("floor", floor_call, [s for s, _ in planned])]
                    for side, call, items in sides if number % 2 == 0 else sides[::-1]:
                        wall, cpu = await batch(callers, items, call)
                        if number >= 0:
                            tallies[(key, side, callers)].add(wall, cpu, len(items))
                    floor_ids = [replay.run_id(i, m) for i, (_, m) in zip(theirs, planned, strict=True)]
                    await check_rows(checker, operation, written, floor_ids)
    finally:
        await checker.close()
        for floor in floors:
            await floor.conn.close()
    return [
        (key, callers, tallies[(key, "tocsin", callers)], tallies[(key, "floor", callers)])
        for callers in args.callers
        for key in OPERATIONS
    ]


async def check_rows(
    conn: asyncpg.Connection, operation: Operation, tocsin_ids: list[uuid.UUID], floor_ids: list[uuid.UUID]
) -> None:
    """The floor wrote what tocsin wrote: every run ends in the same state with the same trail and deliveries."""
    expected = await signatures(conn, tocsin_ids)
    got = await signatures(conn, floor_ids)
    assert len(expected) == 1 and set(got) == set(expected), (operation.name, expected, got)


def print_statements(replays: dict[str, Replay], *, full: bool) -> None:
    print("\n## The statements each operation sends (as captured)\n")
    for key, replay in replays.items():
        print(f"{OPERATIONS[key].name}: {len(replay.statements)} statements (+ BEGIN/COMMIT)")
        for n, (sql, params) in enumerate(replay.statements, 1):
            text = " ".join(sql.split())
            if not full and len(text) > 110:
                text = text[:107] + "..."
            print(f"  {n}. [{len(params)} params] {text}")
    print()


def report(results: list[tuple[str, int, Tally, Tally]], args: argparse.Namespace) -> str:
    headers = [
        "operation",
        "callers",
        "tocsin ms/op",
        "floor ms/op",
        "ratio floor/tocsin",
        "ratio by round",
        "tocsin CPU ms/op",
        "floor CPU ms/op",
    ]
    lines = []
    for key, callers, mine, theirs in results:
        by_round = " ".join(f"{f / t:.2f}" for t, f in zip(mine.walls, theirs.walls, strict=True))
        lines.append(
            [
                OPERATIONS[key].name,
                str(callers),
                f"{mine.per_op * 1000:.2f}",
                f"{theirs.per_op * 1000:.2f}",
                f"{theirs.per_op / mine.per_op:.2f}",
                by_round,
                f"{mine.cpu / mine.ops * 1000:.2f}",
                f"{theirs.cpu / theirs.ops * 1000:.2f}",
            ]
        )
    print(f"\n## tocsin against the floor ({args.ops} operations per side, batch and round; {args.rounds} rounds)\n")
    print(table(headers, lines))
    print(
        "\n`ms/op`: wall time of a batch / its operations (with N callers: the inverse of throughput);"
        "\n`CPU ms/op`: this process's CPU time per operation (the floor's is asyncpg's alone)."
    )
    parts = []
    for key in OPERATIONS:
        ratios = [t.per_op / m.per_op for k, _, m, t in results if k == key]
        parts.append(f"{OPERATIONS[key].name} " + "/".join(f"{r:.2f}" for r in ratios))
    lowest = min(t.per_op / m.per_op for _, _, m, t in results)
    callers = "/".join(str(c) for c in args.callers)
    ratios = ", ".join(parts)
    return f"engine_floor: ratio floor/tocsin with {callers} callers (goal >= 0.6): {ratios}; lowest {lowest:.2f}"


# --- profiling -------------------------------------------------------------------------------------------------

PACKAGES = (
    ("sqlalchemy", "/sqlalchemy/"),
    ("pydantic", "/pydantic"),
    ("asyncpg", "/asyncpg/"),
    ("tocsin", "/tocsin/"),
    ("asyncio + selectors (the event loop)", "/asyncio/"),
    ("asyncio + selectors (the event loop)", "/selectors.py"),
    ("jinja2 (content rendering)", "/jinja2/"),
)


def package_of(filename: str, function: str) -> str:
    if filename == "~":
        # Built-ins: the wait for the socket is the one that matters.
        return (
            "waiting in epoll (Postgres, the network)"
            if "epoll" in function
            else "built-ins (called from any of these)"
        )
    for name, marker in PACKAGES:
        if marker in filename:
            return name
    return "other (stdlib: json, uuid, datetime, contextlib, ...)"


async def profile(db: Database, args: argparse.Namespace) -> str:
    operation = OPERATIONS[args.profile_op]
    await register_definition(db, ESCALATION, now=T0)
    for instance in await prepare(db, operation, 20):
        await operation.call(db, instance)  # warm: pool, statement caches, the definition cache
    instances = await prepare(db, operation, args.profile)
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    for instance in instances:
        await operation.call(db, instance)
    profiler.disable()
    wall = time.perf_counter() - began
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in raw.values())
    by_package: Counter[str] = Counter()
    for (filename, _, function), (_, _, tt, _, _) in raw.items():
        by_package[package_of(filename, function)] += tt
    n = args.profile
    print(f"\n## cProfile of {n} sequential {operation.name} calls: {wall / n * 1000:.2f} ms each under the profiler\n")
    rows = [[name, f"{tt / n * 1000:.3f}", f"{tt / total * 100:.0f}%"] for name, tt in by_package.most_common()]
    print(table(["own time (tottime) by package", "ms/op", "share"], rows))
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print("\n### The 25 functions with the most own time\n")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[-30 * 140 :])
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(r"tocsin|sqlalchemy", 30)
    print("\n### tocsin and SQLAlchemy functions by cumulative time\n")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))
    shares = ", ".join(f"{name.split(' ')[0]} {tt / total * 100:.0f}%" for name, tt in by_package.most_common(5))
    return f"engine_floor --profile: {n} x {operation.name}, {wall / n * 1000:.2f} ms each under cProfile; {shares}"


# --- main ---------------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    async with bench_database(args.database_url) as target:
        print(f"# engine_floor: {machine_facts(target)}")
        print(f"# command: {shlex.join(['.venv/bin/python', '-m', 'bench.engine_floor', *sys.argv[1:]])}")
        callers = max(args.callers)
        db = await Database.connect(target.url, pool_size=callers, max_overflow=0)
        try:
            if args.profile:
                summary = await profile(db, args)
            else:
                print(f"# ops={args.ops} per batch, rounds={args.rounds}, callers={args.callers}")
                summary = report(await rounds(db, target.url, args), args)
        finally:
            await db.close()
        print(f"\n# load average at the end: {loadavg()}")
        print(summary)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a superuser URL of a Postgres server (default: an embedded one)")
    parser.add_argument("--ops", type=int, help=f"operations per side, batch and round (default {QUICK['ops']})")
    parser.add_argument("--rounds", type=int, help=f"interleaved rounds (default {QUICK['rounds']})")
    parser.add_argument(
        "--callers",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[1, 4, 16],
        help="concurrent callers, comma-separated (default 1,4,16)",
    )
    parser.add_argument(
        "--full", action="store_true", help=f"full sizes: --ops {FULL['ops']} --rounds {FULL['rounds']}"
    )
    parser.add_argument("--show-sql", action="store_true", help="print every captured statement in full")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile N calls instead of the rounds")
    parser.add_argument("--profile-op", choices=sorted(OPERATIONS), default="advance")
    args = parser.parse_args(argv)
    sizes = FULL if args.full else QUICK
    args.ops = args.ops or sizes["ops"]
    args.rounds = args.rounds or sizes["rounds"]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
