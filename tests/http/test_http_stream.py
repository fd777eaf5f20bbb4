"""The inbox stream (SPEC 12.2) over a real HTTP connection to uvicorn: Server-Sent Events from LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
from inboxes import ME, SECRET, bearer, deliver, serve
from journeys import TENANT

from tocsin.db import Database
from tocsin.http import create_app

Event = tuple[str, dict[str, Any] | None]  # (event name, data); (":", None) for a comment


@asynccontextmanager
async def stream(url: str, **auth: Any) -> AsyncIterator[asyncio.Queue[Event]]:
    """Read the stream in the background; each event lands on the queue as it arrives."""
    events: asyncio.Queue[Event] = asyncio.Queue()

    async def read(response: httpx.Response) -> None:
        name = None
        async for line in response.aiter_lines():
            if line.startswith(":"):
                events.put_nowait((":", None))
            elif line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name is not None:
                events.put_nowait((name, json.loads(line.removeprefix("data: "))))
                name = None

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream("GET", "/v1/inbox/stream", **auth) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = asyncio.create_task(read(response))
            try:
                yield events
            finally:
                reader.cancel()


async def next_event(events: asyncio.Queue[Event], name: str) -> dict[str, Any]:
    """The next event called `name` (skipping heartbeats), within the poll loop's bound."""
    while True:
        got, data = await asyncio.wait_for(events.get(), timeout=20)
        if got == name:
            assert data is not None
            return data


async def test_a_new_item_and_a_read_reach_the_stream(served: str, db: Database, t0: datetime) -> None:
    await deliver(db, now=t0)

    async with stream(served, headers=bearer()) as events:
        assert await next_event(events, "counts") == {"unread_count": 1, "unseen_count": 1}
        await deliver(db, now=t0, recipient="user:7")  # someone else's: not on this stream
        item_id = await deliver(db, now=t0)

        assert await next_event(events, "item") == {"id": str(item_id), "unread_count": 2, "unseen_count": 2}
        async with httpx.AsyncClient(base_url=served) as http:
            assert (await http.post(f"/v1/inbox/{item_id}/read", headers=bearer())).status_code == 200
        assert await next_event(events, "counts") == {"unread_count": 1, "unseen_count": 2}
        async with httpx.AsyncClient(base_url=served) as http:
            assert (await http.post("/v1/inbox/read-all", headers=bearer())).json() == {"stamped": 1}
        assert await next_event(events, "counts") == {"unread_count": 0, "unseen_count": 2}


async def test_the_stream_takes_its_token_from_the_query(served: str, db: Database, t0: datetime) -> None:
    async with stream(served, params={"token": bearer()["Authorization"].removeprefix("Bearer ")}) as events:
        assert await next_event(events, "counts") == {"unread_count": 0, "unseen_count": 0}
        item_id = await deliver(db, now=t0)
        assert (await next_event(events, "item"))["id"] == str(item_id)


async def test_a_quiet_stream_sends_heartbeats(db: Database, t0: datetime) -> None:
    async with serve(create_app(db, secret=SECRET, heartbeat=0.05)) as url, stream(url, headers=bearer()) as events:
        await next_event(events, "counts")
        assert await asyncio.wait_for(events.get(), timeout=20) == (":", None)


async def test_several_streams_share_one_listener_and_each_gets_its_own_recipients_items(
    served: str, db: Database, t0: datetime
) -> None:
    async with (
        stream(served, headers=bearer()) as mine,
        stream(served, headers=bearer()) as mine_again,
        stream(served, headers=bearer(recipient="user:7")) as theirs,
    ):
        for events in (mine, mine_again, theirs):
            await next_event(events, "counts")
        their_item = await deliver(db, now=t0, recipient="user:7", tenant_id=TENANT)
        my_item = await deliver(db, now=t0, recipient=ME)
        assert (await next_event(mine, "item"))["id"] == str(my_item)
        assert (await next_event(mine_again, "item"))["id"] == str(my_item)
        assert (await next_event(theirs, "item"))["id"] == str(their_item)
        assert mine.empty() and theirs.empty()
