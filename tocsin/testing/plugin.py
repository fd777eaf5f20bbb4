"""The pytest plugin of tocsin.testing (entry point `pytest11`), with the fixtures of SPEC 13:

- `tocsin_db`: a `tocsin.Database` on a fresh, migrated database (`tocsin_db_url` is its URL);
- `journeys`: a time-skipping Temporal server, a worker with RecordingChannels and a `Tocsin`
  (tocsin.testing.Journeys); `tocsin_temporal` is that server alone.

The Postgres server is started once per session (or taken from TOCSIN_TEST_DATABASE_URL); the migrated
template once per session; everything else per test. Async fixtures follow the project's pytest-asyncio
loop scope; the session-wide setup runs on a loop of its own, so any loop scope works.

pytest loads this module wherever tocsin is installed, with or without the `testing` extra: it imports
nothing heavy until a fixture is used, and says which extra is missing when one is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from importlib.util import find_spec
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from temporalio.testing import WorkflowEnvironment

    from tocsin.db import Database
    from tocsin.testing.journeys import Journeys

MISSING_EXTRA = "tocsin's pytest fixtures need the testing extra: pip install 'tocsin[testing]'"


@pytest.fixture(scope="session")
def tocsin_postgres_url() -> Iterator[str]:
    """A superuser URL of the session's Postgres server (TOCSIN_TEST_DATABASE_URL, or an embedded one)."""
    from tocsin.testing.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def tocsin_template_db(tocsin_postgres_url: str) -> Iterator[str]:
    """The name of the session's migrated template database."""
    from tocsin.testing.postgres import create_template, drop_database, run_apart

    name = run_apart(create_template(tocsin_postgres_url))
    yield name
    run_apart(drop_database(tocsin_postgres_url, name))


if find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def tocsin_db_url(tocsin_postgres_url: str, tocsin_template_db: str) -> AsyncIterator[str]:
        """The URL of a new database, a copy of the migrated template, dropped after the test."""
        from tocsin.testing.postgres import fresh_database

        async with fresh_database(tocsin_postgres_url, tocsin_template_db) as url:
            yield url

    @pytest_asyncio.fixture
    async def tocsin_db(tocsin_db_url: str) -> AsyncIterator[Database]:
        """A `tocsin.Database` on a fresh, migrated database of its own."""
        from tocsin.db import Database

        async with await Database.connect(tocsin_db_url) as db:
            yield db

    @pytest_asyncio.fixture
    async def tocsin_temporal() -> AsyncIterator[WorkflowEnvironment]:
        """A time-skipping Temporal test server of the test's own, with tocsin's search attributes."""
        from tocsin.testing.journeys import start_time_skipping_server

        env = await start_time_skipping_server()
        try:
            yield env
        finally:
            await env.shutdown()

    @pytest_asyncio.fixture
    async def journeys(tocsin_db: Database, tocsin_temporal: WorkflowEnvironment) -> AsyncIterator[Journeys]:
        """Journeys on `tocsin_temporal` and `tocsin_db`: `register`, `tocsin`, `channels`, `run_to_end`,
        `skip` (tocsin.testing.Journeys)."""
        from tocsin.testing.journeys import Journeys

        async with Journeys.open(tocsin_db, tocsin_temporal) as opened:
            yield opened

else:  # without the testing extra: each fixture fails saying so

    def _needs_the_extra() -> None:
        pytest.fail(MISSING_EXTRA, pytrace=False)

    tocsin_db_url = pytest.fixture(name="tocsin_db_url")(_needs_the_extra)
    tocsin_db = pytest.fixture(name="tocsin_db")(_needs_the_extra)
    tocsin_temporal = pytest.fixture(name="tocsin_temporal")(_needs_the_extra)
    journeys = pytest.fixture(name="journeys")(_needs_the_extra)
