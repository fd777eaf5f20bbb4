"""Shared fixtures, on the tocsin.testing plugin (SPEC 13) that tocsin ships to its users.

The plugin brings the Postgres of the session (TOCSIN_TEST_DATABASE_URL when set, CI sets it to the
machine's PostgreSQL; else an embedded one), a fresh migrated database per test (`tocsin_db_url`,
`tocsin_db`), the time-skipping Temporal server (`tocsin_temporal`) and `journeys`. The names below are
the suite's own for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from temporalio.testing import WorkflowEnvironment

from tocsin.db import Database

pytest_plugins = ["peers"]


@pytest.fixture
def fresh_db_url(tocsin_db_url: str) -> str:
    """The URL of a new database, a copy of the migrated template, dropped after the test."""
    return tocsin_db_url


@pytest.fixture
async def db(tocsin_db_url: str) -> AsyncIterator[Database]:
    # A larger pool than the plugin's tocsin_db: the concurrency tests run 20 callers at once.
    database = await Database.connect(tocsin_db_url, pool_size=25, max_overflow=5)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def time_env(tocsin_temporal: WorkflowEnvironment) -> WorkflowEnvironment:
    """A time-skipping server of the test's own, for tests that build their own clients and workers."""
    return tocsin_temporal


@pytest.fixture
def t0() -> datetime:
    """A fixed engine clock: tests pass `now` explicitly, as the engine demands."""
    return datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
