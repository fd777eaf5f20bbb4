"""Registering and finding journey definitions (SPEC 2.1): immutable per (key, version)."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Any

from tocsin.core.definitions import WorkflowDefinition, load_definition
from tocsin.core.errors import DefinitionConflict
from tocsin.core.models import DefinitionRecord
from tocsin.db import Database, store
from tocsin.db import queries as q

DefinitionSource = dict[str, Any] | WorkflowDefinition | str | os.PathLike[str]


async def register_definition(db: Database, source: DefinitionSource, *, now: datetime) -> DefinitionRecord:
    """Validate and store a definition. The same (key, version) and checksum again returns the stored row;
    a different checksum raises DefinitionConflict. Invalid definitions raise DefinitionError, writing nothing.
    """
    definition = load_definition(source)
    checksum = definition.checksum()
    async with db.transaction() as conn:
        await store.execute(
            conn,
            q.INSERT_DEFINITION,
            id=uuid.uuid4(),
            key=definition.key,
            version=definition.version,
            spec=definition.model_dump(mode="json"),
            checksum=checksum,
            now=now,
        )
        stored = await store.fetch_one(
            conn, DefinitionRecord, q.DEFINITION_BY_KEY_VERSION, key=definition.key, version=definition.version
        )
        if stored.checksum != checksum:
            raise DefinitionConflict(
                f"definition {definition.key!r} version {definition.version} is already registered with "
                "different content; definitions are immutable, register a new version"
            )
        return stored


async def list_definitions(db: Database) -> list[DefinitionRecord]:
    async with db.transaction() as conn:
        return await store.fetch_all(conn, DefinitionRecord, q.ALL_DEFINITIONS)
