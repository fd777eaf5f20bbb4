"""`Database`: the handle every engine function takes: an async connection pool, migrations, a definition cache."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tocsin.core.definitions import WorkflowDefinition
from tocsin.db import queries as q

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed 64-bit number: serializes concurrent `migrate()` calls from several workers.
MIGRATION_LOCK = 0x70C5_1E00


def async_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (as libpq tools print them) and use the asyncpg driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername != "postgresql+asyncpg":
        raise ValueError(f"tocsin needs a PostgreSQL URL (postgresql://...), got {parsed.drivername!r}")
    return parsed.render_as_string(hide_password=False)


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


class Database:
    """A pool of connections to the tocsin schema; safe to share between many concurrent tasks."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # Definitions are immutable once registered, so a parsed copy never goes stale.
        self._definitions: dict[uuid.UUID, WorkflowDefinition] = {}

    @classmethod
    async def connect(cls, url: str, *, pool_size: int = 10, max_overflow: int = 10) -> Database:
        engine = create_async_engine(async_url(url), pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)
        db = cls(engine)
        try:
            async with engine.connect() as conn:
                await conn.execute(q.PING)
        except BaseException:
            await engine.dispose()
            raise
        return db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self.engine.begin() as conn:
            yield conn

    async def migrate(self, revision: str = "head") -> None:
        await self._alembic(command.upgrade, revision)

    async def downgrade(self, revision: str = "base") -> None:
        await self._alembic(command.downgrade, revision)

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            if not await conn.scalar(q.VERSION_TABLE_EXISTS):
                return None
            revision: str | None = await conn.scalar(q.CURRENT_REVISION)
            return revision

    async def _alembic(self, action: object, revision: str) -> None:
        def run(sync_conn: Connection) -> None:
            sync_conn.execute(q.TAKE_MIGRATION_LOCK, {"key": MIGRATION_LOCK})
            action(alembic_config(sync_conn), revision)  # type: ignore[operator]

        async with self.engine.begin() as conn:
            await conn.run_sync(run)

    async def definition(self, definition_id: uuid.UUID, conn: AsyncConnection | None = None) -> WorkflowDefinition:
        """A registered definition, parsed once per process; read on `conn` (or a connection of its own)."""
        cached = self._definitions.get(definition_id)
        if cached is None:
            params = {"definition_id": definition_id}
            if conn is not None:
                spec = await conn.scalar(q.DEFINITION_SPEC, params)
            else:
                async with self.engine.connect() as own:
                    spec = await own.scalar(q.DEFINITION_SPEC, params)
            cached = WorkflowDefinition.model_validate(spec)
            self._definitions[definition_id] = cached
        return cached

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
