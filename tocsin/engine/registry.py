"""Registering and finding journey definitions (SPEC 2.1): immutable per (key, version)."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from tocsin.core.definitions import WorkflowDefinition, load_definition
from tocsin.core.errors import DefinitionConflict
from tocsin.core.models import DefinitionRecord
from tocsin.db import Database, store
from tocsin.db import tables as t

W = t.workflow_definitions

DefinitionSource = dict[str, Any] | WorkflowDefinition | str | os.PathLike[str]


async def register_definition(db: Database, source: DefinitionSource, *, now: datetime) -> DefinitionRecord:
    """Validate and store a definition. The same (key, version) and checksum again returns the stored row;
    a different checksum raises DefinitionConflict. Invalid definitions raise DefinitionError, writing nothing.
    """
    definition = load_definition(source)
    checksum = definition.checksum()
    async with db.transaction() as conn:
        await conn.execute(
            insert(W)
            .values(
                id=uuid.uuid4(),
                key=definition.key,
                version=definition.version,
                spec=definition.model_dump(mode="json"),
                checksum=checksum,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[W.c.key, W.c.version])
        )
        stored = await store.fetch_one(
            conn, DefinitionRecord, select(W).where(W.c.key == definition.key, W.c.version == definition.version)
        )
        if stored.checksum != checksum:
            raise DefinitionConflict(
                f"definition {definition.key!r} version {definition.version} is already registered with "
                "different content; definitions are immutable, register a new version"
            )
        return stored


async def list_definitions(db: Database) -> list[DefinitionRecord]:
    async with db.transaction() as conn:
        return await store.fetch_all(conn, DefinitionRecord, select(W).order_by(W.c.key, W.c.version))
