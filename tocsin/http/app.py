"""`create_app`: the inbox over HTTP (SPEC 12.2), an ASGI application a host mounts under any prefix."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, and `Who` is local.
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from temporalio.client import Client

from tocsin.core import contracts as c
from tocsin.core.errors import InvalidRequest
from tocsin.core.limits import printable
from tocsin.core.preferences import Preferences
from tocsin.db import Database, store
from tocsin.engine import preferences as prefs
from tocsin.http import feed
from tocsin.http.stream import InboxHub, events
from tocsin.http.tokens import Authenticate, Principal, authenticator
from tocsin.temporal.starter import notify_journey

log = logging.getLogger("tocsin.http")
STATIC = Path(__file__).parent / "static"
HEARTBEAT_SECONDS = 15.0

# A scope name: any non-blank string (whitespace only is a mistake, not "any").
Scope = Annotated[str, Field(min_length=1, pattern=r"\S")] | None


class PreferenceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_key: Scope = None
    channel: Scope = None
    opted_in: StrictBool


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    db: Database,
    *,
    secret: str | bytes | None = None,
    authenticate: Authenticate | None = None,
    temporal: Client | None = None,
    task_queue: str = c.DEFAULT_TASK_QUEUE,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> FastAPI:
    """The inbox API, its live stream and the feed page. Exactly one of `secret` (tokens from `issue_token`)
    or `authenticate` (the host's own: request -> (tenant_id, recipient) or None) is required. With a
    Temporal client, a run that a read stops has its workflow woken at once (otherwise at its next timer)."""
    principal = authenticator(secret, authenticate)
    hub = InboxHub(db)
    app = FastAPI(
        title="tocsin inbox",
        version="1",
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    Who = Annotated[Principal, Depends(principal)]

    @app.exception_handler(RequestValidationError)
    async def unprocessable(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and what, never the input echoed back: it may be text JSON cannot encode (a lone surrogate),
        # which would turn a 422 into a 500.
        errors = [
            {
                "loc": [printable(part) if isinstance(part, str) else part for part in e["loc"]],
                "msg": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(feed.ItemNotFound)
    async def not_found(request: Request, exc: feed.ItemNotFound) -> JSONResponse:
        return JSONResponse({"detail": "not found"}, status_code=404)

    @app.exception_handler(feed.BadCursor)
    async def bad_cursor(request: Request, exc: feed.BadCursor) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"loc": ["query", "cursor"], "msg": str(exc), "type": "value_error"}]}, status_code=422
        )

    @app.exception_handler(InvalidRequest)
    async def invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]}, status_code=422)

    async def wake(who: Principal, run_ids: list[uuid.UUID]) -> None:
        if temporal is None:
            return
        for run_id in run_ids:
            try:
                async with db.transaction() as conn:
                    run = await store.get_run(conn, run_id, tenant_id=who.tenant_id)
                await notify_journey(temporal, run, task_queue=task_queue)
            except Exception:  # the read is recorded and the run stopped; its workflow notices at its timer
                log.warning("could not wake the workflow of run %s", run_id, exc_info=True)

    async def stamp(who: Principal, item_id: str, kind: Literal["read_at", "seen_at"]) -> feed.InboxItem:
        item, stopped = await feed.receipt(db, who, parse_id(item_id), kind, now=utcnow())
        await wake(who, stopped)
        return item

    @app.get("/v1/inbox", response_model=feed.InboxPage)
    async def list_inbox(
        who: Who,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: str | None = None,
        unread: bool | None = None,
        archived: bool = False,
    ) -> feed.InboxPage:
        return await feed.page(db, who, limit=limit, cursor=cursor, unread=unread, archived=archived)

    @app.get("/v1/inbox/stream", response_class=StreamingResponse)
    async def stream(who: Who) -> StreamingResponse:
        return StreamingResponse(
            events(hub, who, heartbeat=heartbeat),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/inbox/read-all", response_model=feed.Stamped)
    async def read_all(who: Who) -> feed.Stamped:
        stamped, stopped = await feed.read_all(db, who, now=utcnow())
        await wake(who, stopped)
        return feed.Stamped(stamped=stamped)

    @app.post("/v1/inbox/{item_id}/read", response_model=feed.InboxItem)
    async def read(who: Who, item_id: str) -> feed.InboxItem:
        return await stamp(who, item_id, "read_at")

    @app.post("/v1/inbox/{item_id}/seen", response_model=feed.InboxItem)
    async def seen(who: Who, item_id: str) -> feed.InboxItem:
        return await stamp(who, item_id, "seen_at")

    @app.post("/v1/inbox/{item_id}/archive", response_model=feed.InboxItem)
    async def archive(who: Who, item_id: str) -> feed.InboxItem:
        return await feed.archive(db, who, parse_id(item_id), now=utcnow())

    @app.get("/v1/preferences", response_model=Preferences)
    async def get_preferences(who: Who) -> Preferences:
        return await prefs.preferences(db, tenant_id=who.tenant_id, recipient=who.recipient)

    @app.put("/v1/preferences", response_model=Preferences)
    async def put_preference(who: Who, update: PreferenceUpdate) -> Preferences:
        return await prefs.set_preference(
            db,
            tenant_id=who.tenant_id,
            recipient=who.recipient,
            opted_in=update.opted_in,
            workflow_key=update.workflow_key,
            channel=update.channel,
            now=utcnow(),
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        # Relative links resolve under whatever prefix the host mounted the app at.
        base = request.scope.get("root_path", "").rstrip("/") + "/"
        return HTMLResponse(INDEX.replace("{{base}}", base))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def parse_id(item_id: str) -> uuid.UUID:
    """An id that is not a UUID is an item that does not exist (404), not bad input."""
    try:
        return uuid.UUID(item_id)
    except ValueError as exc:
        raise feed.ItemNotFound(item_id) from exc


INDEX = (STATIC / "index.html").read_text(encoding="utf-8")
