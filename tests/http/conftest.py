"""The inbox over HTTP against a real Postgres: the app through httpx's ASGI transport (no lifespan events,
as a mounted app gets), or served by uvicorn on a free port for the stream and the browser."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from inboxes import SECRET, serve

from tocsin.db import Database
from tocsin.http import create_app


@pytest.fixture
def app(db: Database) -> FastAPI:
    return create_app(db, secret=SECRET)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://inbox.test") as http:
        yield http


@pytest.fixture
async def served(app: FastAPI) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url
