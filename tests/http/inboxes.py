"""Helpers of the HTTP tests: tokens, inbox items made the way the worker makes them, whole-database snapshots,
and serving an app with uvicorn on a free port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from journeys import TENANT, delivery_at, journey, rows, snapshot, start, step

from tocsin.channels import InAppChannel
from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine.dispatch import dispatch_delivery
from tocsin.http import issue_token
from tocsin.http.serve import serve_app

SECRET = "inbox-test-secret"
ME = "user:42"
# A journey of one in-app step: each run puts one item in its recipient's inbox.
NOTE = journey("note", step("note", "in_app", content={"title": "{{ actor }} wrote", "body": "{{ excerpt }}"}))


def bearer(tenant_id: str = TENANT, recipient: str = ME, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, tenant_id=tenant_id, recipient=recipient, **kw)}"}


async def deliver(
    db: Database,
    *,
    now: datetime,
    spec: dict[str, Any] = NOTE,
    tenant_id: str = TENANT,
    recipient: str = ME,
    excerpt: str = "hello",
) -> uuid.UUID:
    """Start a run of `spec` and send its first (in-app) delivery the way the worker does: one inbox item."""
    run = await start(
        db, spec, now=now, tenant_id=tenant_id, recipient=recipient, data={"actor": "Ada", "excerpt": excerpt}
    )
    delivery_id: uuid.UUID = (await delivery_at(db, run.id, 1))["id"]
    delivered = await dispatch_delivery(db, delivery_id, channels={"in_app": InAppChannel()}, now=now)
    assert delivered.status == "succeeded"
    return delivery_id


async def everything(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row tocsin keeps, the new tables included: equal before and after means nothing was written."""
    return {
        **await snapshot(db),
        "preferences": await rows(db, t.preferences, order_by="updated_at"),
        "recipients": await rows(db, t.recipients, order_by="recipient"),
    }


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` on a free port of 127.0.0.1; yields its base URL without the trailing slash."""
    async with serve_app(app) as url:
        yield url.rstrip("/")
