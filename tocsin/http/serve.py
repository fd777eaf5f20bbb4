"""Serving the inbox app on its own port, for `tocsin dev` and `tocsin demo`, and the feed links they print."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta

import uvicorn
from starlette.types import ASGIApp
from temporalio.client import Client

from tocsin.core.contracts import DEFAULT_TASK_QUEUE
from tocsin.db import Database
from tocsin.http.app import create_app
from tocsin.http.tokens import issue_token


@dataclass(frozen=True)
class InboxServer:
    url: str  # e.g. http://127.0.0.1:8234/
    secret: str

    def token(self, *, tenant_id: str, recipient: str, ttl: float | timedelta = timedelta(days=1)) -> str:
        return issue_token(self.secret, tenant_id=tenant_id, recipient=recipient, ttl=ttl)

    def feed_url(self, *, tenant_id: str, recipient: str, ttl: float | timedelta = timedelta(days=1)) -> str:
        """The feed page with a token for one recipient, in the fragment (never sent to the server)."""
        return f"{self.url}#token={self.token(tenant_id=tenant_id, recipient=recipient, ttl=ttl)}"


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside a process that owns its signals: left to itself, uvicorn takes SIGINT and SIGTERM, and
    Ctrl-C would stop only the inbox while `tocsin demo` or the dev stack's worker ran on."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def serve_app(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn in this event loop until the block ends; yields its base URL (port 0:
    a free one). The socket is bound here, so a port in use is an OSError, not uvicorn's exit."""
    sock = socket.create_server((host, port))
    server = EmbeddedServer(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def serve_inbox(
    db: Database,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    secret: str | None = None,
    temporal: Client | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> AsyncIterator[InboxServer]:
    """`tocsin dev`'s inbox: the app on its own port. Without a secret, a random one is made for this process
    (the tokens it prints die with it). With the Temporal client, a read wakes its run's workflow at once."""
    secret = secret or secrets.token_urlsafe(32)
    app = create_app(db, secret=secret, temporal=temporal, task_queue=task_queue)
    async with serve_app(app, host=host, port=port) as url:
        yield InboxServer(url=url, secret=secret)
